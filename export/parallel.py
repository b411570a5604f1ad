"""Several bundles exported side by side, each in a worker process of its own.

Tracing and the ONNX exporter's passes run in one Python thread for most of their time, so a
cold start that exports its bundles one after another leaves every core but one idle. Bundles
are independent, and `export_bundle` renames each into the cache only when it is complete, so
workers can fill the cache while the caller waits and then loads what they wrote.

Workers are fresh interpreters (`python -m ilo.export.worker`), not multiprocessing children:
spawning re-imports the caller's main module (a script that embeds the engine without a
`__main__` guard would start again), and forking a process whose OpenMP pool has run can hang.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

from ilo.errors import IloError
from ilo.export.artifacts import Bundle, ExportResult, bundle_folder, export_bundle, read_cached
from ilo.generators.staged import StagedGenerator
from ilo.host_memory import available_host_memory

GiB = 1024**3
# What one bundle's export takes at its peak (trace, ONNX export, the float64 checks and their
# sessions), from the model's shapes: a part that follows the weights (their float32 and float64
# copies, the traced program, the serialised graph) and one that follows what the stages write
# (the checks' activations). The factors are fitted to StyleGAN2 config-f's peaks, an export
# worker's and the whole in-process `ilo export --warm`'s (its memory probe included), and err on
# the high side: too many workers for the memory are killed, too few only take longer
# (benchmarks/real_resolutions.py and export_cost.py measure the peaks again).
JOB_BYTES_PER_WEIGHT_BYTE = 36
JOB_BYTES_PER_STATE_BYTE = 17
# A worker may be planned on this share of the memory available: the rest is the caller's and
# the estimate's margin.
JOBS_SHARE = 0.8
# A worker pays seconds to start (torch, onnx, the exporter) and shares the cores: below this
# resolution a bundle exports in about the time a worker takes to start, so workers cost more than
# they save; above it the exports are long enough to gain (benchmarks/export_cost.py measures it).
MIN_PARALLEL_RESOLUTION = 128

BundleMaker = Callable[[], Bundle]  # picklable (a module-level function bound with partial)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def export_job_bytes(gen: StagedGenerator) -> int:
    """One bundle's export of `gen` at its peak, estimated from its shapes (see above)."""
    weights = sum(t.numel() * t.element_size() for t in gen.state_dict().values())
    return JOB_BYTES_PER_WEIGHT_BYTE * weights + JOB_BYTES_PER_STATE_BYTE * gen.state_bytes()


