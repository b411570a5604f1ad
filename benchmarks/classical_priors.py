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
from ilo.engine.solver import classical
from ilo.engine.solver.classical import MAX_ITER, TOLERANCE, make_prior  # noqa: F401  (make_prior: re-exported)
from ilo.engine.solver.classical import fista_restore as restore  # the engine's own solve, as `--method tv` runs it

PRIORS = tuple(classical.PRIORS)
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
PACKAGE_TABLE = Path(__file__).resolve().parents[1] / "ilo" / "assets" / classical.WEIGHTS_FILE
TUNING_SEED = 95_000  # generated tuning faces: far from the benchmark's held-out seeds (90_000...)


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
    if out == RESULTS:  # the committed choices are what `--method tv|wavelet` runs at
        PACKAGE_TABLE.write_text(json.dumps(package_table(report, gen.resolution), indent=1) + "\n")
    return report


def package_table(report: dict, resolution: int = 64) -> dict:
    """The chosen weights as the package ships them (ilo/assets/classical_weights.json): per task,
    each tuned case with its measurement share, by which the engine picks a case for a user's
    problem (`ilo.engine.solver.classical.tuned_weight`). `resolution`: the tuning model's."""
    from benchmarks.quality import TASKS

    tasks: dict[str, list] = {}
    for case, weights in report["chosen"].items():
        task = TASKS[case]
        masks = task.built_in_mask(resolution, case)[None] if task.kind.takes_masks else None
        op = task.operator(resolution, masks)
        y = op.A(torch.zeros(1, 3, resolution, resolution))
        share = round(classical.measurement_share(op, y, resolution), 4)
        tasks.setdefault(task.task, []).append({"case": case, "share": share, "weights": weights})
    source = "benchmarks/results/classical_priors.json, the choices of benchmarks/classical_priors.py"
    return {"written from": source, "tasks": tasks}


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
