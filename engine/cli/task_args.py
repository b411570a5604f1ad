"""Command-line options shared by `ilo restore` and `ilo degrade`: the task and its inputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ilo.choices import CS_MATRICES, DEFAULT_MAX_PIXELS, FIT_MODES, TASKS
from ilo.engine.cli.values import seed
from ilo.errors import InputError

if TYPE_CHECKING:
    from ilo.engine.problems.tasks import TaskSpec


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,HEIGHT,WIDTH in pixels, got '{text}'")
    return parts  # type: ignore[return-value]


def add_task_arguments(p: argparse.ArgumentParser, files: bool = True) -> None:
    """The task and its parameters; with `files`, the inputs, the output folder and mask files."""
    if files:
        p.add_argument("inputs", nargs="+", help="image files, folders of images, or globs (quote them)")
        p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--task", choices=TASKS, required=True)
    g = p.add_argument_group("task parameters")
    g.add_argument("--factor", type=int, help="sr: downsampling factor (default 4)")
    g.add_argument("--sigma", type=float, help="noise std in [0,1] pixel units (denoise: default 0.1; others: 0)")
    g.add_argument("--ratio", type=float, help="cs: measurements per pixel value, m/n (default 0.1)")
    g.add_argument("--cs-matrix", choices=CS_MATRICES, help="cs: fast partial circulant (default) or dense Gaussian")
    if files:
        g.add_argument(
            "--mask", type=Path, help="inpaint: one mask image for every input (black or transparent = missing)"
        )
        g.add_argument(
            "--mask-dir", type=Path, help="inpaint: a mask per input, same file stem (black or transparent = missing)"
        )
    g.add_argument(
        "--centre-box", type=float, metavar="FRACTION", help="inpaint: a centred square hole of this side fraction"
    )
    g.add_argument("--box", type=_box, metavar="T,L,H,W", help="inpaint: a rectangular hole, in generator pixels")
    g.add_argument("--keep", type=float, metavar="RATE", help="inpaint: observe this fraction of pixels at random")
    g.add_argument("--op-seed", type=seed, default=0, help="seed of the CS matrix, random masks and added noise")
    p.add_argument("--fit", choices=FIT_MODES, help="bring other-sized images to size (default: refuse them)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images before decoding them (default {DEFAULT_MAX_PIXELS:,})",
    )


def task_from_args(args: argparse.Namespace) -> "TaskSpec":
    from ilo.engine.problems.tasks import TaskSpec

    # a parameter of another task would be ignored without a word: refuse it instead
    owners = {"inpaint": ("centre_box", "box", "keep"), "sr": ("factor",), "cs": ("ratio", "cs_matrix")}
    for task, names in owners.items():
        given = [n for n in names if getattr(args, n) is not None]
        if args.task != task and given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise InputError(f"{flags} belong{'s' if len(given) == 1 else ''} to --task {task}, not --task {args.task}")
    defaults = {"factor": 4, "ratio": 0.1, "cs_matrix": "circulant"}
    given = {k: getattr(args, k) for k in defaults if getattr(args, k) is not None}
    return TaskSpec(
        task=args.task,
        sigma=args.sigma,
        centre_box=args.centre_box,
        box=args.box,
        keep=args.keep,
        op_seed=args.op_seed,
        **{**defaults, **given},
    )
