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
from ilo.host_memory import available_host_memory

GiB = 1024**3
# Peak RSS of one worker exporting StyleGAN2 256² bundles (trace, export, float64 checks): 5.1
# GiB here. Scaled by the pixel count, as the checks' activations are most of it.
JOB_BYTES_AT_256 = 5.5 * GiB
# A worker pays about 6 s to start (torch, onnx, the exporter) and shares the cores: on the
# 2-core EPYC the default model's bundles (64², 5-15 s each) took 41 s in two workers against
# 36 s here; StyleGAN2 256²'s (60-110 s each) 313 s against 386 s (benchmarks/export_cost.py).
MIN_PARALLEL_RESOLUTION = 128

BundleMaker = Callable[[], Bundle]  # picklable (a module-level function bound with partial)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(missing: int, resolution: int) -> int:
    """Workers for `missing` bundles of a model at `resolution`: $ILO_EXPORT_JOBS where set;
    else one per core, as many as the free memory holds (a container's limit counts), and
    none (1: here) for small models, whose bundles export faster than a worker starts."""
    if os.environ.get("ILO_EXPORT_JOBS"):
        try:
            return max(1, int(os.environ["ILO_EXPORT_JOBS"]))
        except ValueError:
            raise IloError(f"ILO_EXPORT_JOBS must be a whole number of workers, got '{os.environ['ILO_EXPORT_JOBS']}'") from None
    if resolution < MIN_PARALLEL_RESOLUTION:
        return 1
    per_job = JOB_BYTES_AT_256 * (resolution / 256) ** 2
    host = available_host_memory()  # a container's limit where it has one
    by_memory = missing if host is None else max(1, int(host[0] // per_job))
    return max(1, min(missing, usable_cores(), by_memory))


def export_bundles(makers: Sequence[BundleMaker], root: Path | None = None, jobs: int | None = None,
                   resolution: int = 256, progress: Callable | None = None, force: bool = False) -> list[ExportResult]:  # fmt: skip
    """Export (or find cached) every bundle `makers` make, in up to `jobs` workers at once
    (None: `default_jobs`); `force` exports them again. With one job, or one bundle to export,
    it runs here, in this process: the reference path. `progress(i, n, name)` hears of each
    bundle as it starts (here) or is handed to a worker. Results in the order of `makers`."""
    bundles = [make() for make in makers]
    missing = [i for i, b in enumerate(bundles) if force or read_cached(bundle_folder(b, root)) is None]
    jobs = default_jobs(len(missing), resolution) if jobs is None else max(1, jobs)
    if jobs == 1 or len(missing) <= 1:
        return [export_bundle(b, root, progress, force and i in missing) for i, b in enumerate(bundles)]
    threads = max(1, usable_cores() // jobs)
    with tempfile.TemporaryDirectory(prefix="ilo-export-jobs-") as work, ThreadPoolExecutor(jobs) as pool:
        futures = {}
        for n, i in enumerate(missing):
            job = Path(work) / f"job{i}"
            job.mkdir()
            with open(job / "job.pkl", "wb") as f:
                pickle.dump((makers[i], root, threads, force), f)
            if progress is not None:
                progress(n, len(missing), f"{bundles[i].name} (in a worker, {jobs} at once)")
            futures[pool.submit(run_worker, job)] = i
        for future in as_completed(futures):
            future.result()  # a worker's error, raised here
    results = [export_bundle(b, root) for b in bundles]  # every one a cache hit now
    return [ExportResult(r.folder, r.manifest, r.cache_hit and i not in missing) for i, r in enumerate(results)]


def run_worker(job: Path) -> float:
    """Run one export job (a folder holding job.pkl) in a fresh interpreter; its seconds. A
    failure is raised with the worker's own error message."""
    t0 = time.perf_counter()
    with open(job / "log.txt", "wb") as log:
        done = subprocess.run([sys.executable, "-m", "ilo.export.worker", str(job)], stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = (job / "log.txt").read_text(errors="replace").strip().splitlines()[-12:]
        message = next((line.split("error: ", 1)[1] for line in reversed(tail) if "ilo-export-worker: error: " in line), None)
        raise IloError(message or f"an export worker failed (exit {done.returncode}):\n" + "\n".join(tail))
    return time.perf_counter() - t0
