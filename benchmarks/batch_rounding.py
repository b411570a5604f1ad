"""How much a restored image depends on the batch it was solved in.

Each image's random starts and noise come from its name, so the maths is the same alone or in
any batch; what can differ is float rounding, where a CPU kernel sums in another order at
another batch size and Adam carries the difference along. This solves the same 8 faces as one
batch of 8, as two of 4 and one by one, per backend and task, and reports the largest pixel
difference from the one-by-one result (in [0, 1] units and in 8-bit levels) and the largest
PSNR difference.

    python benchmarks/batch_rounding.py     # writes benchmarks/results/batch_rounding.{md,json}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, comma_ints, comma_list, machine_line

TASKS = ("inpaint", "denoise")
SOLVER = {"steps": [100, 50], "restarts": 2}


FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "stylegan2_rosinality_32px.pt"
MODELS = {"dcgan-64 (default)": "default", "stylegan2-32 (test fixture)": str(FIXTURE)}


def faces(model: str, n: int) -> list[np.ndarray]:
    """n pictures the model itself makes (seeded): what it can restore exactly."""
    from ilo.engine.inputs.image_files import to_uint8
    from ilo.generators.checkpoints.files import load_generator

    gen = load_generator(model)
    with torch.no_grad():
        images = gen.synthesize(
            gen.latents_from_z(torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(77)))
        )
    return list(to_uint8(images))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def measure(model: str, backend: str, task: str, pictures: list[np.ndarray], solver: dict = SOLVER) -> dict:
    import ilo
    from ilo.engine.api.restorer import method_config

    params = {"centre_box": 0.5} if task == "inpaint" else {}
    r = ilo.Restorer(MODELS[model], task=task, backend=backend, config=method_config("ilo", **solver), **params)
    names = [f"face{i}" for i in range(len(pictures))]
    alone = [r.restore(p, names=[n])[0].tensor for p, n in zip(pictures, names)]
    truth = [torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pictures]
    row: dict = {"model": model, "backend": r.backend_name, "task": task}
    for size in (4, len(pictures)):
        batched = []
        for start in range(0, len(pictures), size):
            batched += [x.tensor for x in r.restore(pictures[start : start + size], names=names[start : start + size])]
        diff = max(float((a - b).abs().max()) for a, b in zip(alone, batched))
        levels = max(int(((a * 255).round() - (b * 255).round()).abs().max()) for a, b in zip(alone, batched))
        dpsnr = max(abs(psnr(a, t) - psnr(b, t)) for a, b, t in zip(alone, batched, truth))
        row[f"batch {size}"] = {
            "max_pixel_difference": diff,
            "max_8bit_levels": levels,
            "max_psnr_difference_db": dpsnr,
        }
        print(f"{model} {backend} {task} batch {size}: {row[f'batch {size}']}", file=sys.stderr, flush=True)
    return row


def report(result: dict) -> str:
    lines = [
        "# Batch-size dependence of results (benchmarks/batch_rounding.py)",
        "",
        f"{result['images']} pictures each model makes, ILO steps {','.join(map(str, result['solver']['steps']))} and 2 restarts; each image solved alone "
        "against in batches of 4 and 8.",
        "",
        "| model | backend | task | batch | max pixel difference ([0, 1]) | max 8-bit levels | max PSNR difference (dB) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        for key, v in row.items():
            if key.startswith("batch"):
                lines.append(
                    f"| {row['model']} | {row['backend']} | {row['task']} | {key.split()[1]} | {v['max_pixel_difference']:.2e} | "
                    f"{v['max_8bit_levels']} | {v['max_psnr_difference_db']:.2e} |"
                )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    script = Script(__file__, __doc__, quick={"images": 2, "backends": "torch", "steps": "2,1"})
    script.parser.add_argument("--images", type=int, default=8)
    script.parser.add_argument("--backends", type=comma_list, default="torch,onnxruntime")
    script.parser.add_argument("--steps", type=comma_ints, default="100,50", help="ILO's steps per round")
    args = script.parse(argv)
    rows, solver = [], {**SOLVER, "steps": args.steps}
    for model in MODELS:
        pictures = faces(MODELS[model], args.images)
        rows += [measure(model, b, t, pictures, solver) for b in args.backends for t in TASKS]
    result = {"images": args.images, "solver": solver, "rows": rows}
    script.write("batch_rounding", report(result), result, machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
