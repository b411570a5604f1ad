"""`ilo degrade`: apply a task's operator to clean images to make test inputs for `ilo restore`
(degraded PNGs, masks under masks/, or .npy CS measurements), reproducibly per image name."""

from __future__ import annotations

import argparse
import json

from ilo.atomic import atomic_write_bytes
from ilo.engine.commands.task_args import add_task_arguments, task_from_args
from ilo.engine.image_io import list_inputs
from ilo.engine.progress import Progress
from ilo.engine.restore import Restorer, RestoreOptions, write_degraded
from ilo.export.checkpoints.files import load_generator


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="make degraded test inputs from clean images", description=__doc__)
    add_task_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    task = task_from_args(args)
    inputs = list_inputs(args.inputs)
    gen = load_generator(args.model)  # only its resolution matters here
    options = RestoreOptions(task=task, fit=args.fit, clean_inputs=True, mask=args.mask, mask_dir=args.mask_dir)
    restorer = Restorer(gen, options, args.out)
    prepared = [restorer.prepare(p) for p in inputs]  # every input checked before anything is written
    progress = Progress(len(prepared), "degrade")
    for item in prepared:
        write_degraded(args.out, item.stem, task, item.y, item.mask, tag="")
        progress.advance()
    atomic_write_bytes(args.out / "degrade.json", (json.dumps({"task": task.describe(), "resolution": gen.resolution,
                       "inputs": [str(p) for p in inputs]}, indent=2) + "\n").encode())  # fmt: skip
    print(f"wrote {len(prepared)} degraded input(s) for --task {task.task} to {args.out}")
    return 0
