"""`ilo export`: trace a model's graphs into forward and VJP ONNX graphs, lint them for
TensorRT, check them against torch, and cache them. By default every generator stage (and the
latent mapping proxy), every operator's loss head and optionally LPIPS; with `--warm TASK`,
exactly what a solve of TASK loads (its fused step graphs, the sessions, the memory a step
takes), so the first restore starts at once."""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

from ilo.choices import BACKENDS, DEFAULT_METHOD, LPIPS_NETS, METHODS, TASKS
from ilo.engine.cli.values import seed
from ilo.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export stage graphs (forward + VJP) to ONNX, verified and cached", description=__doc__
    )
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--cache", type=Path, help="cache folder (default: $ILO_CACHE_DIR/graphs or ~/.cache/ilo/graphs)")
    p.add_argument(
        "--lpips", choices=LPIPS_NETS, help="also export LPIPS (features, distance, VJP) at the model's size"
    )
    p.add_argument("--lpips-backbone", type=Path, help="torchvision backbone file (default: the torch hub cache)")
    p.add_argument("--force", action="store_true", help="export again even when the cache holds these graphs")
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="bundles exported at once, each in a worker process (default: $ILO_EXPORT_JOBS, else one per "
        "core as memory allows for models of 128 px and up, else 1: in this process)",
    )
    p.add_argument(
        "--warm",
        choices=TASKS,
        action="append",
        default=[],
        metavar="TASK",
        help="build exactly what a solve of TASK with --method loads (the generator's forward graphs, its "
        "fused step graphs, the sessions, the memory a step takes) instead of every graph, so the first "
        "restore on this machine or image starts at once; repeat for several tasks",
    )
    p.add_argument(
        "--method", choices=METHODS, default=DEFAULT_METHOD, help="the method --warm builds for (default: %(default)s)"
    )
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="the backend --warm builds for")
    p.add_argument("--device", default="cpu", help="the device --warm builds for")
    p.add_argument(
        "--encoder",
        action="store_true",
        help="train the model's encoder (its learned start for round 0) on its own samples, check it, export "
        "it beside the graphs and cache it (resumes a stopped training); use it with ilo restore --encoder",
    )
    p.add_argument(
        "--encoder-steps",
        type=int,
        default=3000,
        metavar="N",
        help="training steps of --encoder (default: %(default)s)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of --encoder's training")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be exported and, with --warm, what one image's step is estimated to take; export nothing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ilo.export.parallel import export_bundles
    from ilo.generators.checkpoints.files import load_generator

    check_arguments(args)
    gen = load_generator(args.model)
    makers = bundle_makers(gen, args)

    def progress(i, n, name):
        if not args.quiet:
            print(f"export: {i + 1}/{n} {name}", file=sys.stderr, flush=True)

    if args.jobs is not None:  # the warm-ups' exports read the count where every entry point does
        os.environ["ILO_EXPORT_JOBS"] = str(args.jobs)
    # every task's refusal (a dense CS matrix, a step that cannot fit) before anything is exported
    warming = [(task, warm_restorer(gen, task, args)) for task in args.warm]
    costs = [restorer.preflight() for _, restorer in warming]
    if args.dry_run:
        say_dry_run(gen, makers, warming, costs, args)
        return 0
    for result in export_bundles(makers, args.cache, args.jobs, gen, progress, args.force):
        say_exported(result)
    if args.encoder:
        train(gen, args)
        # made again: the warm-ups' schedules and plans are the learned start's now
        warming = [(task, warm_restorer(gen, task, args)) for task in args.warm]
        for _, restorer in warming:  # their plans changed: checked again before their exports
            restorer.preflight()
    for task, restorer in warming:
        t0 = time.perf_counter()
        restorer.warm(progress)
        print(f"warm {task} ({args.method}): ready in {time.perf_counter() - t0:.1f}s on {restorer.backend_name}")
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Refusals known from the arguments alone, before minutes of export."""
    from ilo.engine.runs.outputs import check_folder_path

    if args.warm and args.cache is not None:
        raise SystemExit("ilo: error: --warm fills the cache the engine reads ($ILO_CACHE_DIR); leave out --cache")
    if args.cache is not None:  # a file in the way would fail the export's first write
        check_folder_path(args.cache, "--cache")
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")


def bundle_makers(gen, args: argparse.Namespace) -> list:
    """What to export besides the warm-ups: the generator's graphs the engine loads (the forward
    part at once, the stage VJPs when a chained step needs them) and every operator's loss head,
    unless --warm or --encoder narrow the command to those; LPIPS with --lpips."""
    # torch, onnx and the exporter load only when used
    from ilo.engine.problems.losses import LPIPS
    from ilo.engine.problems.operators import every_loss_head
    from ilo.export.artifacts import generator_bundle, loss_head_bundle, lpips_bundle

    makers = []
    if not args.warm and not args.encoder:
        heads = list(every_loss_head(gen.resolution).values())
        makers = [
            partial(generator_bundle, gen, "forward"),
            partial(generator_bundle, gen, "vjp"),
            partial(loss_head_bundle, heads, gen.resolution),
        ]
    if args.lpips:
        makers.append(partial(lpips_bundle, LPIPS(args.lpips, args.lpips_backbone), gen.resolution))
    return makers


def say_dry_run(gen, makers: list, warming: list, costs: list, args: argparse.Namespace) -> None:
    """--dry-run: what would be exported and, per warmed task, what one image's step takes."""
    import torch

    from ilo.engine.runtimes.memory_budget import GiB

    if makers:
        say_plan("would export", [make() for make in makers], gen, args.cache)
    for (task, restorer), cost in zip(warming, costs):
        say_plan(f"warm {task} ({args.method}) would export", restorer.export_plan(), gen, None)
        if cost is not None:
            rows = restorer.memory_budget.rows(cost, torch.device(args.device), f"{gen.family} {gen.resolution}²")
            print(
                f"  one image's step: an estimated {cost.peak(1) / GiB:.2f} GiB ({cost.fixed / GiB:.2f} GiB fixed + "
                f"{cost.per_row / GiB:.2f} GiB per image and start); the default memory budget holds {rows} a "
                f"call now"
            )


