"""Export cost of StyleGAN2 (config-f shapes, random weights): wall time, peak memory and file
sizes of `ilo export`'s generator graphs (every stage's forward and VJP, the mapping proxy),
including the lint and the ONNX Runtime checks at batch 1 and 5. A benchmark, not a test.

Each resolution runs in its own process, so peak RSS is that export's alone.

    python benchmarks/export_cost.py                 # 256 and 1024, writes benchmarks/results/
    python benchmarks/export_cost.py --resolutions 64
    python benchmarks/export_cost.py --cold-start 256   # a new node's first use, to its first step
    python benchmarks/export_cost.py --cold-start 32 --replicas 3 [--source OLD_TREE]  # replicas sharing a cache

Every mode writes its own section of export_cost.md (the export, the cold start, the replicas),
leaving the others as they are; export_cost.json holds the export's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, comma_ints, machine_line


def export_once(resolution: int, cache: Path) -> dict:
    """Runs in the child process: build, export, report."""
    from ilo.export.artifacts import export_generator
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    gen = random_stylegan2(config_f(resolution), seed=resolution)
    t0 = time.perf_counter()
    result = export_generator(gen, cache)
    seconds = time.perf_counter() - t0
    graphs = result.manifest["graphs"]
    return {
        "resolution": resolution,
        "seconds": seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "graphs": len(graphs),
        "total_mb": sum(x["bytes"] for x in graphs) / 1e6,
        "weights_mb": sum(t.numel() * 4 for t in gen.state_dict().values()) / 1e6,
        "worst_error": max(x["error"] for x in graphs),
        "lint_problems": sum(len(x["lint"]) for x in graphs),
        "kink_limited": [x["name"] for x in graphs if x["kink_limited"]],
        "worst_l2_error": max(max(x["l2_relative_error"].values()) for x in graphs),
        "per_graph": [
            {
                k: x[k]
                for k in (
                    "name",
                    "bytes",
                    "export_seconds",
                    "error",
                    "kink_limited",
                    "max_relative_error",
                    "l2_relative_error",
                    "torch_float32_max_relative_error",
                )
            }
            for x in graphs
        ],
    }


def cold_start_once(resolution: int, cache: Path) -> dict:
    """Runs in the child, on an empty cache: what a new node pays before the first step of an
    inpainting solve on the onnxruntime engine (exports, checks, sessions, the memory probe and
    the warm-up steps), then that first step."""
    import os

    os.environ["ILO_CACHE_DIR"] = str(cache)
    import torch

    from ilo.engine.api.restorer import Restorer
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.solver.ilo_solver import ILOConfig
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    gen = random_stylegan2(config_f(resolution), seed=resolution)
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    # ILO's fixed three rounds, the setting every earlier cold start was measured with
    restorer = Restorer(gen, TaskSpec("inpaint", centre_box=0.5), method="ilo", backend="onnxruntime", warm=False)
    restorer.warm(lambda i, n, name: marks.setdefault(name.split("/")[0], time.perf_counter() - t0))
    ready = time.perf_counter() - t0
    prepared = restorer.prepare([torch.rand(3, resolution, resolution)], names=["first"])
    t1 = time.perf_counter()
    restorer.solve(prepared, config=ILOConfig(steps=1, restarts=1))
    from ilo.export.parallel import default_jobs, export_job_bytes

    return {
        "resolution": resolution,
        "ready_s": ready,
        "first_solve_s": time.perf_counter() - t1,
        "bundles_started_at_s": marks,
        "export_jobs": default_jobs(4, resolution, export_job_bytes(gen)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_rss_one_worker_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
    }


def in_child(flag: str, resolution: int, env: dict | None = None) -> dict | None:
    """This script's `flag` mode in a fresh process on an empty cache (peak RSS its own), with
    `env` added to the environment; its JSON report, or None (with the child's error shown)."""
    with tempfile.TemporaryDirectory() as cache:
        run = subprocess.run(
            [sys.executable, __file__, flag, str(resolution), "--cache", cache],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
    if run.returncode:
        print(run.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def cold_start(script: Script, resolution: int, jobs: list[int]) -> int:
    """One cold start per export-worker count, one after another in this run (a ratio, not a
    comparison with another day's timings)."""
    runs = {}
    for n in jobs:
        r = in_child("--cold-child", resolution, {"ILO_EXPORT_JOBS": str(n)})
        if r is None:
            return 1
        runs[n] = r
    lines = [
        f"Nothing else running. Cold start at {resolution}² (StyleGAN2 config-f, random weights), onnxruntime, an inpainting solve of `--method ilo` (three "
        f"rounds), empty cache: from building the Restorer to ready for the first step (exports, checks, sessions, the "
        f"memory probe and the warm-up steps), then a one-step solve. Target: 90 s.",
        "",
        "| export workers | ready for the first step | first one-step solve | peak RSS, main process | peak RSS, one worker |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, r in runs.items():
        worker = f"{r['peak_rss_one_worker_gib']:.2f} GiB" if n > 1 else "-"
        lines.append(
            f"| {n}{' (in process)' if n == 1 else ''} | {r['ready_s']:.0f} s | {r['first_solve_s']:.1f} s | "
            f"{r['peak_rss_gib']:.2f} GiB | {worker} |"
        )
    for n, r in runs.items():
        starts = ", ".join(f"{name} at {t:.0f} s" for name, t in r["bundles_started_at_s"].items())
        lines.append(f"\n{n} worker(s), bundles started (or handed to a worker): {starts}.")
    print(json.dumps({"runs": runs}))  # the raw reports, which the table does not all carry
    heading = f"Cold start: a new node's first use (`--cold-start {resolution}`)"
    script.write_section(
        "export_cost", heading, "\n".join(lines), None, machine_line("onnxruntime, one process per run")
    )
    return 0


def replicas_once(resolution: int, count: int, source: Path | None) -> dict | None:
    """`count` replicas (Serve replicas, Ray actors) starting at once on one node's empty cache,
    each a cold start exporting in its own process (ILO_EXPORT_JOBS=1), importing ilo from
    `source` (default: this tree); their reports and the wall time until all were ready, or None
    (with the failing replica's error shown)."""
    env = {**os.environ, "ILO_EXPORT_JOBS": "1"}
    if source is not None:
        env["PYTHONPATH"] = f"{source}{os.pathsep}{env.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        children = [
            subprocess.Popen(
                [sys.executable, __file__, "--cold-child", str(resolution), "--cache", cache],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(count)
        ]
        reports = []
        for child in children:
            stdout, stderr = child.communicate()
            if child.returncode:
                print(stderr[-3000:], file=sys.stderr)
                return None
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
    return {"source": str(source or "this tree"), "wall_s": wall, "reports": reports}


def replicas(script: Script, resolution: int, count: int, source: Path | None) -> int:
    """`count` replicas starting at once on one cache, from this tree and then, given a `source`
    (a worktree of an earlier commit), from that tree: the before-and-after in one run."""
    runs = []
    for tree in (None, source) if source is not None else (None,):
        run = replicas_once(resolution, count, tree)
        if run is None:
            return 1
        runs.append(run)
    print(json.dumps({"resolution": resolution, "replicas": count, "runs": runs}))  # the raw reports
    lines = [
        (
            f"{count} processes started at once on one empty cache, as {count} Serve replicas or Ray actors on a new "
            f"node would start: each a cold start of a StyleGAN2 config-f generator at {resolution}² (random weights), "
            "onnxruntime, an inpainting solve of `--method ilo`, `ILO_EXPORT_JOBS=1` (each exports in its own "
            "process). The time counts from building the Restorer until the replica is ready for its first step."
        ),
        "",
        "| source | replicas ready after | all ready | peak RSS per replica |",
        "| --- | --- | --- | --- |",
    ]
    for run in runs:
        ready = ", ".join(f"{t:.0f}" for t in sorted(r["ready_s"] for r in run["reports"]))
        rss = ", ".join(f"{r['peak_rss_gib']:.2f}" for r in run["reports"])
        lines.append(f"| {run['source']} | {ready} s | {run['wall_s']:.0f} s | {rss} GiB |")
    heading = f"Replicas starting together on one cache (`--cold-start {resolution} --replicas {count}`)"
    machine = machine_line("onnxruntime, one process per replica")
    script.write_section("export_cost", heading, "\n".join(lines), None, machine)
    return 0


def arguments(argv) -> tuple[Script, argparse.Namespace]:
    script = Script(__file__, __doc__, quick={"resolutions": "32"})
    p = script.parser
    p.add_argument("--resolutions", type=comma_ints, default="256,1024")
    p.add_argument(
        "--cold-start",
        type=int,
        metavar="RESOLUTION",
        help="instead: time a new node's first use at this resolution (its section of export_cost.md)",
    )
    p.add_argument(
        "--export-jobs", type=comma_ints, default="1,2", help="with --cold-start: the export-worker counts to compare"
    )
    p.add_argument(
        "--replicas",
        type=int,
        help="with --cold-start: this many replicas starting at once on one cache (their section of export_cost.md)",
    )
    p.add_argument(
        "--source",
        type=Path,
        help="with --replicas: another ilo source tree (an earlier commit's worktree) whose replicas start after this tree's",
    )
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cold-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    return script, script.parse(argv)


def main(argv=None) -> int:
    script, args = arguments(argv)
    if args.child:
        print(json.dumps(export_once(args.child, args.cache)))
        return 0
    if args.cold_child:
        print(json.dumps(cold_start_once(args.cold_child, args.cache)))
        return 0
    if args.cold_start and args.replicas:
        return replicas(script, args.cold_start, args.replicas, args.source)
    if args.cold_start:
        return cold_start(script, args.cold_start, args.export_jobs)
    rows = []
    for res in args.resolutions:
        r = in_child("--child", res)
        if r is None:
            return 1
        rows.append(r)
        print(
            f"{res}px: {r['seconds']:.0f}s, peak {r['peak_rss_gib']:.2f} GiB, {r['graphs']} graphs, "
            f"{r['total_mb']:.0f} MB on disk ({r['weights_mb']:.0f} MB of weights), worst error {r['worst_error']:.1e}",
            file=sys.stderr,
        )
    machine = machine_line("ilo export, one process per resolution")  # loads torch: only once the runs are done
    lines = [
        "| resolution | graphs | wall time (s) | peak RSS (GiB) | files (MB) | weights (MB) | files / weights | worst max / l2 rel. error | kink-limited |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['resolution']}² | {r['graphs']} | {r['seconds']:.0f} | {r['peak_rss_gib']:.2f} | {r['total_mb']:.0f} | "
            f"{r['weights_mb']:.0f} | {r['total_mb'] / r['weights_mb']:.2f} | {r['worst_error']:.1e} / {r['worst_l2_error']:.1e} | "
            f"{len(r['kink_limited'])} ({', '.join(r['kink_limited'])}) |"
        )
    table = "\n".join(lines) + (
        "\n\nWall time includes tracing, the ONNX checker, the TensorRT lint and the ONNX\n"
        "Runtime checks against torch (float64) at batch 1 and 5 — 1 and 2, or 1 alone, for stages whose check\n"
        "would exceed a 6 GiB budget. Kink-limited: VJP graphs of these random-weight networks whose max error\n"
        "exceeds 1e-4 because leaky-ReLU kinks flip under float32 rounding, as torch's own float32 VJP does too\n"
        "(see export/artifacts.py); all their l2 errors are within 1e-2. Files / weights is about 2 because each\n"
        "stage's forward and VJP graphs carry their own copy of the weights.\n"
    )
    script.write_section("export_cost", "Export cost", table, {"rows": rows}, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
