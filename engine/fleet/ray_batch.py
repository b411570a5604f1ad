"""`ilo restore --ray`: a folder run's batches solved by a pool of Ray Data actors.

Each actor holds one warmed `ilo.Restorer` and solves whole batches: the same batches, in the
same groups, that a local run solves, so each image's numbers match the local run's (up to the
float rounding of a different thread count; docs/restoring.md, "Seeds and batch rounding", gives the measured bound). Actors read
their inputs by path, so the inputs must be on a file system every node sees at the same path;
results come back to this process, which writes every output and record exactly as a local
run does. An actor that dies mid-batch is restarted and its batch solved again; nothing it was
doing had been written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ilo.engine.inputs.measurements import InputFiles, InputSpec, MeasurementReader
from ilo.engine.runs.folder_run import Batch, RestoreOptions
from ilo.engine.api.restorer import BatchResult, Restorer, RestorerSettings
from ilo.errors import IloError, InputError


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise IloError("--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data,serve]')") from None
    return ray


def connect(address: str, num_cpus: float | None = None, quiet: bool = True) -> bool:
    """Join the Ray cluster at `address` ('auto', HOST:PORT, ray://...), or start one here for
    this process ('local'). Returns whether this call started it (and so must stop it)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    common = dict(
        include_dashboard=False, log_to_driver=not quiet, logging_level=logging.ERROR if quiet else logging.INFO
    )
    try:
        if address == "local":
            ray.init(num_cpus=math.ceil(num_cpus) if num_cpus else None, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, ValueError, RuntimeError) as e:
        hint = (
            " (start one with `ray start --head`, or give --ray no value for a Ray of this run's own)"
            if address == "auto"
            else ""
        )
        raise IloError(f"no Ray cluster at '{address}'{hint}: {str(e).strip().splitlines()[0]}") from None
    return True


def check_address(address: str) -> None:
    """`--ray` takes an optional value, so `--ray a.png b.png` would take the first input for an
    address: refuse anything that names a file or folder here."""
    if address not in ("local", "auto") and Path(address).expanduser().exists():
        raise InputError(
            f"--ray took '{address}' (a file or folder here) for a cluster address; "
            "put --ray after the inputs, or write --ray=auto / --ray=HOST:PORT"
        )


def resolved(path):
    """A path as every node sees it: absolute (actors do not run in this folder)."""
    return Path(path).expanduser().resolve() if path is not None else None


class RestoreWorker:
    """One Ray Data actor: a warmed `Restorer` and a reader for the run's inputs (the task, fit
    and size limit of its settings; the run's mask and clean-input choices, `files`)."""

    def __init__(self, settings: RestorerSettings, files: InputFiles, threads: int):
        torch.set_num_threads(max(1, threads))  # Ray's share of the CPUs, not the whole machine's
        self.restorer = Restorer(settings=settings, warm=False, quiet=True).warm(trial=False)  # batches follow at once
        self.reader = MeasurementReader(InputSpec.for_settings(settings, files), self.restorer.resolution)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas, images = [], []
        for index, paths in zip(rows["index"], rows["paths"]):
            meta: dict = {"index": int(index), "pid": os.getpid()}
            try:
                prepared = [self.reader.prepare(Path(p)) for p in json.loads(str(paths))]
                result = self.restorer.solve(prepared)
                meta.update(_result_fields(result), backend=self.restorer.backend_name)
                images.append(_to_bytes(result.images))
            except IloError as e:  # the driver reports it and keeps what is finished; the actor lives on
                meta["error"] = str(e)
                images.append(b"")
            metas.append(json.dumps(meta))
        return {"meta": np.array(metas, dtype=object), "images": np.array(images, dtype=object)}


# every field of a worker's BatchResult but its images (sent as bytes beside), so a field added
# to BatchResult reaches the driver without being named here
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(BatchResult) if f.name != "images")


def _result_fields(result: BatchResult) -> dict:
    return {k: getattr(result, k) for k in _RESULT_FIELDS}


