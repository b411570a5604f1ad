"""`ilo restore`: restore images (files, folders, globs) by ILO or a baseline, into a folder of
restored PNGs, optional degraded inputs and strips, and per-image metrics (JSON and CSV)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilo.choices import BACKENDS, LPIPS_NETS, METHODS
from ilo.engine.cli.task_args import add_task_arguments, task_from_args
from ilo.errors import IloError


def _per_round(cast):
    def parse(text: str):
        try:
            values = [None if v.strip().lower() == "none" else cast(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, one value per round, got '{text}'") from None
        return values if len(values) > 1 else values[0]

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore images by ILO (or CSGM, PULSE-style, BM3D)", description=__doc__)
    add_task_arguments(p)
    p.add_argument("--clean", action="store_true", help="inputs are clean images: degrade them here and score against them")
    p.add_argument("--truth-dir", type=Path, help="ground truths (same stems) for metrics of degraded inputs")
    p.add_argument("--method", choices=METHODS, default="ilo")
    s = p.add_argument_group("solver (per-round lists are comma-separated; the last value repeats)")
    s.add_argument("--steps", type=_per_round(int), help="steps per round, e.g. 300,100")
    s.add_argument("--lr", type=_per_round(float), help="learning rate per round, e.g. 0.1,0.01")
    s.add_argument("--l1-radius", type=_per_round(float), help="l1 radius per round, x the state's l1 norm; 'none' = off")
    s.add_argument("--end-stage", type=int, help="last stage whose input is optimised (0 = latent only)")
    s.add_argument("--switch", choices=("fixed", "plateau"), help="fixed step budgets, or move on when the loss flattens")
    s.add_argument("--restarts", type=int, help="random restarts; the best per image is kept")
    s.add_argument("--lpips-weight", type=float, help="weight of LPIPS in the loss (needs the backbone file)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random starts (per image, from its name)")
    p.add_argument("--lpips-net", choices=LPIPS_NETS, default="vgg", help="LPIPS network for the loss and the metric")
    p.add_argument("--lpips-backbone", type=Path, help="torchvision backbone file (default: the torch hub cache)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                   help="what runs the generator: 'auto' (default) = the fused CUDA kernels for a StyleGAN2 on a GPU where "
                        "the kernel library is built, else the exported graphs on onnxruntime, exported on first use and "
                        "cached; falls back to torch with a note if neither can run. 'torch' = the eager reference")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for the GPU backends")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--save-degraded", action="store_true", help="also write the measurements (and masks)")
    p.add_argument("--strip", action="store_true", help="also write degraded | restored | truth side by side")
    p.add_argument("--overwrite", action="store_true", help="redo every image even where outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
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


def _engines(args, gen, lpips):
    """The generator (and LPIPS loss) the solver runs: exported graphs on a backend, or torch.
    `auto` takes the kernels (StyleGAN2 on a GPU, library built) or onnxruntime and falls back to
    torch, with a note, where the graphs cannot be exported or run; a backend named explicitly
    must work or the run stops. Returns them with the backend's description."""
    from ilo.engine.runtimes.backends import auto_backend_name, get_backend
    from ilo.engine.runtimes.bridge import EngineGenerator, EngineLPIPS

    gen = gen.to(args.device)
    if args.method == "bm3d" or args.backend == "torch":
        return gen, lpips, "torch"

    def progress(i, n, name):
        if not args.quiet:
            print(f"export (first use, cached after): {i + 1}/{n} {name}", file=sys.stderr, flush=True)

    try:
        name = auto_backend_name(args.device, gen.family) if args.backend == "auto" else args.backend
        backend = get_backend(name, args.device)
        engine = EngineGenerator(gen, backend, progress=progress)
        engine_lpips = lpips if lpips is None else EngineLPIPS(lpips, gen.resolution, backend, progress=progress)
        return engine, engine_lpips, engine.backend.describe()
    except IloError as e:
        if args.backend != "auto":
            raise
        print(f"ilo: note: running on torch: the engine is unavailable ({e})", file=sys.stderr)
        return gen, lpips, "torch"


def run(args: argparse.Namespace) -> int:
    from ilo.engine.app.image_files import IMAGE_SUFFIXES, list_inputs
    from ilo.engine.app.restore import RestoreOptions, Restorer, method_config
    from ilo.engine.runtimes.backends import check_device
    from ilo.generators.checkpoints.files import load_generator

    check_device(args.device)  # before any work
    task = task_from_args(args)
    solver_flags = dict(steps=args.steps, lr=args.lr, l1_radius=args.l1_radius, end_stage=args.end_stage,
                        switch=args.switch, restarts=args.restarts, lpips_weight=args.lpips_weight)  # fmt: skip
    # --seed seeds the random starts and is harmless for BM3D; the other flags must not be ignored
    config = method_config(args.method, **solver_flags, **({} if args.method == "bm3d" else {"seed": args.seed}))
    suffixes = (".npy",) if task.kind.vector_measurements and not args.clean else IMAGE_SUFFIXES
    inputs = list_inputs(args.inputs, suffixes)
    gen = load_generator(args.model)
    if args.end_stage is not None and args.end_stage >= len(gen.stages):  # asked for a stage that is not there
        raise IloError(f"--end-stage {args.end_stage} does not exist: this generator has stages 0..{len(gen.stages) - 1}")
    truth_needed = args.clean or args.truth_dir is not None
    notes: list[str] = []
    lpips = _lpips_metric(args, notes) if truth_needed or args.lpips_weight else None
    options = RestoreOptions(
        task=task, method=args.method, config=config, fit=args.fit, clean_inputs=args.clean, mask=args.mask,
        mask_dir=args.mask_dir, truth_dir=args.truth_dir, max_pixels=args.max_pixels, batch_size=args.batch_size,
        seed=args.seed, save_degraded=args.save_degraded, save_strip=args.strip, overwrite=args.overwrite,
        lpips_metric=lpips if truth_needed else None, show_progress=not args.quiet,
        extra_settings={"model": gen.fingerprint()}, device=args.device, notes=notes,
    )  # fmt: skip
    restorer = Restorer(gen, options, args.out)
    # the engine is built (graphs exported on first use) only once every input has passed its checks
    summary = restorer.run(inputs, solver=lambda: _engines(args, gen, lpips if args.lpips_weight else None))
    print(
        f"restored {summary['restored']} image(s), {summary['skipped']} already finished; "
        f"outputs and metrics.json / metrics.csv in {args.out}"
    )
    return 0
