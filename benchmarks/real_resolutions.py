"""Real resolutions: what a new user pays for StyleGAN2 at 256² and 1024² (config-f, random
weights, saved as a rosinality checkpoint) with default settings, on an empty cache:

1. `ilo export --model M --warm inpaint` (the README's advice for a cold start),
2. `ilo restore` of one image, `--task inpaint --centre-box 0.5 --steps 2` (every other setting
   the default: method, starts, memory budget),

each as the command a person types, one after the other in one run. Per phase: wall time and
peak memory, both of the whole process tree (the proportional set sizes of the command and of
every process it starts, export workers included, summed, sampled every 0.1 s) and of its
largest process (the kernel's high-water mark of resident memory). Also what the engine
estimated from the shapes before exporting against what the memory probe then measured. A
benchmark, not a test.

    python benchmarks/real_resolutions.py                      # 256 and 1024, writes benchmarks/results/
    python benchmarks/real_resolutions.py --resolutions 256
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, comma_ints, machine_line

FACE = Path(__file__).parents[1] / "examples" / "faces" / "generated_90100.png"
GiB = 1024**3


def tree_memory(root: int) -> int:
    """Bytes of memory process `root` and all its descendants hold, from /proc: the sum of their
    proportional set sizes (Pss), so pages they share (a forked child's) count once."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            total += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:"))) * 1024
        except (OSError, StopIteration):
            pass  # gone meanwhile
        todo += children.get(pid, [])
    return total


def phase(command: list[str], env: dict) -> dict:
    """Run one command; its wall time, exit code, the tail of its output and its peaks."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_memory(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # shown as it comes: a long phase shows its progress
        print("   ", line.rstrip(), file=sys.stderr, flush=True)
        lines.append(line.rstrip())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    return {
        "command": " ".join(command),
        "seconds": time.perf_counter() - t0,
        "exit": proc.returncode,
        "peak_tree_gib": peak[0] / GiB,
        "peak_largest_process_gib": _largest(usage) / GiB,
        "tail": lines[-6:],
    }


def _largest(usage) -> int:
    """The largest high-water mark of the command and the processes it waited for (wait4's
    ru_maxrss, KiB): its largest single process."""
    return usage.ru_maxrss * 1024


def one_resolution(resolution: int, work: Path) -> dict:
    import torch
    from PIL import Image

    from ilo.engine.runtimes.memory_estimate import estimated_row_cost
    from ilo.generators.checkpoints.rosinality import to_rosinality
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    gen = random_stylegan2(config_f(resolution), seed=resolution)
    checkpoint = work / f"stylegan2_config_f_{resolution}.pt"
    torch.save(to_rosinality(gen), checkpoint)
    pictures = work / "in"
    pictures.mkdir(exist_ok=True)
    Image.open(FACE).convert("RGB").resize((resolution, resolution), Image.LANCZOS).save(pictures / "face.png")
    cache = work / "cache"
    env = {**os.environ, "ILO_CACHE_DIR": str(cache)}
    ilo = str(Path(sys.executable).parent / "ilo")
    export = phase([ilo, "export", "--model", str(checkpoint), "--warm", "inpaint"], env)
    restore = phase(
        [
            ilo,
            "restore",
            str(pictures),
            "--clean",
            "--task",
            "inpaint",
            "--centre-box",
            "0.5",
            "--model",
            str(checkpoint),
            "--steps",
            "2",
            "--out",
            str(work / "out"),
        ],
        env,
    )
    estimate = estimated_row_cost(gen)
    measured = [json.loads(p.read_text()) for p in sorted((cache / "memory").glob("*.json"))]
    bundles = sorted(
        p.name.rsplit("-", 1)[0] for p in (cache / "graphs").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    return {
        "resolution": resolution,
        "export": export,
        "restore": restore,
        "bundles": bundles,
        "estimated_step_gib": {"fixed": estimate.fixed / GiB, "per_row": estimate.per_row / GiB},
        "measured_step_gib": [
            {
                "fixed": m["fixed"] / GiB,
                "per_row": m["per_row"] / GiB,
                "task": m["key"]["task"],
                "end_stage": m["key"]["end_stage"],
            }
            for m in measured
        ],
    }


def report(runs: list[dict]) -> str:
    lines = [
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB of memory, nothing "
        f"else running. StyleGAN2 config-f with random weights as a rosinality checkpoint, default settings, an "
        f"empty cache: `ilo export --model M --warm inpaint`, then `ilo restore` of one picture with `--task inpaint "
        f"--centre-box 0.5 --steps 2` (default method, starts and memory budget). Peak memory: the whole process "
        f"tree (the command and every process it starts: their proportional set sizes summed, sampled every 0.1 s) and "
        f"its largest single process (high-water mark of resident memory).",
        "",
        "| resolution | phase | exit | wall time | peak, process tree | peak, largest process |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        for name in ("export", "restore"):
            p = r[name]
            lines.append(
                f"| {r['resolution']}² | {name} | {p['exit']} | {p['seconds']:.0f} s | {p['peak_tree_gib']:.2f} GiB | "
                f"{p['peak_largest_process_gib']:.2f} GiB |"
            )
    lines += [
        "",
        "What one step holds (GiB, fixed + per image and start): estimated from the shapes before any export "
        "(engine/runtimes/memory_estimate.py) against the memory probe's measurement.",
        "",
        "| resolution | estimate | measured (task, rounds to stage) | bundles exported |",
        "| --- | --- | --- | --- |",
    ]
    for r in runs:
        e = r["estimated_step_gib"]
        measured = "; ".join(
            f"{m['fixed']:.2f} + {m['per_row']:.2f} ({m['task']}, {m['end_stage']})" for m in r["measured_step_gib"]
        )
        lines.append(
            f"| {r['resolution']}² | {e['fixed']:.2f} + {e['per_row']:.2f} | {measured} | {', '.join(r['bundles'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    script = Script(__file__, __doc__)
    script.parser.add_argument("--resolutions", type=comma_ints, default="256,1024")
    args = script.parse(argv)
    runs = []
    for resolution in args.resolutions:
        print(f"{resolution}²:", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"ilo-real-{resolution}-") as work:
            runs.append(one_resolution(resolution, Path(work)))
    script.write("real_resolutions", report(runs), runs, machine_line("the ilo command, default settings"))
    failed = [f"{r['resolution']}² {p}" for r in runs for p in ("export", "restore") if r[p]["exit"]]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
