"""`ilo export`: trace every generator stage (and the latent mapping proxy), the measurement
loss heads and optionally LPIPS into forward and VJP ONNX graphs, lint them for TensorRT, check
them against torch, and cache them."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from ilo.choices import BACKENDS, DEFAULT_METHOD, LPIPS_NETS, METHODS, TASKS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export stage graphs (forward + VJP) to ONNX, verified and cached", description=__doc__)
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--cache", type=Path, help="cache folder (default: $ILO_CACHE_DIR/graphs or ~/.cache/ilo/graphs)")
    p.add_argument("--lpips", choices=LPIPS_NETS, help="also export LPIPS (features, distance, VJP) at the model's size")
    p.add_argument("--lpips-backbone", type=Path, help="torchvision backbone file (default: the torch hub cache)")
    p.add_argument("--force", action="store_true", help="export again even when the cache holds these graphs")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="bundles exported at once, each in a worker process (default: $ILO_EXPORT_JOBS, else one per "
                        "core as memory allows for models of 128 px and up, else 1: in this process)")  # fmt: skip
    p.add_argument("--warm", choices=TASKS, action="append", default=[], metavar="TASK",
                   help="also build everything a default ILO solve of TASK needs (its fused step graphs, the sessions, "
                        "the memory a step takes) and cache it, so the first restore on this machine or image starts at "
                        "once; repeat for several tasks")  # fmt: skip
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="the method --warm builds for (default: %(default)s)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="the backend --warm builds for")
    p.add_argument("--device", default="cpu", help="the device --warm builds for")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # onnx and the exporter load only when used
    from ilo.engine.problems.losses import LPIPS
    from ilo.engine.problems.operators import every_loss_head
    from ilo.export.artifacts import generator_bundle, loss_head_bundle, lpips_bundle
    from ilo.export.parallel import export_bundles
    from ilo.generators.checkpoints.files import load_generator

    if args.warm and args.cache is not None:  # known from the arguments: refused before minutes of export
        raise SystemExit("ilo: error: --warm fills the cache the engine reads ($ILO_CACHE_DIR); leave out --cache")
    gen = load_generator(args.model)
    heads = list(every_loss_head(gen.resolution).values())
    # the bundles the engine loads: the forward part at once, the stage VJPs when a chained step needs them
    makers = [partial(generator_bundle, gen, "forward"), partial(generator_bundle, gen, "vjp"),
              partial(loss_head_bundle, heads, gen.resolution)]  # fmt: skip
    if args.lpips:
        makers.append(partial(lpips_bundle, LPIPS(args.lpips, args.lpips_backbone), gen.resolution))

    def progress(i, n, name):
        if not args.quiet:
            print(f"export: {i + 1}/{n} {name}", file=sys.stderr, flush=True)

    for result in export_bundles(makers, args.cache, args.jobs, gen.resolution, progress, args.force):
        m = result.manifest
        state = "cache hit" if result.cache_hit else "exported"
        print(f"{m['bundle']}: {state}, {len(m['graphs'])} graphs in {result.folder}")
        for g in m["graphs"]:
            limit = f" (kink-limited; l2 {max(g['l2_relative_error'].values()):.0e})" if g["kink_limited"] else ""
            print(f"  {g['name']:20s} {g['bytes'] / 1e6:8.2f} MB  max rel. error {g['error']:.1e}{limit}  "
                  f"{g['export_seconds']:6.1f}s  {'lint ok' if not g['lint'] else 'LINT: ' + '; '.join(g['lint'])}")  # fmt: skip
    for task in args.warm:
        warm(gen, task, args, progress)
    return 0


def warm(gen, task: str, args: argparse.Namespace, progress) -> None:
    """A `Restorer` warmed for `task` with `--method`'s default settings: what `ilo restore` and
    `ilo serve` build on their first use, built now and left in the cache."""
    import time

    from ilo.engine.app.restorer import Restorer
    from ilo.engine.problems.tasks import TaskSpec

    t0 = time.perf_counter()
    restorer = Restorer(gen, TaskSpec(task), method=args.method, backend=args.backend, device=args.device, warm=False)
    restorer.warm(progress)
    print(f"warm {task} ({args.method}): ready in {time.perf_counter() - t0:.1f}s on {restorer.backend_name}")
