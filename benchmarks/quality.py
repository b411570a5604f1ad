"""Restoration quality of ILO against CSGM, PULSE-style, BM3D and DeepInverse's weight-free TV and
wavelet priors (`classical_priors.py`, tuned on images outside this set) on the embedded DCGAN.

A benchmark, not a test: it prints and writes a Markdown table, a JSON of every per-image
number (mean ± std per task and method), a labelled figure grid of examples (PSNR under each
tile), and the paper's Fig. 2: the measurement loss against the step, ILO's rounds against CSGM
and PULSE on the same image.

Ground truths: faces the DCGAN generates from held-out seeds (never the solver's seeds), and one
real photograph that ships with the repository, `examples/faces/astronaut.png`: the astronaut
portrait (Eileen Collins, NASA, public domain) from scikit-image's `skimage.data.astronaut`,
cropped to the face and resized to 64px by `examples/make_faces.py`.

    python benchmarks/quality.py                       # everything, writes benchmarks/results/
    python benchmarks/quality.py --tasks inpaint-box --methods ilo,csgm --generated 4
    python benchmarks/quality.py --ilo '{"steps": [400, 100]}'   # try other ILO settings
    python benchmarks/quality.py --redraw              # the loss curves again, from quality.json
    python benchmarks/quality.py --set out-of-range    # the second section of quality.md, quality_ood.json

Each set is a section of quality.md, replaced by its run and the other's kept; each has its own
JSON (held_out.py reads both); the figures are the in-range set's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.classical_priors import PRIORS, chosen_lambdas
from benchmarks.out_of_range import out_of_range_truths
from benchmarks.report import METHOD_COLOURS, Script, comma_list, machine_line
from ilo import load_generator
from ilo.engine.runs.figures import labelled_grid, loss_chart
from ilo.engine.inputs.image_files import read_image, to_uint8
from ilo.engine.api.restorer import method_config
from ilo.engine.problems.metrics import mean_and_std, restoration_metrics
from ilo.engine.problems.tasks import TaskSpec, name_seed
from ilo.engine.solver.baselines import bm3d_denoise
from ilo.engine.solver.classical import fista_restore
from ilo.engine.solver.ilo_solver import solve

TASKS = {  # name -> the task, as `ilo restore --clean` would set it up
    "inpaint-box": TaskSpec("inpaint", centre_box=0.5),
    "inpaint-10%": TaskSpec("inpaint", keep=0.1),
    "sr-x4": TaskSpec("sr", factor=4),
    "denoise-0.1": TaskSpec("denoise", sigma=0.1),
    "cs-0.1": TaskSpec("cs", ratio=0.1),
}
METRICS = ("psnr", "psnr_hole", "mse_observed", "ssim", "seconds")
PHOTO = Path(__file__).resolve().parent.parent / "examples" / "faces" / "astronaut.png"
HELD_OUT_SEED = 90_000  # ground-truth latents; solver seeds come from image names instead


def ground_truths(gen, generated: int, real: bool, out_of_range: bool = False) -> tuple[list[str], torch.Tensor, str]:
    """Generated faces (or, `out_of_range`, faces pushed out of the generator's range) and the
    real photograph last."""
    names, images = [], []
    for i in range(0 if out_of_range else generated):
        z = torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(HELD_OUT_SEED + i))
        with torch.no_grad():
            images.append(gen.synthesize(z) if not gen.has_mapping else gen.synthesize(gen.latents_from_z(z[:, 0])))
        names.append(f"gen{i:02d}")
    note = f"{generated} generated faces (held-out seeds {HELD_OUT_SEED}..{HELD_OUT_SEED + generated - 1})"
    if out_of_range:
        names, transformed, note = out_of_range_truths(gen)
        images = [transformed]
    if real:
        photo = astronaut_face(gen.resolution)
        if photo is None:
            note += f"; the real photograph was skipped ({PHOTO} is missing or not {gen.resolution}px)"
        else:
            images.append(photo)
            names.append("astronaut")
            note += " + 1 real photograph (examples/faces/astronaut.png: NASA's public-domain portrait from scikit-image, face crop)"
    return names, torch.cat(images), note


def astronaut_face(size: int) -> torch.Tensor | None:
    if not PHOTO.is_file():
        return None
    photo = read_image(PHOTO)
    return photo[None] if photo.shape[-1] == size else None


def degraded(gen, task_name: str, names, truth):
    """The task's operator, the measurements of the ground truths and the solver seeds, as
    `ilo restore --clean` would make them."""
    task = TASKS[task_name]
    masks = torch.stack([task.built_in_mask(gen.resolution, n) for n in names]) if task.kind.takes_masks else None
    op = task.operator(gen.resolution, masks)
    return op, task.measure(op, truth, names), [name_seed(0, n) for n in names]


def run_task(
    gen, task_name: str, names, truth, methods, ilo_overrides, lambdas: dict | None = None, example: int = -1
) -> dict:
    """Every method on one task; `lambdas` the tuned weights of the classical priors; the loss
    curves kept are image `example`'s."""
    task = TASKS[task_name]
    res = gen.resolution
    op, y, seeds = degraded(gen, task_name, names, truth)
    rows, images, curves = {}, {"truth": truth}, {}
    for method in methods:
        if method == "bm3d":
            if not task.kind.bm3d:
                continue
            restored, seconds = bm3d_denoise(y, task.sigma)
        elif method in PRIORS:
            assert lambdas is not None
            restored, seconds = fista_restore(method, op, y, lambdas[task_name][method], res)
        else:
            config = method_config(method, **(ilo_overrides if method == "ilo" else {}))
            result = solve(y, op, gen, config, image_seeds=seeds)
            restored, seconds = result.images, result.seconds["total"]
            curves[method] = [c[:, example].tolist() for c in result.measurement_curves]  # per round
        metrics = restoration_metrics(restored, truth, op.observed)
        per_image = {k: [float(v) for v in values] for k, values in metrics.items()}
        per_image["seconds"] = [seconds / len(names)] * len(names)
        rows[method] = per_image
        images[method] = restored
        print(
            f"  {task_name:12s} {method:6s} psnr {np.mean(per_image['psnr']):6.2f}"
            + (f"  hole {np.mean(per_image['psnr_hole']):6.2f}" if "psnr_hole" in per_image else "")
            + f"  ({seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    if not task.kind.vector_measurements:
        images["measured"] = (
            y if y.shape[-1] == res else torch.nn.functional.interpolate(y, size=(res, res), mode="nearest")
        )
    return {"per_image": rows, "images": images, "curves": curves}


def summarise(per_image: dict) -> dict:
    return {k: mean_and_std(v) for k, v in per_image.items() if k in METRICS}


def markdown(results: dict, note: str) -> str:
    lines = [
        f"Ground truths: {note}. Mean ± std over images; PSNR and SSIM on [0, 1] pixels;",
        "hole = PSNR inside the missing region; obs. MSE = MSE on the observed pixels.",
        "",
        "| task | method | PSNR (dB) | PSNR hole (dB) | obs. MSE | SSIM | s / image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task_name, by_method in results.items():
        for method, s in by_method.items():

            def cell(key, fmt):
                return f"{s[key]['mean']:{fmt}} ± {s[key]['std']:{fmt}}" if key in s else "–"

            lines.append(
                f"| {task_name} | {method} | {cell('psnr', '.2f')} | {cell('psnr_hole', '.2f')} | "
                f"{cell('mse_observed', '.1e')} | {cell('ssim', '.3f')} | {cell('seconds', '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def verdicts(results: dict) -> list[str]:
    """The in-range targets: ILO above CSGM on full-image PSNR for every task, and not
    more than 0.5 dB below it inside the inpainting hole."""
    out = []
    for task_name, s in results.items():
        if "ilo" not in s or "csgm" not in s:
            continue
        gain = s["ilo"]["psnr"]["mean"] - s["csgm"]["psnr"]["mean"]
        line = f"{task_name}: ILO - CSGM full PSNR {gain:+.2f} dB"
        ok = gain > 0
        if "psnr_hole" in s["ilo"]:
            hole = s["ilo"]["psnr_hole"]["mean"] - s["csgm"]["psnr_hole"]["mean"]
            line += f", hole {hole:+.2f} dB"
            ok = ok and hole >= -0.5
        out.append(("PASS " if ok else "MISS ") + line)
    return out


def ood_verdicts(results: dict) -> list[str]:
    """The targets out of range: denoising ILO >= BM3D; inpainting ILO >= the best other
    method +1 dB in the hole and +2 dB full; SR and CS ILO >= the best other method +2 dB."""
    out = []
    for task_name, s in results.items():
        if "ilo" not in s:
            continue
        others = {m: v for m, v in s.items() if m != "ilo"}
        if not others:
            continue
        ilo = s["ilo"]["psnr"]["mean"]
        best = max(others, key=lambda m: others[m]["psnr"]["mean"])
        if task_name.startswith("denoise"):
            ref = "bm3d" if "bm3d" in others else best
            gap, need = ilo - others[ref]["psnr"]["mean"], 0.0
            line = f"{task_name}: ILO - {ref} {gap:+.2f} dB (target >= {need:+.1f})"
            ok = gap >= need
        else:
            need = 2.0
            gap = ilo - others[best]["psnr"]["mean"]
            line = f"{task_name}: ILO - best other ({best}) full {gap:+.2f} dB (target >= +2.0)"
            ok = gap >= need
            if "psnr_hole" in s["ilo"]:
                best_hole = max(others, key=lambda m: others[m]["psnr_hole"]["mean"])
                hole = s["ilo"]["psnr_hole"]["mean"] - others[best_hole]["psnr_hole"]["mean"]
                line += f", hole {hole:+.2f} dB vs {best_hole} (target >= +1.0)"
                ok = ok and hole >= 1.0
        out.append(("PASS " if ok else "MISS ") + line)
    return out


def figure(examples: dict, methods: list[str]):
    """Rows: one example image per task (the last: the real photograph); columns: measured, each
    method, truth (blank where a method does not apply); its PSNR under each restored tile."""
    columns = ["measured", *methods, "truth"]
    tiles, captions = [], []
    for images in examples.values():
        truth = images["truth"][:1]
        tiles.append([to_uint8(images[k][:1])[0] if k in images else None for k in columns])
        captions.append(
            [
                f"{float(restoration_metrics(images[k][:1], truth)['psnr'][0]):.2f} dB"
                if k in images and k not in ("truth", "measured")
                else None
                for k in columns
            ]
        )
    return labelled_grid(tiles, list(examples), columns, captions)


def loss_figure(curves: dict, task_name: str, image_name: str):
    """The paper's Fig. 2: measurement loss (MSE on what is observed) against the step, ILO's
    rounds one after another (each round's start marked) against CSGM and PULSE."""
    chart = loss_chart(
        {method.upper(): rounds for method, rounds in curves.items()},
        f"{task_name}, {image_name}: measurement loss per step",
        "measurement loss (MSE, observed pixels)",
        colours={m.upper(): c for m, c in METHOD_COLOURS.items()},
    )
    _readable_log_axis(chart.axes[0])
    return chart


def _readable_log_axis(ax) -> None:
    """Over more than a decade or so the log axis names only its powers of ten, here a single
    0.1: name the 2s and 5s between them too; and lift the top, so the round labels along it
    clear the curves, which all start at their highest loss."""
    from matplotlib.ticker import FuncFormatter

    if ax.get_yscale() != "log":
        return
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_ylim(lo, hi * (hi / lo) ** 0.08)


def prior_lines(results: dict) -> list[str]:
    """Where the weight-free priors beat the generator methods (mean PSNR per task)."""
    out = []
    for task_name, s in results.items():
        priors = {m: s[m]["psnr"]["mean"] for m in PRIORS if m in s}
        generators = {m: s[m]["psnr"]["mean"] for m in ("ilo", "csgm", "pulse") if m in s}
        if not priors or not generators:
            continue
        best_prior = max(priors, key=lambda m: priors[m])
        beaten = [m for m, v in generators.items() if priors[best_prior] > v]
        verdict = f"beats {', '.join(beaten)}" if beaten else "beats no generator method"
        out.append(
            f"{task_name}: best prior {best_prior} {priors[best_prior]:.2f} dB {verdict} "
            f"(ILO {generators.get('ilo', float('nan')):.2f} dB)"
        )
    return out


def photo_lines(raw: dict, names: list[str]) -> list[str]:
    """The real photograph's own numbers: generated ground truths flatter generator methods."""
    if "astronaut" not in names:
        return []
    i = names.index("astronaut")
    lines = ["", "Real photograph alone (PSNR full / in the hole, dB):", ""]
    for task_name, by_method in raw.items():
        cells = [
            f"{m} {v['psnr'][i]:.2f}" + (f" / {v['psnr_hole'][i]:.2f}" if "psnr_hole" in v else "")
            for m, v in by_method.items()
        ]
        lines.append(f"- {task_name}: " + ", ".join(cells))
    return lines


# --set -> its section of quality.md, its JSON (held_out.py reads both) and its figures' prefix,
# None for a set whose figures are not among the results
SECTIONS = {
    "in-range": ("In range (the default set)", "quality", "quality"),
    "out-of-range": (
        "Out of the generator's range (`--set out-of-range`; every number in quality_ood.json)",
        "quality_ood",
        None,
    ),
}


def arguments(argv) -> tuple[Script, argparse.Namespace]:
    script = Script(
        __file__,
        __doc__,
        quick={
            "tasks": "sr-x4",
            "methods": "ilo",
            "generated": 2,
            "curve_task": "sr-x4",
            "ilo": '{"steps": [4, 2]}',
        },
        redraw="quality",
    )
    p = script.parser
    script.add_list("--tasks", TASKS)
    p.add_argument("--methods", type=comma_list, default="ilo,csgm,pulse,bm3d,tv,wavelet")
    p.add_argument("--curve-task", default="inpaint-box", help="the task of the loss-per-step figure (Fig. 2)")
    p.add_argument(
        "--set",
        choices=("in-range", "out-of-range"),
        default="in-range",
        help="generated faces, or faces pushed out of the generator's range (each its section of quality.md)",
    )
    p.add_argument("--generated", type=int, default=8, help="generated ground truths (in-range)")
    p.add_argument("--no-real", action="store_true", help="leave out the real photograph")
    p.add_argument("--example", default=None, help="the image the figures show (default: the last, the photograph)")
    p.add_argument("--ilo", default="{}", help="JSON of ILOConfig overrides, for tuning")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return script, script.parse(argv)


def main(argv=None) -> int:
    script, args = arguments(argv)
    if args.redraw:
        redraw(script, args)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator("default")
    ood = args.set == "out-of-range"
    names, truth, note = ground_truths(gen, args.generated, not args.no_real, out_of_range=ood)
    example = names.index(args.example) if args.example in names else len(names) - 1
    methods, task_names = args.methods, args.tasks
    ilo_overrides = json.loads(args.ilo)
    lambdas = chosen_lambdas(gen, task_names, args.out) if any(m in PRIORS for m in methods) else None
    results, raw, examples, curves = {}, {}, {}, {}
    t0 = time.perf_counter()
    for task_name in task_names:
        out = run_task(gen, task_name, names, truth, methods, ilo_overrides, lambdas, example)
        results[task_name] = {m: summarise(v) for m, v in out["per_image"].items()}
        raw[task_name] = out["per_image"]
        examples[task_name] = {k: v[example : example + 1] for k, v in out["images"].items()}
        curves[task_name] = out["curves"]
    checks = ood_verdicts(results) if ood else verdicts(results)
    machine = machine_line()
    record = {
        "ground_truths": note,
        "names": names,
        "ilo_overrides": ilo_overrides,
        "ilo_config": vars(method_config("ilo", **ilo_overrides)),
        "summary": results,
        "per_image": raw,
        "checks": checks,
        "prior_lambdas": lambdas,
        "measurement_curves": curves,
        "seconds_total": time.perf_counter() - t0,
    }
    text = tables(results, raw, names, note, lambdas) + "\n" + "\n".join(f"- {c}" for c in checks) + "\n"
    heading, stem, figures = SECTIONS[args.set]
    script.write_section("quality", heading, text, record, machine, json_stem=stem)
    if figures:
        script.save_figure(figure(examples, methods), f"{figures}_examples.png", machine)
        if curves.get(args.curve_task):
            chart = loss_figure(curves[args.curve_task], args.curve_task, names[example])
            script.save_figure(chart, f"{figures}_loss_curves.png", machine)
    return 0


def redraw(script: Script, args: argparse.Namespace) -> None:
    """The loss-curves figure again from the saved JSON, which holds the curves of the example
    image; not the examples grid, whose restored images the JSON does not hold."""
    _, stem, figures = SECTIONS[args.set]
    if not figures:
        raise SystemExit(f"quality: the {args.set} set has no figures to redraw")
    saved = script.saved(stem)
    curves = saved.get("measurement_curves", {}).get(args.curve_task)
    if not curves:
        raise SystemExit(f"quality: {stem}.json holds no loss curves for {args.curve_task}")
    names = saved["names"]
    example = args.example if args.example in names else names[-1]  # as measured: the last image by default
    script.save_figure(loss_figure(curves, args.curve_task, example), f"{figures}_loss_curves.png", saved["machine"])
    print(f"quality: {figures}_examples.png is not redrawn: the JSON holds no images", file=sys.stderr)


def tables(results: dict, raw: dict, names: list[str], note: str, lambdas: dict | None) -> str:
    """The Markdown: the summary table, the photograph's own numbers and the priors' weights."""
    table = markdown(results, note) + "\n".join(photo_lines(raw, names)) + "\n"
    if lambdas is not None:
        table += (
            "\nDeepInverse priors (FISTA; lambda tuned on images outside this set, "
            "classical_priors.md): "
            + "; ".join(f"{t} " + ", ".join(f"{m} {lam:g}" for m, lam in lambdas[t].items()) for t in results)
            + ".\n"
        )
        table += "\n".join(f"- {line}" for line in prior_lines(results)) + "\n"
    return table


if __name__ == "__main__":
    sys.exit(main())
