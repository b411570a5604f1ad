"""Restoring files: inputs -> measurements -> solver -> restored PNGs, records and metric tables.

A `FolderRestore` checks a run, groups its pending inputs into batches and writes each image's
files and record as its batch comes back. Who solves a batch is a `BatchSolver`: here, in this
process, an `ilo.Restorer` (`LocalBatches`); on a Ray cluster, a pool of actors holding one
each (`ilo.engine.fleet.ray_batch`). Either way the same files are written by this process, so
a run resumes, and an output is never half-written, whoever solved it. The inputs are read by
`ilo.engine.inputs.measurements`, each image's files are written by
`ilo.engine.runs.result_files`, and the output folder is an `ilo.engine.runs.run_dir.RunDir`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ilo.engine.inputs.image_files import file_sha256
from ilo.engine.inputs.measurements import InputFiles, InputSpec, MeasurementReader, Prepared
from ilo.engine.runs.progress import Progress
from ilo.engine.api.restorer import BatchResult, Restorer
from ilo.engine.runs.result_files import ResultWriter, output_intact
from ilo.engine.runs.run_dir import RunDir, check_output_layout
from ilo.engine.problems.losses import LPIPS
from ilo.engine.solver.ilo_solver import radius_of_round
from ilo.errors import IloError, InputError


@dataclass
class RestoreOptions:
    """Where a folder run finds its masks and ground truths, and what it writes. The task, how
    other-sized pictures are fitted and the size limit are the `Restorer`'s settings, and how
    the inputs are solved is the `Restorer`'s too."""

    files: InputFiles = field(default_factory=InputFiles)
    batch_size: int = 8
    save_degraded: bool = False
    save_strip: bool = False
    save_loss_plot: bool = False  # <stem>.loss.png, for methods that optimise (not the one-pass ones)
    overwrite: bool = False
    lpips_metric: LPIPS | None = None
    show_progress: bool = True
    extra_settings: dict = field(default_factory=dict)  # e.g. how many workers, for the record
    notes: list[str] = field(default_factory=list)  # shown once every input has been checked

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")


# Prepared measurements kept between the up-front check and the solve, so small inputs are read
# once; beyond this the rest are read again when their batch comes (each read is hashed anyway).
PREPARED_CACHE_BYTES = 256 << 20


@dataclass
class Batch:
    """Inputs solved together: their files, in run order, and their measurements once read."""

    index: int
    paths: list[Path]
    prepared: list[Prepared] | None = None


class BatchSolver(Protocol):
    """Solves a run's batches, yielding each with its result as it finishes (in any order)."""

    backend: str  # what solved them, for the records

    def open(self) -> None:
        """Get ready (build the engine, join the cluster) once the inputs are checked and before
        anything is written, so a failure here leaves the output folder as it was."""

    def solve_all(self, batches: list[Batch], note) -> Iterator[tuple[Batch, BatchResult]]: ...

    def close(self) -> None:
        """Release what `open` took; called whatever happened."""


class LocalBatches:
    """Every batch in this process, one after the other, by one `Restorer`."""

    def __init__(self, restorer: Restorer, reader: MeasurementReader):
        self.restorer, self.reader = restorer, reader
        self.backend = "not loaded"

    def open(self) -> None:
        self.restorer.warm(trial=False)  # the first batch exports what it needs
        self.backend = self.restorer.backend_name

    def close(self) -> None:
        pass

    def solve_all(self, batches: list[Batch], note) -> Iterator[tuple[Batch, BatchResult]]:
        def report(k, step, steps, measured):
            note(f"round {k} step {step + 1}/{steps} loss {float(measured.mean()):.3g}")

        for batch in batches:
            prepared = batch.prepared or [self.reader.prepare(p) for p in batch.paths]
            batch.prepared = prepared
            yield batch, self.restorer.solve(prepared, progress=report, note=note)


