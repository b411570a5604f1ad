"""Peak memory of a batch solve on StyleGAN2 256² (config-f widths, random weights) at batch 16:
torch eager with no budget (what a user gets without the engine) against the onnxruntime
engine under the default memory budget, one start and three batched starts.

Each run is its own process, so its peak resident set (ru_maxrss) is its own; the engine's
graphs come from the cache (`--cache`, filled on the first run). Reported beside each: the
rows per generator call the budget allowed, and the row cost's prediction of a step's peak.

    python benchmarks/memory.py                  # writes benchmarks/results/memory.{md,json}
    python benchmarks/memory.py --batch 4 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, machine_line

RUNS = {  # name -> (backend, memory budget, random starts)
    "torch eager · no budget · 1 start": ("torch", "off", 1),
    "onnxruntime · budget auto · 1 start": ("onnxruntime", "auto", 1),
    "onnxruntime · budget auto · 3 starts": ("onnxruntime", "auto", 3),
    "onnxruntime · budget 4G · 1 start": ("onnxruntime", "4G", 1),
}
STEPS = [2, 2, 2]  # per round: memory is a step's, so two steps of each round show it


def run_once(name: str, batch: int, resolution: int) -> dict:
    """In the child: one solve of `batch` pictures, reported as JSON."""
    import torch

    from ilo.engine.api.restorer import Restorer
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.solver.ilo_solver import ILOConfig
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    gen = random_stylegan2(config_f(resolution), seed=1)
    if name == "export":  # fills the cache, so the measured runs load graphs instead of exporting them
        Restorer(gen, TaskSpec("inpaint", centre_box=0.5), backend="onnxruntime", memory_budget="off")
        return {}
    backend, budget, starts = RUNS[name]
    config = ILOConfig(steps=STEPS, restarts=starts)
    t0 = time.perf_counter()
    restorer = Restorer(gen, TaskSpec("inpaint", centre_box=0.5), backend=backend, config=config, memory_budget=budget)
    warm_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    pictures = [torch.rand(3, resolution, resolution, generator=g) for _ in range(batch)]
    prepared = restorer.prepare(pictures, names=[f"p{i}" for i in range(batch)])
    rows: list[int] = []
    t0 = time.perf_counter()
    restorer.solve(prepared, progress=lambda k, step, steps, measured: rows.append(measured.shape[0]))
    costs = list(restorer._row_costs.values())
    return {
        "run": name,
        "backend": restorer.backend_name,
        "batch": batch,
        "starts": starts,
        "budget": budget,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "solve_s": time.perf_counter() - t0,
        "warm_s": warm_s,
        "max_rows_per_call": max(rows),
        "row_cost_gib": None
        if not costs
        else {
            "fixed": costs[0].fixed / 2**30,
            "per_row": costs[0].per_row / 2**30,
            "predicted_step_peak": costs[0].peak(max(rows)) / 2**30,
        },
    }


def render(rows: list[dict], batch: int, resolution: int) -> tuple[str, list[str], str]:
    """The Markdown report of the runs, its verdicts and the machine line."""
    machine = machine_line("one process per run")  # loads torch: only once the runs are done
    lines = [
        f"StyleGAN2 {resolution}² (config-f, random weights), inpainting, batch {batch}, {STEPS} steps per round. "
        "Peak RSS: the whole process's high-water mark (model, graphs, sessions and the solve).",
        "",
        "| run | peak RSS (GiB) | rows per call | row cost: fixed + per row (GiB) | predicted step peak (GiB) | solve (s) |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['run']} | {r['failed']} | | | | |")
            continue
        cost = r["row_cost_gib"]
        cells = (
            ("–", "–")
            if cost is None
            else (f"{cost['fixed']:.2f} + {cost['per_row']:.3f}", f"{cost['predicted_step_peak']:.2f}")
        )
        lines.append(
            f"| {r['run']} | {r['peak_rss_gib']:.2f} | {r['max_rows_per_call']} | {cells[0]} | {cells[1]} | {r['solve_s']:.0f} |"
        )
    ok = [r for r in rows if "failed" not in r]
    torch_row = next((r for r in ok if r["run"].startswith("torch")), None)
    checks = []
    for r in ok:
        if torch_row is not None and r is not torch_row:
            ratio = r["peak_rss_gib"] / torch_row["peak_rss_gib"]
            checks.append(
                f"{'PASS' if ratio <= 1 else 'MISS'} {r['run']}: peak RSS {ratio:.2f}x torch eager's at batch {batch}"
            )
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks)
    return text, checks, machine


def main(argv=None) -> int:
    quick = {"batch": 2, "resolution": 32, "runs": ",".join(list(RUNS)[:2])}  # torch eager against the engine
    script = Script(__file__, __doc__, quick=quick)
    p = script.parser
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=256)
    script.add_list("--runs", RUNS, "comma-separated subset (names as in RUNS)")
    p.add_argument("--cache", type=Path, help="the graph cache to use (default: ilo's own)")
    p.add_argument("--append", action="store_true", help="keep the other runs already in the results, replace these")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = script.parse(argv)
    if args.child:
        print(json.dumps(run_once(args.child, args.batch, args.resolution)))
        return 0
    env = None
    if args.cache:
        import os

        env = {**os.environ, "ILO_CACHE_DIR": str(args.cache)}
    rows = []
    for name in ["export", *args.runs]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--batch",
                str(args.batch),
                "--resolution",
                str(args.resolution),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode:
            rows.append({"run": name, "failed": f"exit {out.returncode}", "stderr": out.stderr[-2000:]})
            print(
                f"{name}: FAILED (exit {out.returncode}; -9 is the kernel's OOM killer)\n{out.stderr[-2000:]}",
                file=sys.stderr,
            )
            continue
        if name == "export":
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    if args.append and (args.out / "memory.json").is_file():
        earlier = [r for r in json.loads((args.out / "memory.json").read_text())["rows"] if r["run"] not in args.runs]
        rows = [r for name in RUNS for r in earlier + rows if r["run"] == name]
    text, checks, machine = render(rows, args.batch, args.resolution)
    script.write("memory", text, {"rows": rows, "checks": checks}, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
