"""Weight-free baselines from DeepInverse: total variation and wavelet (l1, db4, 3 levels) priors,
solved by FISTA on deepinv's L2 data fidelity, for every task of `benchmarks/quality.py`.

Fairly tuned: the regularisation weight lambda is swept per task and prior on a tuning set that
shares no image with the benchmark (faces the generator makes from other held-out seeds, and two
real photographs from scikit-image that are not faces: the cat and the coffee cup), and the best
mean PSNR picks it. The chosen values and the whole sweep are written to
`benchmarks/results/classical_priors.{json,md}`; `quality.py` reads them (and tunes first where
they are missing).

    python benchmarks/classical_priors.py                  # tune every task (about 15 min here)
    python benchmarks/classical_priors.py --tasks sr-x4
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import RESULTS, Script, machine_line

PRIORS = ("tv", "wavelet")
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
MAX_ITER, TOLERANCE = 300, 1e-5
TUNING_SEED = 95_000  # generated tuning faces: far from the benchmark's held-out seeds (90_000...)


def make_prior(name: str):
    import deepinv as dinv

    if name == "tv":
        return dinv.optim.TVPrior(n_it_max=20)  # the prox's inner iterations (warm-started by deepinv)
    if name == "wavelet":
        # reflect padding: with zero or symmetric padding db4's border coefficients make FISTA
        # drift (x4 SR on the tuning set: 19.2-20.2 dB against 24.4). deepinv's FISTA hands the
        # prox its g_param positionally, so the threshold stays 0.1 * stepsize * lambda.
        return dinv.optim.WaveletPrior(level=3, wv="db4", p=1, mode="reflect")
    raise ValueError(f"unknown prior '{name}' (choose from {', '.join(PRIORS)})")


def restore(prior: str, op, y: torch.Tensor, lam: float, resolution: int) -> tuple[torch.Tensor, float]:
    """FISTA on 1/2 ||A x - y||^2 + lam R(x) for [0, 1] images, from the adjoint (the unobserved
    pixels of an inpainting set to the observed mean, so the prior does not start from black;
    compressed sensing from mid-grey, as its adjoint is far outside [0, 1]).
    `op` is this project's operator and y its measurements of [-1, 1] images, as the other
    methods get them; returns [-1, 1] images and the seconds taken."""
    import deepinv as dinv

    from ilo.engine.problems.deepinv_physics import OperatorPhysics

    t0 = time.perf_counter()
    shape = (3, resolution, resolution)
    physics = OperatorPhysics(op, shape)
    with torch.no_grad():
        y_unit = (y + op.A(torch.ones(1, *shape))) / 2  # the inverse of generator_measurements
        x0 = physics.A_adjoint(y_unit)
        if y.ndim == 2:  # a vector of measurements: compressed sensing
            x0 = torch.full_like(x0, 0.5)
        elif op.observed is not None:
            mask = op.observed.expand_as(x0)
            mean = (x0 * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1)
            x0 = mask * x0 + (1 - mask) * mean
        norm = float(physics.compute_norm(torch.rand_like(x0), verbose=False))  # ||A||^2 by power iteration
        solver = dinv.optim.FISTA(
            data_fidelity=dinv.optim.L2(),
            prior=make_prior(prior),
            lambda_reg=lam,
            stepsize=1.0 / norm,
            max_iter=MAX_ITER,
            early_stop=True,
            thres_conv=TOLERANCE,
        )
        x = solver(y_unit, physics, init=(x0, x0.clone())).clamp(0, 1)  # FISTA keeps (x, z)
    return x * 2 - 1, time.perf_counter() - t0


def tuning_set(gen, generated: int = 4) -> tuple[list[str], torch.Tensor]:
    """Faces from seeds the benchmark never uses, plus two real non-face photographs."""
    names, images = [], []
    for i in range(generated):
        z = torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(TUNING_SEED + i))
        with torch.no_grad():
            images.append(gen.synthesize(z) if not gen.has_mapping else gen.synthesize(gen.latents_from_z(z[:, 0])))
        names.append(f"tune{i:02d}")
    try:
        from PIL import Image
        from skimage import data

        for name in ("chelsea", "coffee"):
            pixels = getattr(data, name)()
            side = min(pixels.shape[:2])
            top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
            square = Image.fromarray(pixels[top : top + side, left : left + side])
            array = np.asarray(square.resize((gen.resolution, gen.resolution), Image.Resampling.LANCZOS), np.float32)
            images.append(torch.from_numpy(array / 127.5 - 1).permute(2, 0, 1)[None])
            names.append(name)
    except ImportError:  # scikit-image is in the test extra; without it the set is faces only
        print("classical_priors: scikit-image missing, tuning on generated faces only", file=sys.stderr)
    return names, torch.cat(images)


def tune(
    gen, task_names: list[str], out: Path = RESULTS, priors: tuple[str, ...] = PRIORS, command: str | None = None
) -> dict:
    """Sweep lambda per task and prior on the tuning set; write and return the choices (the
    other priors' earlier sweeps are kept). command: what ran it, for the files' header."""
    from benchmarks.quality import degraded  # imported here: quality.py imports this module

    from ilo.engine.problems.metrics import restoration_metrics

    names, truth = tuning_set(gen)
    path = out / "classical_priors.json"
    report = json.loads(path.read_text()) if path.is_file() else {"chosen": {}, "sweep": {}}
    report.update(tuning_set=names, lambdas=list(LAMBDAS), max_iter=MAX_ITER, tolerance=TOLERANCE)
    report.update(
        command=command or "python benchmarks/quality.py (tuning the tasks it found untuned)",
        date=time.strftime("%Y-%m-%d"),
        machine=machine_line(),
    )
    for task in task_names:
        op, y, _ = degraded(gen, task, names, truth)
        for prior in priors:
            sweep = {}
            for lam in LAMBDAS:
                images, seconds = restore(prior, op, y, lam, gen.resolution)
                sweep[str(lam)] = float(restoration_metrics(images, truth)["psnr"].mean())
                print(
                    f"  tune {task:12s} {prior:8s} lambda {lam:g}: {sweep[str(lam)]:.2f} dB ({seconds:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
            report["sweep"].setdefault(task, {})[prior] = sweep
            report["chosen"].setdefault(task, {})[prior] = float(max(sweep, key=lambda k: sweep[k]))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    (out / "classical_priors.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lambdas = report["lambdas"]
    lines = [f"`{report['command']}` ({report['date']}; {report['machine']}).", ""] if "command" in report else []
    lines += [
        (
            f"Lambda sweep of the DeepInverse priors (FISTA, at most {report['max_iter']} iterations) on the "
            f"tuning set {', '.join(report['tuning_set'])}: mean PSNR (dB); the best is chosen (bold)."
        ),
        "",
        "| task | prior | " + " | ".join(f"λ={v:g}" for v in lambdas) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in lambdas) + " |",
    ]
    for task, by_prior in report["sweep"].items():
        for prior, sweep in by_prior.items():
            best = report["chosen"][task][prior]
            cells = [
                "–" if str(v) not in sweep else f"**{sweep[str(v)]:.2f}**" if v == best else f"{sweep[str(v)]:.2f}"
                for v in lambdas
            ]
            lines.append(f"| {task} | {prior} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chosen_lambdas(gen, task_names: list[str], out: Path = RESULTS) -> dict:
    """The tuned lambda per task and prior; tasks not yet tuned are tuned now."""
    path = out / "classical_priors.json"
    report = json.loads(path.read_text()) if path.is_file() else {"chosen": {}}
    missing = [t for t in task_names if set(report["chosen"].get(t, {})) != set(PRIORS)]
    if missing:
        report = tune(gen, missing, out)
    return report["chosen"]


def main(argv=None) -> int:
    from benchmarks.quality import TASKS
    from ilo import load_generator

    script = Script(__file__, __doc__, quick={"tasks": "denoise-0.1", "priors": "tv"})
    script.add_list("--tasks", TASKS)
    script.add_list("--priors", PRIORS, "the priors to (re)tune; the others' sweeps are kept")
    args = script.parse(argv)
    report = tune(load_generator("default"), args.tasks, args.out, tuple(args.priors), script.command)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
