"""Ensembles (`--ensemble K`): ilo-auto solved K times per image from different random
starts and held-out shares, the images averaged, in range and out of it.

The ensemble runs here, in this run; ilo-auto alone and every other method are read from the
committed `held_out_selection.json`, `quality.json` and `quality_ood.json` (the same images,
seeds and measurements; member 0 of an ensemble is ilo-auto's own solve).

    python benchmarks/ensemble.py                    # writes benchmarks/results/ensemble.{md,json,png}
    python benchmarks/ensemble.py --set out-of-range --tasks sr-x4 --members 5
    python benchmarks/ensemble.py --set out-of-range --tasks denoise-0.1 --members 20 --restarts 1
    python benchmarks/ensemble.py --redraw          # the figure again, from ensemble.json

Each run is a section of ensemble.md named by its members, starts and set ("Five members, out of
range"), replacing that section's earlier run and keeping the others; a run over both sets also
writes ensemble.json and the figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.held_out import IN_RANGE_TOLERANCE, SETS, committed, run
from benchmarks.quality import TASKS, ood_verdicts
from benchmarks.report import METHOD_COLOURS, RESULTS, Script, in_method_order, machine_line
from ilo import load_generator
from ilo.engine.solver.ilo_solver import auto_depth_config


def mean(values) -> float:
    return float(np.mean(values))


def report(runs: dict, members: int) -> tuple[str, list[str], list]:
    """The table, the verdicts and the figure's panels (set -> task -> method -> mean PSNR)."""
    auto_runs = json.loads((RESULTS / "held_out_selection.json").read_text())["runs"]
    label = f"ilo-auto x{members}"
    lines, checks, panels = [], [], {}
    for which, got in runs.items():
        summary = committed(which)["summary"]
        lines += [
            f"### {which}: {got['note']}",
            "",
            f"| task | ilo (defaults) | ilo-auto | {label} | change | best other method | s / image: ilo-auto → {label} |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        merged = {}
        for task_name, r in got["tasks"].items():
            base, auto = summary[task_name], auto_runs[which]["tasks"][task_name]
            others = {m: v for m, v in base.items() if m != "ilo"}
            best = max(others, key=lambda m: others[m]["psnr"]["mean"])
            hole = "psnr_hole" in r

            def cell(psnr: float, psnr_hole: float | None) -> str:
                return f"{psnr:.2f}" + (f" / {psnr_hole:.2f}" if psnr_hole is not None else "")

            ilo = cell(base["ilo"]["psnr"]["mean"], base["ilo"]["psnr_hole"]["mean"] if hole else None)
            single = cell(mean(auto["psnr"]), mean(auto["psnr_hole"]) if hole else None)
            ens = cell(mean(r["psnr"]), mean(r["psnr_hole"]) if hole else None)
            change = mean(r["psnr"]) - mean(auto["psnr"])
            lines.append(
                f"| {task_name} | {ilo} | {single} | **{ens}** | {change:+.2f} | {best} {others[best]['psnr']['mean']:.2f} | "
                f"{auto['seconds_per_image']:.2f} → {r['seconds_per_image']:.2f} |"
            )
            if which == "in-range":
                gap = mean(r["psnr"]) - base["ilo"]["psnr"]["mean"]
                ok = gap >= -IN_RANGE_TOLERANCE
                checks.append(
                    f"{'PASS' if ok else 'MISS'} in range, {task_name}: {label} - ilo {gap:+.2f} dB (target >= -{IN_RANGE_TOLERANCE})"
                )
            merged[task_name] = {
                **others,
                "ilo": {
                    "psnr": {"mean": mean(r["psnr"])},
                    **({"psnr_hole": {"mean": mean(r["psnr_hole"])}} if hole else {}),
                },
            }
            panels.setdefault(which, {})[task_name] = {
                **{m: v["psnr"]["mean"] for m, v in base.items()},
                "ilo-auto": mean(auto["psnr"]),
                label: mean(r["psnr"]),
            }
        if which == "out-of-range":
            checks += [f"{c[:5]}out of range, {c[5:].replace('ILO', label)}" for c in ood_verdicts(merged)]
        lines.append("")
    return "\n".join(lines), checks, panels


COUNTS = (
    "One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Thirteen Fourteen Fifteen Sixteen Seventeen "
    "Eighteen Nineteen Twenty"
).split()
WHERE = {"both": "", "in-range": ", in range", "out-of-range": ", out of range"}  # --set -> the heading's end


def heading(members: int, restarts: int | None, which: str) -> str:
    """The run's section of ensemble.md: one per ensemble size, starts per member and set."""
    count = COUNTS[members - 1] if 0 < members <= len(COUNTS) else str(members)
    starts = "" if restarts is None else f" of {'one start' if restarts == 1 else f'{restarts} starts'} each"
    return f"{count} member{'s' if members != 1 else ''}{starts}{WHERE[which]}"


def figure(panels: dict, members: int):
    """Mean PSNR per task, in range and out of range: what averaging `members` ilo-auto solves
    adds over one, beside ILO's defaults and the baselines."""
    from ilo.engine.runs.figures import grouped_bars

    label = f"ilo-auto x{members}"
    return grouped_bars(
        in_method_order(
            panels, ("ilo", "ilo-auto", label, *(m for m in METHOD_COLOURS if m not in ("ilo", "ilo-auto")))
        ),
        "mean PSNR (dB)",
        f"an ensemble of {members} ilo-auto solves against one, ILO's defaults and the baselines",
        colours={**METHOD_COLOURS, label: "C8"},
    )


def main(argv=None) -> int:
    script = Script(__file__, __doc__, redraw="ensemble")
    script.add_list("--tasks", TASKS)
    script.parser.add_argument("--set", choices=(*SETS, "both"), default="both")
    script.parser.add_argument("--members", type=int, default=3)
    script.parser.add_argument(
        "--restarts", type=int, help="random starts of each member's round 0 (default: ilo-auto's 3)"
    )
    args = script.parse(argv)
    if args.redraw:
        saved = script.saved()
        _, _, panels = report(saved["runs"], saved["members"])
        script.save_figure(figure(panels, saved["members"]), "ensemble.png", saved["machine"])
        return 0
    gen = load_generator("default")
    sets = list(SETS) if args.set == "both" else [args.set]
    starts = {} if args.restarts is None else {"restarts": args.restarts}
    runs = {which: run(gen, which, args.tasks, auto_depth_config(ensemble=args.members, **starts)) for which in sets}
    table, checks, panels = report(runs, args.members)
    machine = machine_line()
    text = (
        f"ilo-auto solved {args.members} times per image (`--ensemble`), each member from its own "
        f"{args.restarts or 3} random start(s) and 10% held-out share, the images averaged. "
        "ilo-auto alone and the other methods from the committed tables (another run: their seconds are "
        "that run's). PSNR in dB (mean over images; inpainting: full / hole).\n\n"
        + table
        + "\n"
        + "\n".join(f"- {c}" for c in checks)
    )
    record = {"members": args.members, "restarts": args.restarts, "runs": runs, "checks": checks}
    both = len(sets) == 2  # the run the JSON and the figure are of (--redraw reads it)
    script.write_section(
        "ensemble", heading(args.members, args.restarts, args.set), text, record if both else None, machine
    )
    if both:
        script.save_figure(figure(panels, args.members), "ensemble.png", machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
