"""`ilo restore`: restore images (files, folders, globs) by ILO or a baseline, into a folder of
restored PNGs, optional degraded inputs and strips, and per-image metrics (JSON and CSV)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ilo.engine.cli.solver_args import add_solver_arguments, restorer_settings
from ilo.engine.cli.task_args import add_task_arguments, task_from_args
from ilo.errors import IloError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore images by ILO (or CSGM, PULSE-style, BM3D)", description=__doc__)
    add_task_arguments(p)
    p.add_argument(
        "--clean", action="store_true", help="inputs are clean images: degrade them here and score against them"
    )
    p.add_argument("--truth-dir", type=Path, help="ground truths (same stems) for metrics of degraded inputs")
    add_solver_arguments(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--save-degraded", action="store_true", help="also write the measurements (and masks)")
    p.add_argument("--strip", action="store_true", help="also write degraded | restored | truth side by side")
    p.add_argument(
        "--plot",
        action="store_true",
        help="also write <stem>.loss.png: the total loss at every step, each round's start marked "
        "(not for --method bm3d, which has no loss curve)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every image even where outputs exist, and write over files at the output names that "
        "no ilo run made (refused without it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    r = p.add_argument_group("fleet (Ray Data; pip install -e '.[ray]')")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="auto|ADDRESS",
        help="solve the batches on a pool of Ray actors: no value = a Ray started here for this run, "
        "'auto' = the cluster `ray start` made on this machine, or a cluster's address "
        "(HOST:PORT or ray://HOST:PORT). Outputs are written here, exactly as without --ray",
    )
    r.add_argument(
        "--workers", type=int, help="actors, each with one warmed engine (default: the CPUs / --cpus-per-worker)"
    )
    r.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (and torch threads) per actor (default 1)")
    r.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor, e.g. 1 with --device cuda")
    p.set_defaults(run=run)


def _lpips_metric(args, notes: list[str]):
    """The LPIPS module for the metric (and the loss), or None with a note where its backbone is
    missing and nothing asked for it explicitly."""
    from ilo.engine.problems.losses import LPIPS, find_backbone

    try:
        find_backbone(args.lpips_net, args.lpips_backbone)
    except IloError as e:
        if args.lpips_backbone is not None or args.lpips_weight:
            raise
        if not args.quiet:
            notes.append(f"LPIPS metric skipped: {e}")
        return None
    return LPIPS(args.lpips_net, args.lpips_backbone)


def run(args: argparse.Namespace) -> int:
    from ilo.engine.inputs.image_files import IMAGE_SUFFIXES, list_inputs
    from ilo.engine.inputs.measurements import InputFiles
    from ilo.engine.runs.folder_run import FolderRestore, RestoreOptions
    from ilo.engine.api.restorer import Restorer
    from ilo.engine.runtimes.backends import check_device
    from ilo.generators.checkpoints.files import load_generator

    if args.ray is None or not args.gpus_per_worker:  # GPU actors check their own devices
        check_device(args.device)  # before any work
    task = task_from_args(args)
    suffixes = (".npy",) if task.kind.vector_measurements and not args.clean else IMAGE_SUFFIXES
    inputs = list_inputs(args.inputs, suffixes)
    gen = load_generator(args.model)
    settings = restorer_settings(args, task, gen)
    truth_needed = args.clean or args.truth_dir is not None
    notes: list[str] = []
    lpips = _lpips_metric(args, notes) if truth_needed or args.lpips_weight else None
    # the engine is built (graphs exported on first use) only once every input has passed its checks
    restorer = Restorer(settings=settings, warm=False, quiet=args.quiet)
    if args.ray is None or not args.gpus_per_worker:  # a step that cannot fit: refused before inputs or Ray
        restorer.preflight()
    options = RestoreOptions(
        files=InputFiles(clean_inputs=args.clean, mask=args.mask, mask_dir=args.mask_dir, truth_dir=args.truth_dir),
        batch_size=args.batch_size,
        save_degraded=args.save_degraded,
        save_strip=args.strip,
        save_loss_plot=args.plot,
        overwrite=args.overwrite,
        lpips_metric=lpips if truth_needed else None,
        show_progress=not args.quiet,
        notes=notes,
    )
    folder = FolderRestore(restorer, options, args.out)
    solver = None
    if args.ray is not None:
        from ilo.engine.fleet.ray_batch import RayBatches

        solver = RayBatches(
            restorer,
            options,
            address=args.ray,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            quiet=args.quiet,
            model=args.model,
        )
    summary = folder.run(inputs, solver=solver)
    print(
        f"restored {summary['restored']} image(s), {summary['skipped']} already finished; "
        f"outputs and metrics.json / metrics.csv in {args.out}"
    )
    return 0
