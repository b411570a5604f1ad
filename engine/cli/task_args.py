"""Command-line options shared by `ilo restore` and `ilo degrade`: the task and its inputs.

The task's flags are made from its parameter dataclasses (`ilo.engine.problems.task_kinds`):
each field's metadata gives the flag and what it is, and its default is the dataclass's. A
flag of one task defaults to None here, so that giving it with another task can be refused."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ilo.choices import DEFAULT_MAX_PIXELS, FIT_MODES, TASKS
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


# how a parameter's value is read, by the name its field's metadata gives
_READERS = {"int": int, "float": float, "seed": seed, "box": _box, None: None}


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_flag(group, f: dataclasses.Field, help: str, default=None) -> None:
    meta = f.metadata
    extra = {k: meta[k] for k in ("metavar", "choices") if meta[k] is not None}
    group.add_argument(meta["flag"], type=_READERS[meta["reads"]], default=default, help=help, **extra)


def add_task_parameters(group, files: bool) -> None:
    """Every task's parameters: those all tasks take, then each task's own (named by its task)."""
    from ilo.engine.problems.task_kinds import TASK_KINDS, TaskParams

    for f in dataclasses.fields(TaskParams):
        per_task = f"default_{f.name}"  # a default each task sets for itself (sigma), said per task
        if not hasattr(TaskParams, per_task):
            _add_flag(group, f, f.metadata["help"], default=f.default)
            continue
        base = getattr(TaskParams, per_task)
        defaults = {t: getattr(k.params, per_task) for t, k in TASK_KINDS.items()}
        own = "; ".join(f"{t}: default {_shown(v)}" for t, v in defaults.items() if v != base)
        _add_flag(group, f, f"{f.metadata['help']} ({own}; others: {_shown(base)})")
    for task, kind in TASK_KINDS.items():
        for f in kind.params.own_fields():
            said = "" if f.default is None else f" (default {_shown(f.default)})"
            _add_flag(group, f, f"{task}: {f.metadata['help']}{said}")
    if files:
        group.add_argument(
            "--mask", type=Path, help="inpaint: one mask image for every input (black or transparent = missing)"
        )
        group.add_argument(
            "--mask-dir", type=Path, help="inpaint: a mask per input, same file stem (black or transparent = missing)"
        )


def add_task_arguments(p: argparse.ArgumentParser, files: bool = True) -> None:
    """The task and its parameters; with `files`, the inputs, the output folder and mask files."""
    if files:
        p.add_argument("inputs", nargs="+", help="image files, folders of images, or globs (quote them)")
        p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--task", choices=TASKS, required=True)
    add_task_parameters(p.add_argument_group("task parameters"), files)
    p.add_argument("--fit", choices=FIT_MODES, help="bring other-sized images to size (default: refuse them)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images before decoding them (default {DEFAULT_MAX_PIXELS:,})",
    )


def task_from_args(args: argparse.Namespace) -> TaskSpec:
    from ilo.engine.problems.task_kinds import TASK_KINDS, TaskParams
    from ilo.engine.problems.tasks import TaskSpec

    # a parameter of another task would be ignored without a word: refuse it instead
    for task, kind in TASK_KINDS.items():
        given = [f for f in kind.params.own_fields() if getattr(args, f.name) is not None]
        if args.task != task and given:
            flags = ", ".join(f.metadata["flag"] for f in given)
            raise InputError(f"{flags} belong{'s' if len(given) == 1 else ''} to --task {task}, not --task {args.task}")
    names = [f.name for f in (*dataclasses.fields(TaskParams), *TASK_KINDS[args.task].params.own_fields())]
    return TaskSpec(args.task, **{n: getattr(args, n) for n in names if getattr(args, n) is not None})
