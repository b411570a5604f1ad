"""Quality against time: mean PSNR per task and seconds per image of a few ILO settings, on
`quality.py`'s set (8 generated faces + the real photograph, every task), all in one run.

"today" is the earlier defaults ([300, 100] steps, 3 starts one after another); the
others run their starts as one batch of images x starts, some pruned by successive halving
(the defaults: at a quarter and at half of round 0).
The verdict compares the new defaults with today: no task more than 0.1 dB lower, in at most
half the seconds per image (a ratio in one run; these machines are noisy).

    python benchmarks/time_to_quality.py                       # the learned default's settings, in range
    python benchmarks/time_to_quality.py --set out-of-range    # ... and untuned: the other sections
    python benchmarks/time_to_quality.py --settings today,defaults --generated 2 --tasks sr-x4 --out /tmp/ttq

The results are the learned default's: `ilo restore`'s schedules from the shipped encoder against
ilo-auto, a random start and the encoder alone (DEFAULT_RUN), on the exported graphs. Each set
is a section of time_to_quality_learned_default.md, replacing that set's earlier run and keeping
the others; the in-range run also writes its JSON and figure. Another comparison of settings
belongs under another `--out`.
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
from benchmarks.quality import TASKS, astronaut_face, degraded, ground_truths
from benchmarks.report import Script, machine_line
from benchmarks.untuned_set import untuned_truths
from ilo import load_generator
from ilo.engine.problems.metrics import restoration_metrics
from ilo.engine.solver.encoder_cache import SHIPPED
from ilo.engine.api.encoder_engine import EngineEncoder
from ilo.engine.problems.measurement_view import VIEW_CHANNELS
from ilo.engine.solver.encoder import encoded_images, learned_starts
from ilo.engine.solver.encoder_files import load_encoder
from ilo.engine.solver.ilo_solver import AUTO_DEPTH, LEARNED_AUTO, LEARNED_FAST, ILOConfig, solve

TODAY = dict(steps=[300, 100], restarts=3, prune_starts_at=[])
SETTINGS = {  # name -> (ILOConfig overrides, starts one after another?)
    "today": (TODAY, True),
    "defaults": ({}, False),
    "3 starts halved@.1+.2": (dict(prune_starts_at=[0.1, 0.2]), False),
    "1 start": (dict(restarts=1, prune_starts_at=[]), False),
    "200+100 x3": (dict(steps=[200, 100], restarts=3, prune_starts_at=[]), False),
    # later probes (a session's run, not the committed table): plateau switching with
    # stopped images leaving the batch, and shorter intermediate rounds
    "halved plateau": (dict(switch="plateau"), False),
    "halved plateau 3e-3": (dict(switch="plateau", plateau_tol=3e-3), False),
    "halved 300+50": (dict(steps=[300, 50]), False),
    # the held-out selection (ilo-auto), and the same with a shorter round 0
    "ilo-auto": (AUTO_DEPTH, False),
    "ilo-auto 200": ({**AUTO_DEPTH, "steps": [200, 100]}, False),
    "ilo-auto 250": ({**AUTO_DEPTH, "steps": [250, 100]}, False),
    "ilo-auto plateau": ({**AUTO_DEPTH, "switch": "plateau"}, False),
    # round 0 kept whole (cutting it cost up to 0.8 dB), the three deeper rounds shortened
    "ilo-auto 300+60": ({**AUTO_DEPTH, "steps": [300, 60]}, False),
    "ilo-auto 300+75": ({**AUTO_DEPTH, "steps": [300, 75]}, False),
}
# from a learned start (the shipped encoder's) in place of the first random start
LEARNED = {
    "learned ilo-auto": {**AUTO_DEPTH},
    "learned 1 start 100+100": {**AUTO_DEPTH, "restarts": 1, "steps": [100, 100], "prune_starts_at": []},
    "learned 1 start 100+50": {**AUTO_DEPTH, "restarts": 1, "steps": [100, 50], "prune_starts_at": []},
    "learned 1 start 50+50": {**AUTO_DEPTH, "restarts": 1, "steps": [50, 50], "prune_starts_at": []},
    "learned 2 starts 100+100": {**AUTO_DEPTH, "restarts": 2, "steps": [100, 100], "prune_starts_at": []},
    "learned 1 start 150+100": {**AUTO_DEPTH, "restarts": 1, "steps": [150, 100], "prune_starts_at": []},
    "learned 3 starts 150+100": {**AUTO_DEPTH, "steps": [150, 100]},
    "learned 3 starts 100+50": {**AUTO_DEPTH, "steps": [100, 50]},
    # a gentler round 0, so the start is refined rather than left
    "learned 3 starts 100+50 lr.03": {**AUTO_DEPTH, "steps": [100, 50], "lr": [0.03, 0.01]},
    "learned 1 start 150+100 lr.03": {
        **AUTO_DEPTH,
        "restarts": 1,
        "steps": [150, 100],
        "lr": [0.03, 0.01],
        "prune_starts_at": [],
    },
    "learned 3 starts 150+50 lr.03": {**AUTO_DEPTH, "steps": [150, 50], "lr": [0.03, 0.01]},
    # one start, round 0 at a higher learning rate: the start is near, and the rampdown settles it
    **{
        f"learned 1 start {r0}+{later} lr{lr}": {
            **AUTO_DEPTH,
            "restarts": 1,
            "steps": [r0, later],
            "lr": [lr, 0.01],
            "prune_starts_at": [],
        }
        for r0, later, lr in [
            (200, 30, 0.2),
            (150, 30, 0.2),
            (200, 30, 0.3),
            (150, 30, 0.3),
            (100, 20, 0.3),
            (60, 15, 0.3),
            (200, 30, 0.5),
            (150, 30, 0.5),
            (100, 20, 0.5),
            (200, 30, 0.8),
            (150, 20, 0.8),
            (100, 10, 0.8),
            (140, 10, 0.3),
            (140, 10, 0.5),
        ]
    },
    "learned 1 start 200+30 lr0.5 plateau": {**LEARNED_AUTO, "switch": "plateau"},
    # the command's defaults from a learned start (ilo.engine.solver.ilo_solver)
    "learned default": LEARNED_AUTO,
    "learned fast": LEARNED_FAST,
}
# the same latent schedule from one random start, to tell the start's share of the gain from the schedule's
CONTROLS = {
    "random 1 start 200+30 lr0.5": {**LEARNED_AUTO},
    "random 1 start 200+30 lr0.8": {**LEARNED_AUTO, "lr": [0.8, 0.01]},
}
ENCODER_ALONE = "encoder alone"  # G(E(y)): one pass, nothing optimised
SETTINGS.update({name: (overrides, False) for name, overrides in {**LEARNED, **CONTROLS}.items()})
SETTINGS[ENCODER_ALONE] = ({}, False)
DEFAULT_RUN = (
    "ilo-auto,learned default,learned fast,learned 1 start 200+30 lr0.5 plateau,random 1 start 200+30 lr0.5,"
    + ENCODER_ALONE
)
RESULT = "time_to_quality_learned_default"  # the committed table's name; a section per --set
SECTIONS = {  # --set -> its section of RESULT, and whether the run writes the JSON and figure
    "in-range": ("In range (`--set in-range`)", True),
    "out-of-range": ("Out of range (`--set out-of-range`)", False),
    "untuned": ("Untuned set (`--set untuned`)", False),
}


def warmed_engine(gen, tasks: list[str], settings: list[str]):
    """The onnxruntime engine of `gen`, with every fused step graph the runs will load exported
    ahead (or found in the cache), so no timing includes an export."""
    from ilo.engine.runtimes.backends import get_backend
    from ilo.engine.runtimes.bridge import EngineGenerator, export_ahead
    from ilo.engine.solver.ilo_solver import fused_rounds

    names, truth, _ = ground_truths(gen, 1, False)
    steps = {}
    for task_name in tasks:
        op, y, _ = degraded(gen, task_name, names, truth)
        for name in settings:
            config = ILOConfig(**SETTINGS[name][0])
            for k, fitted, n in fused_rounds(op, y, len(gen.stages), len(gen.noise_shapes), config):
                head = fitted.loss_head(gen.resolution)
                if head is not None:
                    steps[(k, head.name, n)] = (k, head, n)
    backend = get_backend("onnxruntime")
    export_ahead(gen, backend, list(steps.values()))
    return EngineGenerator(gen, backend)


def run_setting(
    solver_gen,
    gen,
    names,
    truth,
    overrides: dict,
    sequential: bool,
    tasks: list[str],
    encoder=None,
    alone: bool = False,
) -> dict:
    """One setting on every task; `solver_gen` runs the solve (torch or an engine of `gen`);
    with `encoder`, from its learned start (its time counted), or (`alone`) its guess G(E(y))."""
    out = {}
    config = ILOConfig(**overrides)
    for task_name in tasks:
        op, y, seeds = degraded(gen, task_name, names, truth)
        t0 = time.perf_counter()
        if alone:
            images = encoded_images(encoder, op, y, gen)
        else:
            starts = None if encoder is None else learned_starts(encoder, op, y, gen)
            images = solve(
                y, op, solver_gen, config, image_seeds=seeds, max_rows=len(names) if sequential else None, starts=starts
            ).images
        seconds = time.perf_counter() - t0
        metrics = restoration_metrics(images, truth, op.observed)
        psnr = [float(v) for v in metrics["psnr"]]
        out[task_name] = {"psnr": float(np.mean(psnr)), "per_image": psnr, "seconds_per_image": seconds / len(names)}
        if "psnr_hole" in metrics and task_name == "inpaint-box":  # scattered pixels have no hole to speak of
            out[task_name]["psnr_hole"] = float(metrics["psnr_hole"].mean())
    return out


def plot(rows: dict):
    """PSNR against seconds per image, one panel per task (inpainting's hole too) and one for
    the mean over tasks, a labelled point per setting."""
    from ilo.engine.runs.figures import DPI, require_matplotlib

    require_matplotlib()
    from matplotlib.figure import Figure

    tasks = list(next(iter(rows.values()))["tasks"])
    panels = [(t, "psnr", t) for t in tasks]
    if "inpaint-box" in tasks:
        panels.append(("inpaint-box", "psnr_hole", "inpaint-box, in the hole"))
    panels.append((None, "psnr", "mean over tasks"))
    columns, lines = 3, (len(panels) + 2) // 3
    fig = Figure(figsize=(13, 3.6 * lines + 0.4 * (1 + len(rows) // 4)), dpi=DPI, layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False)
    for ax, (task, key, title) in zip(axes.flat, panels):
        for i, (name, r) in enumerate(rows.items()):
            where = r if task is None else r["tasks"][task]
            ax.scatter(where["seconds_per_image"], where[key], color=f"C{i % 10}", label=name, zorder=3)
        ax.set(title=title, xlabel="seconds per image", ylabel="PSNR (dB)")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle("Quality against time per setting (one run, this machine; up and left is better)")
    return fig


def verdict(
    rows: dict, candidate: str, reference: str = "today", speed_target: float = 2.0, loss_target: float = 0.1
) -> list[str]:
    """PASS where `candidate` is `speed_target` x faster per image than `reference` with no task
    (nor box inpainting's hole) more than `loss_target` dB lower, in this run."""
    new, old = rows[candidate], rows[reference]
    changes = {t: new["tasks"][t]["psnr"] - old["tasks"][t]["psnr"] for t in old["tasks"]}
    if "psnr_hole" in old["tasks"].get("inpaint-box", {}):
        changes["inpaint-box (hole)"] = (
            new["tasks"]["inpaint-box"]["psnr_hole"] - old["tasks"]["inpaint-box"]["psnr_hole"]
        )
    worst = min(changes, key=lambda t: changes[t])
    speed = old["seconds_per_image"] / new["seconds_per_image"]
    ok = changes[worst] >= -loss_target and speed >= speed_target
    return [
        f"{'PASS' if ok else 'MISS'} {candidate} vs {reference}: {speed:.2f}x faster per image (target "
        f"{speed_target:g}x), mean PSNR {new['psnr'] - old['psnr']:+.2f} dB, worst {worst} {changes[worst]:+.2f} dB "
        f"(target >= -{loss_target:.2f})"
    ]


# the learned start's targets against ilo-auto from random starts: the default at the same
# quality in 0.4x the time, the fast setting 4x faster within 0.5 dB
LEARNED_TARGETS = {"learned default": (2.5, 0.1), "learned fast": (4.0, 0.5)}


def checks_of(rows: dict) -> list[str]:
    # the command's default method is ilo-auto; "defaults" is --method ilo's
    checks = [
        line for name in ("defaults", "ilo-auto") if name in rows and "today" in rows for line in verdict(rows, name)
    ]
    for name, (speed, loss) in LEARNED_TARGETS.items():
        if name in rows and "ilo-auto" in rows:
            checks += verdict(rows, name, "ilo-auto", speed, loss)
    return checks


def arguments(argv) -> tuple[Script, argparse.Namespace]:
    script = Script(
        __file__, __doc__, quick={"settings": ENCODER_ALONE, "tasks": "sr-x4", "generated": 1, "backend": "torch"}
    )
    p = script.parser
    script.add_list("--settings", list(SETTINGS), f"comma-separated, from: {', '.join(SETTINGS)}")
    p.set_defaults(settings=DEFAULT_RUN)
    script.add_list("--tasks", TASKS)
    p.add_argument("--generated", type=int, default=8)
    p.add_argument(
        "--set",
        choices=tuple(SECTIONS),
        default="in-range",
        help="quality.py's generated faces and the photograph, its out-of-range set, or "
        "untuned_set.py's pictures that no setting was chosen on (each its section of the table)",
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="onnxruntime",
        help="what runs the generator: torch eager (the reference) or the exported graphs on onnxruntime, "
        "what `ilo restore` runs by default; graphs are exported (or taken from the cache) before any timing",
    )
    p.add_argument(
        "--encoder",
        type=Path,
        default=SHIPPED,
        help="the encoder of the learned settings (default: the one shipped with the model)",
    )
    return script, script.parse(argv)


def main(argv=None) -> int:
    script, args = arguments(argv)
    gen = load_generator("default")
    solver_gen = gen if args.backend == "torch" else warmed_engine(gen, args.tasks, args.settings)
    if args.set == "untuned":
        names, truth, note = untuned_truths(gen, astronaut_face(gen.resolution))
    else:
        names, truth, note = ground_truths(gen, args.generated, True, out_of_range=args.set == "out-of-range")
    rows = {}
    for name in args.settings:
        overrides, sequential = SETTINGS[name]
        encoder = load_encoder(args.encoder, gen.fingerprint()) if name in LEARNED or name == ENCODER_ALONE else None
        if encoder is not None and args.backend != "torch" and name != ENCODER_ALONE:  # as `ilo restore` runs it
            encoder = EngineEncoder(encoder, solver_gen.backend)
            encoder(torch.zeros(1, VIEW_CHANNELS, gen.resolution, gen.resolution))  # its session made before timing
        per_task = run_setting(
            solver_gen, gen, names, truth, overrides, sequential, args.tasks, encoder, name == ENCODER_ALONE
        )
        rows[name] = {
            "overrides": overrides,
            "starts_one_after_another": sequential,
            "tasks": per_task,
            "psnr": float(np.mean([v["psnr"] for v in per_task.values()])),
            "seconds_per_image": float(np.mean([v["seconds_per_image"] for v in per_task.values()])),
        }
        print(
            f"{name:28s} "
            + " ".join(f"{t} {v['psnr']:.2f}" for t, v in per_task.items())
            + f"  {rows[name]['seconds_per_image']:.2f} s/image",
            file=sys.stderr,
            flush=True,
        )
    checks = checks_of(rows)
    machine = machine_line("torch eager" if args.backend == "torch" else "onnxruntime engine, exported graphs")
    text = table(rows, args.tasks, note) + "\n\n" + "\n".join(f"- {c}" for c in checks)
    record = {"ground_truths": note, "settings": rows, "checks": checks}
    heading, whole = SECTIONS[args.set]
    script.write_section(RESULT, heading, text, record if whole else None, machine)
    if whole:
        script.save_figure(plot(rows), f"{RESULT}.png", machine)
    return 0


def table(rows: dict, tasks: list[str], note: str) -> str:
    columns = [(t, "psnr") for t in tasks] + [("inpaint-box", "psnr_hole")] * ("inpaint-box" in tasks)
    header = (
        "| setting | "
        + " | ".join(t if key == "psnr" else f"{t} (hole)" for t, key in columns)
        + " | mean PSNR | s / image |"
    )
    lines = [
        f"Ground truths: {note}. PSNR in dB (mean over images); seconds per image of the whole task batch. "
        "The defaults: "
        + json.dumps({k: v for k, v in vars(ILOConfig()).items() if k in ("steps", "restarts", "prune_starts_at")})
        + ".",
        "",
        header,
        "|" + " --- |" * (len(columns) + 3),
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r['tasks'][t][key]:.2f}" for t, key in columns)
            + f" | {r['psnr']:.2f} | {r['seconds_per_image']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
