"""ILO on the engine against ILO on torch: 100 steps (rounds 0-2: 40 + 30 + 30),
one start, on the embedded DCGAN and the StyleGAN2 test fixture, inpainting and ×4
super-resolution, batch 1 and 4.

Three comparisons per case, each free-running (both solvers on their own; the worst relative
gap of the loss curves, and of the final images, max and l2):
- the engine (onnxruntime, CPU) against torch;
- torch against torch on the exported stages (the DCGAN's BatchNorm folded into its
  convolutions, as the graphs hold it; the same function up to float32 rounding);
- torch against torch with the measurements scaled by (1 + 1e-7·N(0, 1)).
The last two show how far float32-level changes alone carry an Adam trajectory.

    python benchmarks/equivalence.py           # writes benchmarks/results/equivalence.md
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, machine_line

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "stylegan2_rosinality_32px.pt"


def gaps(a, b) -> tuple[float, float, float]:
    curve = max(float(((p - q).abs() / q.abs()).max()) for p, q in zip(a.loss_curves, b.loss_curves))
    image_max = float((a.images - b.images).abs().max()) / float(b.images.abs().max())
    image_l2 = float((a.images - b.images).norm() / b.images.norm())
    return curve, image_max, image_l2


def main(argv=None) -> int:
    from ilo import load_generator
    from ilo.engine.problems.operators import Downsample, Inpainting
    from ilo.engine.runtimes.bridge import EngineGenerator
    from ilo.engine.solver.ilo_solver import ILOConfig, solve

    script = Script(__file__, __doc__)
    script.parse(argv)
    torch.set_num_threads(2)
    lines = [
        "# ILO on the engine (onnxruntime, CPU) against torch",
        "",
        "100 steps (40 + 30 + 30 over rounds 0-2), one start. Gaps are the worst over steps and images: loss curve "
        "|a − b| / |b| per step, final images max |a − b| / max |b| and l2. `torch folded`: torch against torch on the "
        "exported stages (DCGAN BatchNorm folded; StyleGAN2's stages are the same, so 0). `torch ± 1e-7`: torch "
        "against itself with the measurements scaled by (1 + 1e-7·N(0, 1)).",
        "",
        "| model | task | batch | learning rates | engine: curve | engine: image max / l2 | torch folded: curve / image l2 | torch ± 1e-7: curve / image l2 |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, source in (("dcgan", "default"), ("stylegan2 fixture", FIXTURE)):
        gen = load_generator(source)
        engine = EngineGenerator(gen, "onnxruntime")
        exported = copy.deepcopy(gen)
        exported.stages = torch.nn.ModuleList(gen.export_stages())
        res = gen.resolution
        x = gen.synthesize(
            gen.latents_from_z(torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(1)))
        ).clamp(-1, 1)
        for task in ("inpaint", "sr4"):
            for batch in (1, 4):
                op = Inpainting.centre_box(res, batch) if task == "inpaint" else Downsample(4)
                y = op.A(x[:batch])
                nudged = y * (1 + 1e-7 * torch.randn(y.shape, generator=torch.Generator().manual_seed(5)))
                for lr in ([0.1, 0.01], [0.05, 0.005]):
                    config = ILOConfig(steps=[40, 30, 30], lr=lr, restarts=1)
                    on_torch = solve(y, op, gen, config)
                    engine_gap = gaps(solve(y, op, engine, config), on_torch)
                    fold_gap = gaps(solve(y, op, exported, config), on_torch)
                    nudge_gap = gaps(solve(nudged, op, gen, config), on_torch)
                    row = (
                        f"| {name} | {task} | {batch} | {lr[0]}, {lr[1]} | {engine_gap[0]:.1e} | {engine_gap[1]:.1e} / {engine_gap[2]:.1e} | "
                        f"{fold_gap[0]:.1e} / {fold_gap[2]:.1e} | {nudge_gap[0]:.1e} / {nudge_gap[2]:.1e} |"
                    )
                    print(row, file=sys.stderr, flush=True)
                    lines.append(row)
    script.write("equivalence", "\n".join(lines), None, machine_line("torch eager against onnxruntime"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