def default_jobs(missing: int, resolution: int, job_bytes: int) -> int:
    """Workers for `missing` bundles of a model at `resolution` whose export takes `job_bytes`:
    $ILO_EXPORT_JOBS where set; else one per core, as many as JOBS_SHARE of the free memory
    holds (a container's limit counts), and none (1: here) for small models, whose bundles
    export faster than a worker starts."""
    if os.environ.get("ILO_EXPORT_JOBS"):
        try:
            return max(1, int(os.environ["ILO_EXPORT_JOBS"]))
        except ValueError:
            raise IloError(
                f"ILO_EXPORT_JOBS must be a whole number of workers, got '{os.environ['ILO_EXPORT_JOBS']}'"
            ) from None
    if resolution < MIN_PARALLEL_RESOLUTION:
        return 1
    host = available_host_memory()  # a container's limit where it has one
    by_memory = missing if host is None else max(1, int(JOBS_SHARE * host[0] // job_bytes))
    return max(1, min(missing, usable_cores(), by_memory))


def refuse_what_cannot_fit(gen: StagedGenerator, missing: int, need: int | None = None) -> None:
    """Refuse, before minutes of export, bundles whose export alone (`need`, by default
    `export_job_bytes`) is estimated at more than all the memory available."""
    need, host = need or export_job_bytes(gen), available_host_memory()
    if missing and host is not None and need > host[0]:
        raise IloError(
            f"exporting a {gen.resolution}² {gen.family}'s graphs needs about {need / GiB:.1f} GiB a bundle (estimated "
            f"from its shapes), more than the {host[0] / GiB:.2f} GiB {host[1]}; free memory, or export on a larger "
            f"machine with the same versions and copy its $ILO_CACHE_DIR/graphs here"
        )


def export_bundles(
    makers: Sequence[BundleMaker],
    root: Path | None = None,
    jobs: int | None = None,
    gen: StagedGenerator | None = None,
    progress: Callable | None = None,
    force: bool = False,
) -> list[ExportResult]:
    """Export (or find cached) every bundle `makers` make, in up to `jobs` workers at once
    (None: `default_jobs` for the model `gen`, in this process where it is not given); `force`
    exports them again. With one job, or one bundle to export, it runs here, in this process:
    the reference path. Bundles of a `gen` whose export cannot fit are refused before any of
    them starts. `progress(i, n, name)` hears of each bundle as it starts (here) or is handed
    to a worker. Results in the order of `makers`."""
    bundles = [make() for make in makers]
    missing = [i for i, b in enumerate(bundles) if force or read_cached(bundle_folder(b, root)) is None]
    need = None if gen is None else export_job_bytes(gen)
    if gen is not None:
        refuse_what_cannot_fit(gen, len(missing), need)
    if jobs is None:
        jobs = 1 if gen is None or need is None else default_jobs(len(missing), gen.resolution, need)
    jobs = max(1, jobs)
    if jobs == 1 or len(missing) <= 1:
        return [export_here(b, root, progress, force and i in missing) for i, b in enumerate(bundles)]
    threads = max(1, usable_cores() // jobs)
    running: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ilo-export-jobs-") as work, ThreadPoolExecutor(jobs) as pool:
        futures = {}
        for n, i in enumerate(missing):
            job = Path(work) / f"job{i}"
            job.mkdir()
            with open(job / "job.pkl", "wb") as f:
                pickle.dump((makers[i], root, threads, force), f)
            if progress is not None:
                progress(n, len(missing), f"{bundles[i].name} (in a worker, {jobs} at once)")
            futures[pool.submit(run_worker, job, bundles[i].name, running)] = i
        try:
            for future in as_completed(futures):
                future.result()  # a worker's error, raised here
        except BaseException:  # the first failure (or ^C) ends the export: no bundle waits for minutes in vain
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in running:
                proc.kill()
            raise
    results = [export_bundle(b, root) for b in bundles]  # every one a cache hit now
    return [ExportResult(r.folder, r.manifest, r.cache_hit and i not in missing) for i, r in enumerate(results)]


def export_here(bundle: Bundle, root: Path | None, progress: Callable | None, force: bool) -> ExportResult:
    """`export_bundle` in this process, where running out of memory is one line naming the
    bundle (as a worker's failure is); any other error keeps its traceback."""
    try:
        return export_bundle(bundle, root, progress, force)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's errors are no RuntimeError; others are re-raised
        if isinstance(e, IloError) or not out_of_memory(e):
            raise
        raise IloError(f"exporting {bundle.name} failed: {failure_cause(e)}") from e


def out_of_memory(e: BaseException) -> bool:
    """torch's, the allocator's and ONNX Runtime's ways of saying so."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(
        s in text for s in ("can't allocate memory", "out of memory", "failed to allocate")
    )


def failure_cause(e: BaseException) -> str:
    """An unexpected error as one line: its first line, or what it means where it is out of memory."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"out of memory ({text})" if out_of_memory(e) else f"{type(e).__name__}: {text}"


class WorkerLog(Exception):
    """A failed worker's own output (its traceback): the cause of the one-line IloError the
    caller sees, shown where tracebacks are (`ilo --debug`)."""


def run_worker(job: Path, name: str = "a bundle", running: list[subprocess.Popen] | None = None) -> float:
    """Run one export job (a folder holding job.pkl) in a fresh interpreter; its seconds. A
    failure is one line naming the bundle `name` and the cause (the worker's own error message,
    or how it ended), with the worker's log chained to it. The worker's process is added to
    `running`, so the caller can stop it."""
    t0 = time.perf_counter()
    with open(job / "log.txt", "wb") as log:
        done = subprocess.Popen(
            [sys.executable, "-m", "ilo.export.worker", str(job)], stdout=log, stderr=subprocess.STDOUT
        )
        if running is not None:
            running.append(done)
        done.wait()
    if done.returncode:
        text = (job / "log.txt").read_text(errors="replace").strip()
        message = next(
            (
                line.split("error: ", 1)[1]
                for line in reversed(text.splitlines())
                if "ilo-export-worker: error: " in line
            ),
            None,
        )
        if message is None and done.returncode < 0:
            signal = -done.returncode
            message = f"the worker was killed by signal {signal}" + (" (out of memory?)" if signal == 9 else "")
        raise IloError(
            f"exporting {name} failed: {message or f'the worker exited with {done.returncode}'}"
        ) from WorkerLog(text[-20000:] or "(the worker wrote nothing)")
    return time.perf_counter() - t0
