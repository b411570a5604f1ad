"""Restoring files: inputs -> measurements -> solver -> restored PNGs, records and metric tables.

The `Restorer` batches and solves; the inputs are read by `ilo.engine.app.measurements`, each
image's files are written by `ilo.engine.app.result_files`, and the output folder is an
`ilo.engine.app.run_dir.RunDir`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ilo.choices import METHODS  # noqa: F401  (re-exported)
from ilo.engine.app.image_files import file_sha256
from ilo.engine.app.measurements import InputSpec, MeasurementReader, Prepared
from ilo.engine.app.progress import Progress
from ilo.engine.app.result_files import ResultWriter
from ilo.engine.app.run_dir import RunDir, check_output_layout
from ilo.engine.problems.losses import LPIPS
from ilo.engine.problems.tasks import name_seed
from ilo.engine.solver.baselines import bm3d_denoise
from ilo.engine.solver.generator_view import GeneratorView
from ilo.engine.solver.ilo_solver import ILOConfig, csgm_config, pulse_config, solve
from ilo.errors import IloError, InputError
from ilo.generators.staged import StagedGenerator


def method_config(method: str, **overrides) -> ILOConfig | None:
    """The solver settings of a method, with the caller's overrides (None for BM3D)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if method == "ilo":
        return ILOConfig(**overrides)
    if method == "csgm":
        return csgm_config(**overrides)
    if method == "pulse":
        return pulse_config(**overrides)
    if method == "bm3d":
        if overrides:
            raise InputError(f"BM3D takes no solver settings (got {', '.join(sorted(overrides))})")
        return None
    raise InputError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")


@dataclass
class RestoreOptions(InputSpec):
    """How inputs are read (`InputSpec`'s fields: task, fit, masks, ...) and how they are solved."""

    method: str = "ilo"
    config: ILOConfig | None = None  # None: the method's defaults
    batch_size: int = 8
    seed: int = 0
    save_degraded: bool = False
    save_strip: bool = False
    overwrite: bool = False
    lpips_metric: LPIPS | None = None
    show_progress: bool = True
    device: str = "cpu"  # where the solver runs; inputs are read and outputs written on the CPU
    backend: str = "torch"  # what runs the generator (recorded per image)
    extra_settings: dict = field(default_factory=dict)  # e.g. the model's identity, for resume checks
    notes: list[str] = field(default_factory=list)  # shown once every input has been checked

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if self.method == "bm3d" and not self.task.kind.bm3d:
            raise InputError("BM3D is a denoiser: use it with --task denoise")
        if self.config is None:
            self.config = method_config(self.method)


# Prepared measurements kept between the up-front check and the solve, so small inputs are read
# once; beyond this the rest are read again when their batch comes (each read is hashed anyway).
PREPARED_CACHE_BYTES = 256 << 20

# Builds what the solver runs once the inputs are checked (exporting graphs can take minutes):
# returns the generator, the LPIPS loss module (or None) and the backend's description.
SolverFactory = Callable[[], "tuple[GeneratorView, LPIPS | None, str]"]  # the torch model or an engine


