"""The learned start against a random one at equal steps: the embedded DCGAN's shipped encoder
(`ilo export --model default --encoder --encoder-steps 2000 --seed 0`) on generated faces from
seeds neither its training samples nor quality.py's set use, every task of quality.py, one start
each, ILO's rounds at a short and a longer round 0. Also the encoder alone (one forward pass).
A first measurement of the lever, not the time-to-quality verdict against ilo-auto (that is
time_to_quality.py's). A benchmark, not a test.

    python benchmarks/learned_start.py          # writes benchmarks/results/learned_start.{md,json}
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.quality import TASKS
from benchmarks.report import Script, comma_ints, machine_line
from ilo import load_generator
from ilo.engine.solver.encoder_cache import SHIPPED
from ilo.engine.api.restorer import method_config
from ilo.engine.problems.metrics import restoration_metrics
from ilo.engine.problems.tasks import name_seed
from ilo.engine.solver.encoder import learned_starts
from ilo.engine.solver.encoder_files import load_encoder
from ilo.engine.solver.ilo_solver import solve

SEED = 70_000  # far from the benchmark's 90_000.. and from the encoder's training stream


def main(argv=None) -> int:
    script = Script(__file__, __doc__, quick={"faces": 2, "steps": "3"})
    script.parser.add_argument("--faces", type=int, default=8)
    script.parser.add_argument(
        "--steps", type=comma_ints, default="30,100", help="round-0 steps to compare (later rounds: a third of it)"
    )
    args = script.parse(argv)
    gen = load_generator("default")
    encoder = load_encoder(SHIPPED, gen.fingerprint())
    names = [f"face{SEED + i}" for i in range(args.faces)]
    with torch.no_grad():
        truth = torch.cat(
            [
                gen.synthesize(torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(SEED + i)))
                for i in range(args.faces)
            ]
        )
    steps = args.steps
    rows = {}
    for task_name, task in TASKS.items():
        masks = torch.stack([task.built_in_mask(gen.resolution, n) for n in names]) if task.kind.takes_masks else None
        op = task.operator(gen.resolution, masks)
        y = task.measure(op, truth, names)
        seeds = [name_seed(0, n) for n in names]
        t0 = time.perf_counter()
        z = learned_starts(encoder, op, y, gen)
        encode_s = (time.perf_counter() - t0) / len(names)
        with torch.no_grad():
            alone = restoration_metrics(gen.synthesize(z), truth, op.observed)["psnr"]
        row = {"encoder alone": {"psnr": float(alone.mean()), "seconds_per_image": encode_s}}
        for s in steps:
            config = method_config("ilo", steps=[s, max(1, s // 3)], restarts=1, prune_starts_at=[])
            for label, starts in (("random", None), ("learned", z)):
                t0 = time.perf_counter()
                result = solve(y, op, gen, config, image_seeds=seeds, starts=starts)
                psnr = restoration_metrics(result.images, truth, op.observed)["psnr"]
                row[f"{label} start, {s} steps"] = {
                    "psnr": float(psnr.mean()),
                    "per_image": psnr.tolist(),
                    "seconds_per_image": (time.perf_counter() - t0) / len(names),
                }
        rows[task_name] = row
        print(task_name, {k: round(v["psnr"], 2) for k, v in row.items()}, file=sys.stderr, flush=True)
    columns = list(next(iter(rows.values())))
    lines = [
        f"Mean PSNR (dB) on {args.faces} generated faces (seeds {SEED}..{SEED + args.faces - 1}), "
        f"torch, one start each, ILO's three rounds with round 0 at the steps named and the later rounds at a third "
        f"of it; the learned start is the shipped encoder's.",
        "",
        "| task | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for task_name, row in rows.items():
        lines.append(f"| {task_name} | " + " | ".join(f"{row[c]['psnr']:.2f}" for c in columns) + " |")
    script.write("learned_start", "\n".join(lines), {"tasks": rows}, machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
