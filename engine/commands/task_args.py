"""Command-line options shared by `ilo restore` and `ilo degrade`: the task and its inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ilo.engine.image_io import FIT_MODES
from ilo.engine.tasks import CS_MATRICES, TASKS, TaskSpec
from ilo.errors import InputError


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,HEIGHT,WIDTH in pixels, got '{text}'")
    return parts  # type: ignore[return-value]


def add_task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or globs (quote them)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--task", choices=TASKS, required=True)
    g = p.add_argument_group("task parameters")
    g.add_argument("--factor", type=int, default=4, help="sr: downsampling factor (default 4)")
    g.add_argument("--sigma", type=float, help="noise std in [0,1] pixel units (denoise: default 0.1; others: 0)")
    g.add_argument("--ratio", type=float, default=0.1, help="cs: measurements per pixel value, m/n (default 0.1)")
    g.add_argument("--cs-matrix", choices=CS_MATRICES, default="circulant", help="cs: fast partial circulant or dense Gaussian")
    g.add_argument("--mask", type=Path, help="inpaint: one mask image for every input (black = missing)")
    g.add_argument("--mask-dir", type=Path, help="inpaint: a mask per input, same file stem")
    g.add_argument("--centre-box", type=float, metavar="FRACTION", help="inpaint: a centred square hole of this side fraction")
    g.add_argument("--box", type=_box, metavar="T,L,H,W", help="inpaint: a rectangular hole, in generator pixels")
    g.add_argument("--keep", type=float, metavar="RATE", help="inpaint: observe this fraction of pixels at random")
    g.add_argument("--op-seed", type=int, default=0, help="seed of the CS matrix, random masks and added noise")
    p.add_argument("--fit", choices=FIT_MODES, help="bring other-sized images to size (default: refuse them)")


def task_from_args(args: argparse.Namespace) -> TaskSpec:
    if args.task != "inpaint" and any(v is not None for v in (args.centre_box, args.box, args.keep)):
        raise InputError("--centre-box, --box and --keep belong to --task inpaint")
    return TaskSpec(
        task=args.task, factor=args.factor, sigma=args.sigma, ratio=args.ratio, cs_matrix=args.cs_matrix,
        centre_box=args.centre_box, box=args.box, keep=args.keep, op_seed=args.op_seed,
    )  # fmt: skip
