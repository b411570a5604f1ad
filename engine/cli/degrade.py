"""`ilo degrade`: apply a task's operator to clean images to make test inputs for `ilo restore`
(degraded PNGs, masks under masks/, or .npy CS measurements), reproducibly per image name."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ilo.engine.cli.task_args import add_task_arguments

    p = sub.add_parser("degrade", help="make degraded test inputs from clean images", description=__doc__)
    add_task_arguments(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder holding other files or an earlier degrade with other settings",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


SETTINGS_FILE = "degrade.json"


def run(args: argparse.Namespace) -> int:
    from ilo.atomic import atomic_write_bytes
    from ilo.engine.inputs.image_files import list_inputs
    from ilo.engine.inputs.measurements import InputFiles, InputSpec, MeasurementReader
    from ilo.engine.runs.progress import Progress
    from ilo.engine.runs.result_files import degraded_paths, write_degraded
    from ilo.engine.runs.run_dir import RunDir, check_output_layout
    from ilo.engine.cli.task_args import task_from_args
    from ilo.generators.checkpoints.files import load_generator

    task = task_from_args(args)
    inputs = list_inputs(args.inputs)
    gen = load_generator(args.model)  # only its resolution matters here
    files = InputFiles(clean_inputs=True, mask=args.mask, mask_dir=args.mask_dir)
    spec = InputSpec(task, fit=args.fit, max_pixels=args.max_pixels, files=files)
    reader = MeasurementReader(spec, gen.resolution)
    out = RunDir(args.out, settings_file=SETTINGS_FILE)
    out.check_usable()
    outputs = {p.stem: degraded_paths(args.out, p.stem, task, tag="") for p in inputs}
    check_output_layout(
        args.out, outputs, {p.stem: list(reader.sources(p).values()) for p in inputs}, [args.out / SETTINGS_FILE]
    )
    prepared = [reader.prepare(p) for p in inputs]  # every input checked before anything is written
    summary = {"task": task.describe(), "resolution": gen.resolution, "inputs": [str(p) for p in inputs]}
    with out.open():
        # adding images to an earlier degrade is fine; other measurements of the same names are not
        out.check(summary, args.overwrite, compared=("task", "resolution"))
        out.check_foreign([p for paths in outputs.values() for p in paths] + [args.out / SETTINGS_FILE], args.overwrite)
        # the settings first, as a restore writes run.json: an interrupted degrade leaves a folder
        # that says whose files it holds, so running it again may write over them
        atomic_write_bytes(args.out / SETTINGS_FILE, (json.dumps(summary, indent=2) + "\n").encode())
        out.written = True  # from here on the folder holds this run's files
        progress = Progress(len(prepared), "degrade", enabled=not args.quiet)
        for item in prepared:
            write_degraded(args.out, item.stem, task, item.y, item.mask, tag="")
            progress.advance()
    print(f"wrote {len(prepared)} degraded input(s) for --task {task.task} to {args.out}")
    return 0
