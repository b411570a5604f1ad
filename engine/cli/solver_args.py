"""Command-line options shared by `ilo restore` and `ilo serve`: the method, its solver
settings and what runs it, turned into one `RestorerSettings`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ilo.choices import BACKENDS, DEFAULT_MEMORY_SHARE, DEFAULT_METHOD, LPIPS_NETS, METHODS
from ilo.engine.cli.values import seed, whole
from ilo.errors import IloError

if TYPE_CHECKING:
    from ilo.engine.api.restorer import RestorerSettings
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.generators.staged import StagedGenerator


def _per_round(cast, what: str):
    def one(v: str):
        if v.strip().lower() == "none":
            return None
        if cast is int:
            return whole(v.strip(), what)
        try:
            return cast(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{v}' is not a number ({what})") from None

    def parse(text: str):
        values = [one(v) for v in text.split(",")]
        return values if len(values) > 1 else values[0]

    return parse


def _fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions of round 0, got '{text}'") from None


_METHOD_HELP = (
    "'ilo-auto' (default): ILO that chooses per image how deep and how far to fit by held-out "
    "measurements (benchmarks/results/held_out_selection.md compares it with the others); 'choose': "
    "ilo-auto, then per image whichever of it, 'tv', 'wavelet' and 'bm3d' has the smallest error estimated "
    "on its held-out measurements, where they are noisy (denoising: better than ilo-auto and BM3D out of "
    "range, at 3x ilo-auto's time; benchmarks/results/choice.md); 'ilo': the "
    "paper's fixed depth; 'csgm', 'pulse' and 'bm3d' are the baselines; 'tv' and 'wavelet': weight-free "
    "priors solved by FISTA (the deepinv extra); 'encoder': the model's trained encoder alone (one pass, "
    "nothing optimised: the fastest, see --encoder)"
)

# The solver group: (flag, the solver setting it overrides or None, argparse keywords). A flag
# with a setting replaces that value of the method's defaults (RestorerSettings.solver_overrides).
SOLVER_FLAGS: tuple[tuple[str, str | None, dict], ...] = (
    (
        "--steps",
        "steps",
        {"type": _per_round(int, "steps per round, comma-separated"), "help": "steps per round, e.g. 300,100"},
    ),
    (
        "--lr",
        "lr",
        {
            "type": _per_round(float, "learning rate per round, comma-separated"),
            "help": "learning rate per round, e.g. 0.1,0.01",
        },
    ),
    (
        "--l1-radius",
        "l1_radius",
        {
            "type": _per_round(float, "l1 radius per round, comma-separated, or none"),
            "help": "l1 radius per round, x the state's l1 norm; 'none' = off",
        },
    ),
    ("--end-stage", "end_stage", {"type": int, "help": "last stage whose input is optimised (0 = latent only)"}),
    (
        "--switch",
        "switch",
        {"choices": ("fixed", "plateau"), "help": "fixed step budgets, or move on when the loss flattens"},
    ),
    (
        "--restarts",
        "restarts",
        {"type": int, "help": "random starts of round 0, run as one batch; the best per image is kept"},
    ),
    (
        "--prune-starts",
        "prune_starts_at",
        {
            "type": _fractions,
            "metavar": "F[,F...]",
            "help": "successive halving: at these fractions of round 0 each image keeps the better half of its "
            "starts, e.g. 0.5,0.75 (default: the method's own; ilo halves at 0.25,0.5)",
        },
    ),
    (
        "--hold-out",
        "hold_out",
        {
            "type": float,
            "metavar": "SHARE",
            "help": "leave this share of each image's measurements out of the fit (e.g. 0.1) and return the iterate "
            "that fits them best: how deep and how far the fit goes is then chosen per image (for images "
            "the generator cannot make); the metrics record each image's round, l1 radius and held-out loss",
        },
    ),
    (
        "--ensemble",
        "ensemble",
        {
            "type": int,
            "metavar": "K",
            "help": "solve each image K times from different random starts (and held-out shares) and average the "
            "results: better on faces the generator makes and on ones it cannot (benchmarks/results/ensemble.md "
            "has the measured gain), for about K times the time",
        },
    ),
    (
        "--encoder",
        None,
        {
            "metavar": "auto|none|FILE",
            "help": "start round 0 from a trained encoder's guess (a learned start) in place of each image's first "
            "random start: 'auto' = the model's own (shipped with the default model, else made by ilo export "
            "--encoder), 'none' = random starts only, or a .safetensors file; refused if it was trained for "
            "other weights. Default: ilo-auto takes the model's own where it has one, with the shorter "
            "schedule a learned start allows; the other search methods start at random",
        },
    ),
    (
        "--fast",
        None,
        {
            "action": "store_true",
            "help": "ilo-auto's fast schedule from the learned start (needs the model's encoder): faster than the "
            "default, for less quality on pictures the generator cannot make (docs: benchmarks, Learned starts)",
        },
    ),
    (
        "--lpips-weight",
        "lpips_weight",
        {"type": float, "help": "weight of LPIPS in the loss (needs the backbone file)"},
    ),
    ("--seed", None, {"type": seed, "default": 0, "help": "seed of the random starts (per image, from its name)"}),
)

# What runs the solve, beside the solver group: (flag, argparse keywords).
ENGINE_FLAGS: tuple[tuple[str, dict], ...] = (
    ("--lpips-net", {"choices": LPIPS_NETS, "default": "vgg", "help": "LPIPS network for the loss and the metric"}),
    ("--lpips-backbone", {"type": Path, "help": "torchvision backbone file (default: the torch hub cache)"}),
    (
        "--backend",
        {
            "choices": ("auto", *BACKENDS),
            "default": "auto",
            "help": "what runs the generator: 'auto' (default) = the fused CUDA kernels for a StyleGAN2 on a GPU "
            "where the kernel library is built, else the exported graphs on onnxruntime, exported on first use "
            "and cached; falls back to torch with a note if neither can run. 'torch' = the eager reference",
        },
    ),
    ("--device", {"default": "cpu", "help": "cpu, or cuda[:N] for the GPU backends"}),
    (
        "--memory-budget",
        {
            "default": "auto",
            "metavar": "SIZE",
            "help": "memory a solve may take: a batch that needs more runs in micro-batches that fit (same results). "
            f"'auto' (default) = {DEFAULT_MEMORY_SHARE['cpu']:.0%}% of the available RAM "
            f"({DEFAULT_MEMORY_SHARE['cuda']:.0%}% of the free GPU memory), '60%%', a size such "
            "as 12G or 800M, or 'off'. What a step needs is measured once per model and task, and cached",
        },
    ),
)


def add_solver_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=_METHOD_HELP)
    s = p.add_argument_group("solver (per-round lists are comma-separated; the last value repeats)")
    for flag, _, keywords in SOLVER_FLAGS:
        s.add_argument(flag, **keywords)
    for flag, keywords in ENGINE_FLAGS:
        p.add_argument(flag, **keywords)


def restorer_settings(
    args: argparse.Namespace, task: TaskSpec, model: str | Path | StagedGenerator
) -> RestorerSettings:
    """The settings the options describe; a solver flag the method would ignore is refused."""
    from ilo.engine.api.methods import method
    from ilo.engine.api.restorer import RestorerSettings

    solver_flags = {setting: getattr(args, flag[2:].replace("-", "_")) for flag, setting, _ in SOLVER_FLAGS if setting}
    # --seed seeds the random starts and is harmless for BM3D; the other flags must not be ignored
    overrides = {k: v for k, v in solver_flags.items() if v is not None}
    overrides.update({"seed": args.seed} if method(args.method).optimises else {})
    stages = getattr(model, "stages", None)
    if stages is not None and args.end_stage is not None and args.end_stage >= len(stages):  # a stage that is not there
        raise IloError(f"--end-stage {args.end_stage} does not exist: this generator has stages 0..{len(stages) - 1}")
    return RestorerSettings(
        model=model,
        task=task,
        method=args.method,
        backend=args.backend,
        device=args.device,
        seed=args.seed,
        fit=getattr(args, "fit", None),
        max_pixels=args.max_pixels,
        lpips_net=args.lpips_net,
        lpips_backbone=args.lpips_backbone,
        memory_budget=args.memory_budget,
        encoder=args.encoder,
        fast=args.fast,
        solver_overrides=overrides,
    )