class Restorer:
    """Turn input files into restored outputs in one folder, resumably."""

    def __init__(self, gen: StagedGenerator, options: RestoreOptions, out: Path, loss_lpips: LPIPS | None = None):
        self.gen: GeneratorView = gen  # until `run` is given the solver's (an engine, maybe)
        self.options, self.res = options, gen.resolution
        self.loss_lpips = loss_lpips
        self.run_dir = RunDir(out)
        self.task = options.task
        self.reader = MeasurementReader(options, self.res)
        self.writer = ResultWriter(self.run_dir.root, self.task, self.res, options.save_degraded, options.save_strip,
                                   options.lpips_metric)  # fmt: skip

    def prepare(self, path: Path) -> Prepared:
        return self.reader.prepare(path)

    def outputs(self, stem: str) -> list[Path]:
        return self.writer.paths(stem)

    def settings(self) -> dict:
        o = self.options
        return {
            "task": self.task.describe(), "method": o.method,
            "solver": dataclasses.asdict(o.config) if o.config is not None else None,
            "fit": o.fit, "clean_inputs": o.clean_inputs, "seed": o.seed,
            # mask files are matched by content, per image (each record's sources), not by path
            "mask_files": o.mask is not None or o.mask_dir is not None,
            **o.extra_settings,
        }  # fmt: skip

    def run(self, inputs: list[Path], solver: SolverFactory | None = None) -> dict:
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
            records = {} if o.overwrite else self.run_dir.records()
            pending, notes = self._pending(inputs, sources, records)
            prepared = self._check_inputs(pending)
            for note in [*o.notes, *notes]:
                print(f"ilo: note: {note}", file=sys.stderr)
            if solver is not None:
                self.gen, self.loss_lpips, o.backend = solver()
            names = {p.name for i in inputs for p in [*self.outputs(i.stem), self.run_dir.record_path(i.stem)]}
            self.run_dir.start(settings, o.overwrite, outputs=names)
            return self._restore_all(pending, prepared, records, skipped=len(inputs) - len(pending))

    def _pending(self, inputs: list[Path], sources: dict, records: dict) -> tuple[list[Path], list[str]]:
        pending, changed, unhashed = [], [], []
        for path in inputs:
            record = records.get(path.stem)
            if record is None or not self.run_dir.finished(path.stem, self.outputs(path.stem)):
                pending.append(path)
            elif "sources" not in record:  # written before records held input hashes
                pending.append(path)
                unhashed.append(path.stem)
            elif record["sources"] != {role: file_sha256(f) for role, f in sources[path.stem].items()}:
                pending.append(path)
                changed.append(path.stem)
        notes = []
        if changed:
            notes.append(f"{len(changed)} finished image(s) have other input files than when they were restored "
                         f"(image, mask or ground truth), so they are restored again: {_some(changed)}")  # fmt: skip
        if unhashed:
            notes.append(f"{len(unhashed)} finished image(s) have records from an older ilo, without the hashes that "
                         f"tell whether their inputs changed, so they are restored again: {_some(unhashed)}")  # fmt: skip
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

    def _restore_all(self, pending: list[Path], prepared: dict, records: dict, skipped: int) -> dict:
        o = self.options
        progress = Progress(len(pending), "restore", enabled=o.show_progress)
        finished: list[str] = []  # this run's, in order (a batch that fails may have finished some)
        try:
            for start in range(0, len(pending), o.batch_size):
                paths = pending[start : start + o.batch_size]
                batch = [prepared.pop(p, None) or self.prepare(p) for p in paths]
                self._restore_batch(batch, paths, progress, records, finished)
                self.run_dir.write_tables(_in_file_order(records))  # a killed run still leaves its tables
                progress.advance(len(batch))
        except BaseException as e:
            if records:
                self.run_dir.write_tables(_in_file_order(records))
            if isinstance(e, IloError):
                raise IloError(f"{e}; {len(finished)} image(s) of this run finished and are kept in {self.run_dir.root}, "
                               "rerun to resume") from e  # fmt: skip
            raise
        if not pending and records:
            self.run_dir.write_tables(_in_file_order(records))
        return {"restored": len(finished), "skipped": skipped, "records": len(records)}

    def _restore_batch(self, batch: list[Prepared], paths: list[Path], progress: Progress, records: dict,
                       finished: list[str]) -> None:  # fmt: skip
        o = self.options
        y = torch.cat([b.y for b in batch])
        masks = torch.cat([b.mask for b in batch]) if batch[0].mask is not None else None
        op = self.task.operator(self.res, masks) if masks is not None else self.reader.shared_operator()
        seeds = [name_seed(o.seed, b.stem) for b in batch]
        if o.method == "bm3d":
            images, seconds = bm3d_denoise(y, self.task.sigma)
            best_round = [None] * len(batch)
        else:
            def report(k, step, steps, measured):
                progress.note(f"round {k} step {step + 1}/{steps} loss {float(measured.mean()):.3g}")

            try:  # the operator may be the reader's shared one: it goes back to the CPU whatever happens
                result = solve(y.to(o.device), op.to(o.device), self.gen, o.config, image_seeds=seeds,
                               lpips=self.loss_lpips, progress=report)  # fmt: skip
            finally:
                op.cpu()
            images, seconds = result.images.cpu(), result.seconds["total"]
            best_round = [int(r) for r in result.best_round]
        with torch.no_grad():
            fit = op.data_fit(images, y)
        for i, (b, path) in enumerate(zip(batch, paths)):
            record = {
                "name": b.stem, "input": str(path), "output": f"{b.stem}.png", "task": self.task.task,
                "method": o.method, "measurement_mse": float(fit[i]), "best_round": best_round[i],
                "seconds": seconds / len(batch), "batch_size": len(batch), "backend": o.backend, "device": o.device,
                "sources": b.sources,
            }  # fmt: skip
            if b.truth is not None:
                record.update(self.writer.metrics(images[i : i + 1], b.truth, b.mask))
            self.writer.write(b, images[i : i + 1])
            records[b.stem] = self.run_dir.write_record(b.stem, record)
            finished.append(b.stem)


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _in_file_order(records: dict[str, dict]) -> list[dict]:
    return [records[stem] for stem in sorted(records, key=lambda stem: f"{stem}.json")]