def say_exported(result) -> None:
    """A bundle's line, then one line per graph: size, error against torch, time, lint."""
    m = result.manifest
    state = "cache hit" if result.cache_hit else "exported"
    print(f"{m['bundle']}: {state}, {len(m['graphs'])} graphs in {result.folder}")
    for g in m["graphs"]:
        limit = f" (kink-limited; l2 {max(g['l2_relative_error'].values()):.0e})" if g["kink_limited"] else ""
        print(
            f"  {g['name']:20s} {g['bytes'] / 1e6:8.2f} MB  max rel. error {g['error']:.1e}{limit}  "
            f"{g['export_seconds']:6.1f}s  {'lint ok' if not g['lint'] else 'LINT: ' + '; '.join(g['lint'])}"
        )


def warm_restorer(gen, task: str, args: argparse.Namespace):
    """A `Restorer` for `task` with `--method`'s default settings, not yet warm: what `ilo
    restore` and `ilo serve` build on their first use. `--backend auto` is resolved here, so
    an export that fails stops the command instead of falling back to torch with a cold cache."""
    from ilo.engine.api.restorer import Restorer
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.runtimes.backends import auto_backend_name

    backend = auto_backend_name(args.device, gen.family) if args.backend == "auto" else args.backend
    return Restorer(gen, TaskSpec(task), method=args.method, backend=backend, device=args.device, warm=False)


def say_plan(what: str, bundles: list, gen, cache: Path | None) -> None:
    """One line: the bundles, each marked where the cache already holds it; refused where
    exporting what is missing is estimated not to fit."""
    from ilo.export.artifacts import bundle_folder, read_cached
    from ilo.export.parallel import refuse_what_cannot_fit

    cached = [read_cached(bundle_folder(b, cache)) is not None for b in bundles]
    refuse_what_cannot_fit(gen, cached.count(False))
    names = [f"{b.name} (cached)" if hit else b.name for b, hit in zip(bundles, cached)]
    print(f"{what}: {', '.join(names) or 'nothing (this backend runs no graph files)'}")


def train(gen, args: argparse.Namespace) -> None:
    """`--encoder`: train, check, export and cache the model's encoder, with a progress bar."""
    from ilo.engine.runs.progress import Progress
    from ilo.engine.solver.encoder_cache import train_and_cache
    from ilo.engine.solver.encoder_training import TrainingSettings

    if args.encoder_steps < 1:
        raise SystemExit("ilo: error: --encoder-steps must be at least 1")
    bar = Progress(args.encoder_steps, "encoder", enabled=not args.quiet, unit="step")

    def progress(step: int, steps: int, loss: float) -> None:
        bar.done = step - 1  # a resumed run starts part-way
        bar.advance(1, f"image mse {loss:.4f}")

    path, _, exported, record = train_and_cache(
        gen, TrainingSettings(steps=args.encoder_steps, seed=args.seed), progress=progress
    )
    bar.close()
    [graph] = exported.manifest["graphs"]
    print(
        f"encoder: {path} ({record['seconds']:.0f} s of training, image mse {record['final_image_mse']:.4f} over the "
        f"last steps); graph {exported.folder / graph['file']} (max rel. error {graph['error']:.1e})"
    )
