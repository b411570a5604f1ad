"""`ilo restore --ray`: a folder run's batches solved by a pool of Ray Data actors.

Each actor holds one warmed `ilo.Restorer` and solves whole batches: the same batches, in the
same groups, that a local run solves, so each image's numbers match the local run's (up to the
float rounding of a different thread count; the README gives the measured bound). Actors read
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
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ilo.engine.app.measurements import InputSpec, MeasurementReader
from ilo.engine.app.restore import Batch, RestoreOptions
from ilo.engine.app.restorer import BatchResult, Restorer, RestorerSettings
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
    common = dict(include_dashboard=False, log_to_driver=not quiet, logging_level=logging.ERROR if quiet else logging.INFO)
    try:
        if address == "local":
            ray.init(num_cpus=int(num_cpus) if num_cpus else None, **common)
        else:
            ray.init(address=address, **common)
    except ConnectionError as e:
        hint = " (start one with `ray start --head`, or pass --ray with no value for one of this run's own)" if address == "auto" else ""
        raise IloError(f"no Ray cluster at '{address}'{hint}: {str(e).splitlines()[0]}") from None
    return True


class RestoreWorker:
    """One Ray Data actor: a warmed `Restorer` and a reader for the run's inputs."""

    def __init__(self, settings: RestorerSettings, spec: InputSpec, threads: int):
        torch.set_num_threads(max(1, threads))  # Ray's share of the CPUs, not the whole machine's
        self.restorer = Restorer(settings=settings, warm=True, quiet=True)
        self.reader = MeasurementReader(spec, self.restorer.resolution)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas, images = [], []
        for index, paths in zip(rows["index"], rows["paths"]):
            meta: dict = {"index": int(index), "pid": os.getpid()}
            try:
                prepared = [self.reader.prepare(Path(p)) for p in json.loads(str(paths))]
                result = self.restorer.solve(prepared)
                meta.update(measurement_mse=result.measurement_mse, best_round=result.best_round,
                            seconds=result.seconds, backend=self.restorer.backend_name)  # fmt: skip
                images.append(_to_bytes(result.images))
            except IloError as e:  # the driver reports it and keeps what is finished; the actor lives on
                meta["error"] = str(e)
                images.append(b"")
            metas.append(json.dumps(meta))
        return {"meta": np.array(metas, dtype=object), "images": np.array(images, dtype=object)}


class RayBatches:
    """Solves a folder run's batches on a pool of Ray Data actors (a `BatchSolver`)."""

    def __init__(self, restorer: Restorer, options: RestoreOptions, address: str = "local", workers: int | None = None,
                 cpus_per_worker: float = 1, gpus_per_worker: float = 0, quiet: bool = True,
                 model: str | Path | None = None):  # fmt: skip
        import_ray()  # a missing extra is said before any input is read
        if cpus_per_worker <= 0:
            raise InputError(f"--cpus-per-worker must be positive, got {cpus_per_worker}")
        if gpus_per_worker < 0:
            raise InputError(f"--gpus-per-worker must be at least 0, got {gpus_per_worker}")
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        if gpus_per_worker > 0 and not restorer.settings.device.startswith("cuda"):
            raise InputError("--gpus-per-worker gives actors GPUs: run them there with --device cuda")
        self.restorer, self.options, self.address = restorer, options, address
        self.workers, self.cpus, self.gpus, self.quiet = workers, cpus_per_worker, gpus_per_worker, quiet
        # actors load the checkpoint from its path where there is one, not from a copy sent by this process
        self.model = model if model is not None else restorer.settings.model
        self.backend = "not started"

    def pool_size(self, n_batches: int) -> int:
        ray = import_ray()
        if self.workers is not None:
            return max(1, min(self.workers, n_batches))
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, min(int(cpus // self.cpus), n_batches))

    def solve_all(self, batches: list[Batch], note) -> Iterator[tuple[Batch, BatchResult]]:
        if not batches:
            return
        ray = import_ray()
        started = connect(self.address, (self.workers or os.cpu_count() or 1) * self.cpus if self.workers else None,
                          self.quiet)  # fmt: skip
        try:
            yield from self._run(ray, batches, note)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, batches: list[Batch], note) -> Iterator[tuple[Batch, BatchResult]]:
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the run's own progress line counts images across the fleet
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own lines say what runs where
        # an actor lost while loading (its node went away, say) is replaced rather than failing the run
        ctx.max_consecutive_actor_init_deaths = max(ctx.max_consecutive_actor_init_deaths, 3)
        ctx.execution_options.preserve_order = False  # write each batch as soon as it is back
        size = self.pool_size(len(batches))
        o = self.options
        spec = InputSpec(o.task, o.fit, o.clean_inputs, o.mask, o.mask_dir, None, o.max_pixels)  # truths stay here
        model = self.model if not hasattr(self.model, "state_dict") else ray.put(self.model)
        settings = dataclasses.replace(self.restorer.settings, model=model)
        if not self.quiet:
            print(f"ilo: note: {len(batches)} batch(es) on {size} Ray actor(s), {self.cpus:g} CPU"
                  f"{f' and {self.gpus:g} GPU' if self.gpus else ''} each", file=sys.stderr)  # fmt: skip
        rows = [{"index": b.index, "paths": json.dumps([str(p) for p in b.paths])} for b in batches]
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            RestoreWorker, fn_constructor_kwargs={"settings": settings, "spec": spec, "threads": int(self.cpus)},
            batch_size=1, batch_format="numpy", compute=ActorPoolStrategy(size=size),
            num_cpus=self.cpus, num_gpus=self.gpus or None,
        )  # fmt: skip  (Ray Data's actors restart without limit and retry their task: a killed one costs a retry)
        by_index = {b.index: b for b in batches}
        seen: set[int] = set()
        for row in results.iter_rows():
            meta = json.loads(row["meta"])
            if "error" in meta:
                raise IloError(meta["error"])
            if meta["index"] in seen:  # a retried batch that came back twice is written once
                continue
            seen.add(meta["index"])
            self.backend = meta["backend"]
            images = _from_bytes(row["images"])
            yield by_index[meta["index"]], BatchResult(images, meta["measurement_mse"], meta["best_round"], meta["seconds"])


def _to_bytes(images: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images.numpy().astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
