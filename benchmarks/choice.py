"""The per-image choice (`--method choose`) against ilo-auto (the default before it) and each
classical method alone, on the quality sets, and the estimator it chooses by, measured.

Every method runs as `ilo restore` runs it: through `ilo.Restorer` on the default engine, ilo-auto
from the shipped encoder's learned start. Per task and set it reports the mean PSNR of each
method, of the choice and of the oracle that picks each image's best method knowing the truth;
the regret (dB the choice loses against that oracle); the rank correlation between the estimated
and the true error across images and candidates; and the time of the choice against ilo-auto's,
in this one run.

    python benchmarks/choice.py                         # in range, out of range, untuned: choice.{md,json}
    python benchmarks/choice.py --sets out-of-range --tasks denoise-0.1
    python benchmarks/choice.py --quick                 # a check that it runs (/tmp)

The untuned set (`untuned_set.py`) holds images no setting was chosen on: fresh seeds, other
transforms, the photograph mirrored and zoomed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.quality import TASKS, astronaut_face, degraded, ground_truths
from benchmarks.report import Script, comma_list, machine_line
from benchmarks.untuned_set import untuned_truths
from ilo import Restorer, load_generator
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.held_out import split_measurements
from ilo.engine.problems.metrics import restoration_metrics
from ilo.engine.problems.tasks import name_seed
from ilo.engine.solver.baselines import bm3d_denoise
from ilo.engine.solver.config import AUTO_DEPTH
from ilo.engine.solver.error_estimates import PROBE_STEP, denoiser_estimate

SINGLE = ("ilo-auto", "tv", "wavelet", "bm3d")  # the candidates, each also run alone
SETS = ("in-range", "out-of-range", "untuned")
PROBE_STEPS = (0.01, PROBE_STEP)  # the usual hundredth of the noise std, and the step the estimate takes
TOLERANCE = {"best_single": 0.2, "regret": 0.5, "in_range_loss": 0.1, "time": 1.3}


def truths(gen, which: str) -> tuple[list[str], torch.Tensor, str]:
    if which == "untuned":
        return untuned_truths(gen, astronaut_face(gen.resolution))
    return ground_truths(gen, 8, True, out_of_range=which == "out-of-range")


def batch_of(gen, task_name: str, names: list[str], truth: torch.Tensor):
    """The task's measurements of the truths as prepared inputs (named as files would be: the
    solver's seeds come from the names), and the operator that made them."""
    op, y, _ = degraded(gen, task_name, names, truth)
    masks = getattr(op, "mask", None)
    batch = [
        Prepared(n, y[i : i + 1], None if masks is None else masks[i : i + 1], truth[i : i + 1])
        for i, n in enumerate(names)
    ]
    return batch, op


def run_method(gen, task_name: str, method: str, batch: list[Prepared], backend: str):
    restorer = Restorer(gen, TASKS[task_name], method, backend, quiet=True)  # warmed: no export is timed
    t0 = time.perf_counter()
    result = restorer.solve(batch)
    return result, time.perf_counter() - t0


def run_set(gen, which: str, tasks: list[str], backend: str) -> dict:
    names, truth, note = truths(gen, which)
    out = {"note": note, "names": names, "tasks": {}}
    for task_name in tasks:
        batch, op = batch_of(gen, task_name, names, truth)
        record: dict[str, Any] = {"psnr": {}, "mse": {}, "seconds": {}}
        bm3d_images = None
        for method in (*SINGLE, "choose"):
            if method == "bm3d" and not TASKS[task_name].kind.bm3d:
                continue
            result, seconds = run_method(gen, task_name, method, batch, backend)
            metrics = restoration_metrics(result.images, truth, op.observed)
            record["psnr"][method] = [float(v) for v in metrics["psnr"]]
            if "psnr_hole" in metrics and task_name == "inpaint-box":
                record.setdefault("psnr_hole", {})[method] = [float(v) for v in metrics["psnr_hole"]]
            record["mse"][method] = [float(v) for v in (result.images - truth).square().flatten(1).mean(1)]
            record["seconds"][method] = seconds / len(names)
            if method == "bm3d":
                bm3d_images = result.images
            if method == "choose":
                record["chosen"], record["estimated_error"] = result.chosen, result.estimated_error
                record["choice_note"] = result.choice_note
            shown = f"{np.mean(record['psnr'][method]):6.2f} dB ({seconds:.1f}s)"
            print(f"  {which:12s} {task_name:12s} {method:8s} {shown}", file=sys.stderr, flush=True)
        record.update(scores(record))
        if bm3d_images is not None:
            record["probe"] = probe_study(op, batch, truth, bm3d_images)
        out["tasks"][task_name] = record
    return out