class FolderRestore:
    """Turn input files into restored outputs in one folder, resumably."""

    def __init__(self, restorer: Restorer, options: RestoreOptions, out: Path):
        self.restorer, self.options, self.res = restorer, options, restorer.resolution
        self.run_dir = RunDir(out)
        self.task = restorer.task
        self.spec = InputSpec.for_settings(restorer.settings, options.files)
        self.reader = MeasurementReader(self.spec, self.res)
        # BM3D and the encoder alone have no loss curve: their images are finished without a plot
        self.plots_skipped = options.save_loss_plot and not restorer.method.optimises
        self.writer = ResultWriter(
            self.run_dir.root,
            self.task,
            self.res,
            options.save_degraded,
            options.save_strip,
            options.lpips_metric,
            options.save_loss_plot and not self.plots_skipped,
        )

    def prepare(self, path: Path) -> Prepared:
        return self.reader.prepare(path)

    def outputs(self, stem: str) -> list[Path]:
        return self.writer.paths(stem)

    def settings(self) -> dict:
        o, described = self.options, self.restorer.describe()
        return {
            "task": described["task"],
            "method": described["method"],
            "solver": described["solver"],
            "fit": self.spec.fit,
            "clean_inputs": o.files.clean_inputs,
            "seed": described["seed"],
            # mask files are matched by content, per image (each record's sources), not by path
            "mask_files": o.files.has_masks,
            "model": described["model"],
            **o.extra_settings,
            # a learned start changes every result; named only where there is one, so a folder
            # begun from random starts resumes with --encoder none
            **({"encoder": described["encoder"]} if "encoder" in described else {}),
        }

    def run(self, inputs: list[Path], solver: BatchSolver | None = None) -> dict:
        """Restore every input not already finished; returns a summary.

        Before anything is written: the settings, the output folder and every input of this
        run (read, checked and hashed) are checked. An image counts as finished only if its
        record, its outputs and the hashes of its input files (image, mask, ground truth) all
        still match; an edited or replaced input is restored again."""
        o, settings = self.options, self.settings()
        sources = {p.stem: self.reader.sources(p) for p in inputs}
        self.run_dir.check_usable()
        check_output_layout(
            self.run_dir.root,
            {p.stem: [*self.outputs(p.stem), self.run_dir.record_path(p.stem)] for p in inputs},
            {stem: list(files.values()) for stem, files in sources.items()},
            self.run_dir.fixed_files(),
        )
        with self.run_dir.open():
            self.run_dir.check(settings, o.overwrite)
            written = [p for i in inputs for p in [*self.outputs(i.stem), self.run_dir.record_path(i.stem)]]
            self.run_dir.check_foreign([*written, *self.run_dir.fixed_files()], o.overwrite)
            records = {} if o.overwrite else self.run_dir.records()
            pending, notes = self._pending(inputs, sources, records)
            prepared = self._check_inputs(pending)
            if self.plots_skipped:
                notes.append(
                    f"no loss plots: {self.restorer.method.label} records no loss curve (only the generator's search does)"
                )
            for note in [*o.notes, *notes]:
                print(f"ilo: note: {note}", file=sys.stderr)
            solver = solver or LocalBatches(self.restorer, self.reader)
            if pending:
                solver.open()
            try:
                names = {p.name for p in written}
                self.run_dir.start(settings, o.overwrite, outputs=names)
                return self._restore_all(solver, pending, prepared, records, skipped=len(inputs) - len(pending))
            finally:
                if pending:
                    solver.close()

    def _pending(self, inputs: list[Path], sources: dict, records: dict) -> tuple[list[Path], list[str]]:
        pending, changed, unhashed, damaged = [], [], [], []
        for path in inputs:
            record = records.get(path.stem)
            if record is None or not self.run_dir.finished(path.stem, self.outputs(path.stem)):
                pending.append(path)
            elif not all(output_intact(p) for p in self.outputs(path.stem)):
                pending.append(path)
                damaged.append(path.stem)
            elif "sources" not in record:  # written before records held input hashes
                pending.append(path)
                unhashed.append(path.stem)
            elif record["sources"] != {role: file_sha256(f) for role, f in sources[path.stem].items()}:
                pending.append(path)
                changed.append(path.stem)
        notes = []
        if changed:
            notes.append(
                f"{len(changed)} finished image(s) have other input files than when they were restored "
                f"(image, mask or ground truth), so they are restored again: {_some(changed)}"
            )
        if damaged:
            notes.append(
                f"{len(damaged)} finished image(s) have outputs that no longer read back whole (cut short or "
                f"changed since they were written), so they are restored again: {_some(damaged)}"
            )
        if unhashed:
            notes.append(
                f"{len(unhashed)} finished image(s) have records from an older ilo, without the hashes that "
                f"tell whether their inputs changed, so they are restored again: {_some(unhashed)}"
            )
        return pending, notes

    def _check_inputs(self, pending: list[Path]) -> dict[Path, Prepared]:
        """Read and check every pending input before any work; keep what fits the cache."""
        kept, size = {}, 0
        for path in pending:
            item = self.prepare(path)
            size += item.nbytes()
            if size <= PREPARED_CACHE_BYTES:
                kept[path] = item
        return kept

    def _restore_all(
        self, solver: BatchSolver, pending: list[Path], prepared: dict, records: dict, skipped: int
    ) -> dict:
        o = self.options
        progress = Progress(len(pending), "restore", enabled=o.show_progress)
        finished: list[str] = []  # this run's, in order (a batch that fails may have finished some)
        batches = [
            Batch(i, pending[start : start + o.batch_size])
            for i, start in enumerate(range(0, len(pending), o.batch_size))
        ]
        for batch in batches:  # what the up-front check kept; the rest is read when its batch comes
            kept = [prepared.pop(p, None) for p in batch.paths]
            batch.prepared = kept if all(k is not None for k in kept) else None  # type: ignore[assignment]
        try:
            for batch, result in solver.solve_all(batches, progress.note):
                self._write_batch(batch, result, solver.backend, records, finished)
                batch.prepared = None  # written: its measurements need not stay in memory
                self.run_dir.write_tables(_in_file_order(records))  # a killed run still leaves its tables
                progress.advance(len(batch.paths))
        except BaseException as e:
            progress.close()  # the bar's line ends before the error is printed
            if records:
                self.run_dir.write_tables(_in_file_order(records))
            if isinstance(e, IloError):
                raise IloError(
                    f"{e}; {len(finished)} image(s) of this run finished and are kept in {self.run_dir.root}, "
                    "rerun to resume"
                ) from e
            raise
        if not pending and records:
            self.run_dir.write_tables(_in_file_order(records))
        return {"restored": len(finished), "skipped": skipped, "records": len(records)}

    def _write_batch(self, batch: Batch, result: BatchResult, backend: str, records: dict, finished: list[str]) -> None:
        """Each image's files, then its record (which marks it finished)."""
        prepared = batch.prepared or [self.prepare(p) for p in batch.paths]
        size = len(prepared)
        for i, (b, path) in enumerate(zip(prepared, batch.paths)):
            record = {
                "name": b.stem,
                "input": str(path),
                "output": f"{b.stem}.png",
                "task": self.task.task,
                "method": self.restorer.settings.method,
                "measurement_mse": result.measurement_mse[i],
                "best_round": result.best_round[i],
                "seconds": result.seconds / size,
                "batch_size": size,
                "backend": backend,
                "device": self.restorer.settings.device,
                "sources": b.sources,
            }
            if result.held_out_loss is not None:  # what chose this image's iterate: its round, radius, held-out loss
                config = self.restorer.settings.config
                best = result.best_round[i]
                radius = radius_of_round(config, best) if config is not None and best is not None else None
                record.update(held_out_loss=result.held_out_loss[i], l1_radius=radius)
            if result.chosen is not None:  # the choose method: what it returned, and what the candidates were judged
                record["chosen"] = result.chosen[i]
                if result.estimated_error is not None:
                    record["estimated_error"] = result.estimated_error[i]
                if result.choice_note is not None:
                    record["choice_note"] = result.choice_note
            if result.member_rounds is not None:  # an ensemble: what each member chose (best_round is member 0's)
                record["member_rounds"] = result.member_rounds[i]
                if result.member_held_out_loss is not None:
                    record["member_held_out_loss"] = result.member_held_out_loss[i]
            image = result.images[i : i + 1]
            if b.truth is not None:
                record.update(self.writer.metrics(image, b.truth, b.mask))
            self.writer.write(b, image, None if result.loss_curves is None else result.loss_curves[i])
            records[b.stem] = self.run_dir.write_record(b.stem, record)
            finished.append(b.stem)


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _in_file_order(records: dict[str, dict]) -> list[dict]:
    return [records[stem] for stem in sorted(records, key=lambda stem: f"{stem}.json")]