class RayBatches:
    """Solves a folder run's batches on a pool of Ray Data actors (a `BatchSolver`)."""

    def __init__(
        self,
        restorer: Restorer,
        options: RestoreOptions,
        address: str = "local",
        workers: int | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        quiet: bool = True,
        model: str | Path | None = None,
    ):
        import_ray()  # a missing extra is said before any input is read
        check_address(address)
        if not cpus_per_worker > 0 or not math.isfinite(cpus_per_worker):  # NaN passes a "<= 0" test
            raise InputError(f"--cpus-per-worker must be positive, got {cpus_per_worker}")
        if not gpus_per_worker >= 0 or not math.isfinite(gpus_per_worker):
            raise InputError(f"--gpus-per-worker must be at least 0, got {gpus_per_worker}")
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        if gpus_per_worker > 0 and not restorer.settings.device.startswith("cuda"):
            raise InputError("--gpus-per-worker gives actors GPUs: run them there with --device cuda")
        self.restorer, self.options, self.address = restorer, options, address
        self.workers, self.cpus, self.gpus, self.quiet = workers, cpus_per_worker, gpus_per_worker, quiet
        # actors load the checkpoint from its path where there is one, not from a copy sent by this process
        model = model if model is not None else restorer.settings.model
        self.model = resolved(model) if isinstance(model, (str, Path)) and Path(model).expanduser().exists() else model
        self.backend = "not started"
        self.size, self._started = 1, False

    def open(self) -> None:
        """Join (or start) the cluster and size the pool to what it has."""
        self._started = connect(self.address, self.workers * self.cpus if self.workers else None, self.quiet)
        ray = import_ray()
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        fit = int(cpus // self.cpus) if not self.gpus else min(int(cpus // self.cpus), int(gpus // self.gpus))
        if self.workers is not None and self.workers > fit:
            self.close()
            need = f"{self.cpus:g} CPU{f' and {self.gpus:g} GPU' if self.gpus else ''} each"
            raise IloError(
                f"--workers {self.workers} with {need} does not fit this Ray cluster ({cpus:g} CPUs, "
                f"{gpus:g} GPUs): at most {fit}"
            )
        if fit < 1:
            self.close()
            raise IloError(
                f"this Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs) has no room for one worker with "
                f"{self.cpus:g} CPU and {self.gpus:g} GPU"
            )
        self.size = self.workers or fit

    def close(self) -> None:
        if self._started:
            import_ray().shutdown()
            self._started = False

    def solve_all(self, batches: list[Batch], note) -> Iterator[tuple[Batch, BatchResult]]:
        if not batches:
            return
        ray = import_ray()
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the run's own progress line counts images across the fleet
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own lines say what runs where
        # an actor lost while loading (its node went away, say) is replaced rather than failing the run
        ctx.max_consecutive_actor_init_deaths = max(ctx.max_consecutive_actor_init_deaths, 3)
        ctx.execution_options.preserve_order = False  # write each batch as soon as it is back
        size = min(self.size, len(batches))
        given = self.options.files  # as every node sees them; ground truths are read here, for the metrics
        files = InputFiles(given.clean_inputs, resolved(given.mask), resolved(given.mask_dir), truth_dir=None)
        settings = dataclasses.replace(self.restorer.settings, model=self.model)
        if not self.quiet:
            print(
                f"ilo: note: {len(batches)} batch(es) on {size} Ray actor(s), {self.cpus:g} CPU"
                f"{f' and {self.gpus:g} GPU' if self.gpus else ''} each",
                file=sys.stderr,
            )
        rows = [{"index": b.index, "paths": json.dumps([str(resolved(p)) for p in b.paths])} for b in batches]
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            RestoreWorker,
            fn_constructor_kwargs={"settings": settings, "files": files, "threads": math.ceil(self.cpus)},
            # one batch at a time per actor: a batch is seconds to minutes of work, so queueing more
            # at a busy actor gains nothing and can leave another actor idle at the end
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
            num_cpus=self.cpus,
            num_gpus=self.gpus or None,
        )  # Ray Data's actors restart without limit and retry their task: a killed one costs a retry
        by_index = {b.index: b for b in batches}
        seen: set[int] = set()
        try:
            for row in results.iter_rows():
                meta = json.loads(row["meta"])
                if "error" in meta:
                    raise IloError(meta["error"])
                if meta["index"] in seen:  # a retried batch that came back twice is written once
                    continue
                seen.add(meta["index"])
                self.backend = meta["backend"]
                images = _from_bytes(row["images"])
                yield by_index[meta["index"]], BatchResult(images=images, **{k: meta[k] for k in _RESULT_FIELDS})
        except ray.exceptions.RayError as e:  # a worker's bug or a lost cluster: one line, the finished images kept
            raise IloError(f"the Ray job failed: {_last_line(e)}") from e


def _last_line(error: BaseException) -> str:
    """The line of a Ray error that says what went wrong (its traceback comes before it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _to_bytes(images: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images.numpy().astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