def probe_study(op, batch: list[Prepared], truth: torch.Tensor, denoised: torch.Tensor) -> dict:
    """BM3D's SURE on the held-out share at each probe step: how far two probes' estimates lie
    apart, and how far their mean lies from BM3D's true error on those pixels (mean over images,
    MSE of [-1, 1] images)."""
    y = torch.cat([b.y for b in batch])
    seeds = [name_seed(0, b.stem) for b in batch]
    judge = split_measurements(op, y, AUTO_DEPTH["hold_out"], seeds)[2]
    keep = judge.keep.expand_as(truth)
    true = ((denoised - truth).square() * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)
    out = {}
    for step in PROBE_STEPS:
        two = [
            denoiser_estimate(judge, lambda v: bm3d_denoise(v, op.sigma)[0], y, denoised, seeds, step, seed)
            for seed in (1, 2)
        ]
        out[str(step)] = {
            "spread": float((two[0] - two[1]).abs().mean()),
            "bias": float(((two[0] + two[1]) / 2 - true).mean()),
        }
    return out


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (no ties expected among float errors)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


def scores(record: dict) -> dict:
    """The oracle over the single methods, the choice's regret against it, and the estimator's
    rank correlation with the true error (the candidates' own runs: what the choice returns)."""
    singles = [m for m in SINGLE if m in record["psnr"]]
    table = np.array([record["psnr"][m] for m in singles])
    oracle = table.max(0)
    regret = oracle - np.array(record["psnr"]["choose"])
    estimates, errors = [], []
    for i, per_image in enumerate(record["estimated_error"] or []):
        for method, value in per_image.items():
            estimates.append(value)
            errors.append(record["mse"][method][i])
    return {
        "oracle": oracle.tolist(),
        "regret": regret.tolist(),
        "rho": rank_correlation(estimates, errors) if estimates else None,
    }


def verdicts(which: str, tasks: dict) -> list[str]:
    out = []
    for task_name, r in tasks.items():
        mean = {m: float(np.mean(v)) for m, v in r["psnr"].items()}
        best = max((m for m in mean if m != "choose"), key=lambda m: mean[m])
        gap = mean["choose"] - mean[best]
        ok = gap >= -TOLERANCE["best_single"]
        line = f"{which}, {task_name}: choose - best single ({best}) {gap:+.2f} dB"
        if "psnr_hole" in r:
            hole = {m: float(np.mean(v)) for m, v in r["psnr_hole"].items()}
            best_hole = max((m for m in hole if m != "choose"), key=lambda m: hole[m])
            line += f", hole {hole['choose'] - hole[best_hole]:+.2f} vs {best_hole}"
            ok = ok and hole["choose"] - hole[best_hole] >= -TOLERANCE["best_single"]
        regret = float(np.mean(r["regret"]))
        line += f" (target >= -0.2); regret {regret:.2f} dB (target <= 0.5)"
        ok = ok and regret <= TOLERANCE["regret"]
        if which == "in-range":
            loss = mean["choose"] - mean["ilo-auto"]
            ratio = r["seconds"]["choose"] / r["seconds"]["ilo-auto"]
            line += f"; vs ilo-auto {loss:+.2f} dB (target >= -0.1), time {ratio:.2f}x (target <= 1.3)"
            ok = ok and loss >= -TOLERANCE["in_range_loss"] and ratio <= TOLERANCE["time"]
        out.append(("PASS " if ok else "MISS ") + line)
    return out


def set_table(which: str, data: dict) -> str:
    methods = [*SINGLE, "choose"]
    lines = [
        f"### {which}: {data['note']}",
        "",
        "| task | "
        + " | ".join(methods)
        + " | oracle | regret (dB) | rho | chosen (images) | s / image: ilo-auto → choose |",
        "| --- |" + " ---: |" * (len(methods) + 3) + " --- | --- |",
    ]
    for task_name, r in data["tasks"].items():
        cells = []
        for m in methods:
            if m not in r["psnr"]:
                cells.append("–")
                continue
            cell = f"{np.mean(r['psnr'][m]):.2f}"
            if "psnr_hole" in r:
                cell += f" / {np.mean(r['psnr_hole'][m]):.2f}"
            cells.append(cell)
        counts = {c: r["chosen"].count(c) for c in dict.fromkeys(r["chosen"])}
        rho = "–" if r["rho"] is None else f"{r['rho']:.2f}"
        lines.append(
            f"| {task_name} | " + " | ".join(cells) + f" | {np.mean(r['oracle']):.2f} | {np.mean(r['regret']):.2f} | "
            f"{rho} | " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " | "
            f"{r['seconds']['ilo-auto']:.2f} → {r['seconds']['choose']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def probe_lines(data: dict) -> list[str]:
    """BM3D's SURE at each probe step: the spread between two probes and the bias (x 1e-3)."""
    lines = []
    for task_name, r in data["tasks"].items():
        if "probe" not in r:
            continue
        cells = [
            f"step {step} σ: spread {v['spread'] * 1e3:.2f}, bias {v['bias'] * 1e3:+.2f}"
            for step, v in r["probe"].items()
        ]
        lines.append(f"- {task_name}, BM3D's SURE (×1e-3, MSE of [-1, 1] images): " + "; ".join(cells))
    return ["", *lines] if lines else []


def photo_lines(data: dict) -> list[str]:
    """The real photograph's own numbers: each task's choice beside every single method."""
    if "astronaut" not in data["names"]:
        return []
    i = data["names"].index("astronaut")
    lines = ["", "The real photograph alone (PSNR dB; inpainting: full / hole):", ""]
    for task_name, r in data["tasks"].items():
        cells = [
            f"{m} {r['psnr'][m][i]:.2f}" + (f" / {r['psnr_hole'][m][i]:.2f}" if "psnr_hole" in r else "")
            for m in SINGLE
            if m in r["psnr"]
        ]
        lines.append(f"- {task_name}: chose **{r['chosen'][i]}** ({r['psnr']['choose'][i]:.2f}); " + ", ".join(cells))
    return lines


def arguments(argv) -> tuple[Script, argparse.Namespace]:
    script = Script(__file__, __doc__, quick={"tasks": "denoise-0.1", "sets": "in-range"})
    p = script.parser
    script.add_list("--tasks", TASKS)
    p.add_argument("--sets", type=comma_list, default=",".join(SETS), help="of " + ", ".join(SETS))
    p.add_argument("--backend", default="auto", help="the engine every method runs on (default: the command's)")
    return script, script.parse(argv)


def main(argv=None) -> int:
    script, args = arguments(argv)
    gen = load_generator("default")
    record, text, checks = {}, [], []
    for which in args.sets:
        record[which] = run_set(gen, which, args.tasks, args.backend)
        checks += verdicts(which, record[which]["tasks"])
        text += [set_table(which, record[which]), *probe_lines(record[which]), *photo_lines(record[which]), ""]
    intro = (
        "Mean PSNR (dB) per method; `choose` chooses per image among the others by estimated error; "
        "oracle: each image's best single method, knowing the truth; regret: oracle − choose; rho: Spearman's "
        "rank correlation of estimated and true error over images and candidates.\n\n"
    )
    body = intro + "\n".join(text) + "\n" + "\n".join(f"- {c}" for c in checks) + "\n"
    record["checks"] = checks
    script.write("choice", body, record, machine_line(f"Restorer, backend {args.backend}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
