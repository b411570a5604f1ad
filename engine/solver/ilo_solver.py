"""The ILO solver and the CSGM / PULSE-style baselines, on any generator that offers the solver's view
(`ilo.engine.solver.generator_view.GeneratorView`: a torch staged generator or an engine).

`solve(y, operator, generator, config) -> SolveResult`. Round 0 optimises the latents (and the
first noise maps); round k >= 1 drops stages < k and optimises the input state of stage k,
initialised from the previous round, with the latents and noise maps the remaining stages use.

Every loss is a sum of per-image terms and Adam is elementwise, so one optimiser over the
batch equals one optimiser per image; plateau switching freezes an image, not the batch, and
random starts come from per-image seeds. An image's result therefore does not depend on what
else is in its batch.

This module drives a solve: it splits a batch into chunks (`max_rows`) and round 0's starts into
groups, runs an ensemble's members as one batch, and joins the parts into one result. The parts:
`config` (settings and presets), `seeds`, `objective`, `rounds` (round 0's starts and the rounds
after it), `round_loop` (one round's steps) over `round_variables` (what a round optimises).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ilo.engine.problems.held_out import holds_out, split_measurements
from ilo.engine.problems.losses import LPIPS
from ilo.engine.problems.operators import Operator
from ilo.engine.solver.candidates import PICK_MARGIN, best_start
from ilo.engine.solver.config import (
    AUTO_DEPTH,
    LEARNED_AUTO,
    LEARNED_FAST,
    ILOConfig,
    auto_depth_config,
    csgm_config,
    last_round,
    pulse_config,
    radius_of_round,
)
from ilo.engine.solver.generator_view import GeneratorView, check_view
from ilo.engine.solver.latents import Latents
from ilo.engine.solver.objective import Judge, Objective, take_judge
from ilo.engine.solver.round_loop import SolveSetting
from ilo.engine.solver.rounds import Run
from ilo.engine.solver.seeds import member_seed, noise_stream
from ilo.errors import IloError

# what users import from here; the parts live in the modules above
__all__ = [
    "AUTO_DEPTH",
    "LEARNED_AUTO",
    "LEARNED_FAST",
    "PICK_MARGIN",
    "ILOConfig",
    "SolveResult",
    "auto_depth_config",
    "csgm_config",
    "fused_rounds",
    "last_round",
    "member_seed",
    "pulse_config",
    "radius_of_round",
    "solve",
]


@dataclass
class SolveResult:
    """What a solve returns: per image, its best iterate and how it was reached."""

    images: torch.Tensor  # [B, 3, H, W] best iterate per image (an ensemble's: the mean of its members')
    wplus: torch.Tensor  # [B, n_latent, D] final latents
    states: list  # input state of each round's first stage, as optimised
    round_starts: list  # the same states as each round began
    loss_curves: list[torch.Tensor]  # per round: [steps, B] total loss
    best_round: torch.Tensor  # [B]
    # [B] measurement loss of the returned images (the held-out loss where config.hold_out); an
    # ensemble's: the mean of its members' (each on its own held-out share), not its mean image's
    best_loss: torch.Tensor
    seconds: dict = field(default_factory=dict)
    # per round: [steps, B] the measurement loss (the data fit, the paper's Fig. 2); round 0 the best start's
    measurement_curves: list[torch.Tensor] = field(default_factory=list)
    held_out: bool = False  # best_loss is the loss on held-out measurements (config.hold_out, where it applies)
    # an ensemble (config.ensemble > 1): each member's best round and loss, [B, members]. Every
    # other record is member 0's (the plain solve), but best_loss, the members' mean
    member_rounds: torch.Tensor | None = None
    member_loss: torch.Tensor | None = None


def solve(
    y: torch.Tensor,
    op: Operator,
    gen: GeneratorView,
    config: ILOConfig | None = None,
    image_seeds: list[int] | None = None,
    lpips: LPIPS | None = None,
    progress=None,
    max_rows: int | None = None,
    starts: torch.Tensor | None = None,
    on_round: OnRound | None = None,
) -> SolveResult:
    """Restore images from measurements y = A(x) (+ noise) by ILO over `gen`. `op` is one of
    this project's operators or a linear deepinv physics (y then still of [-1, 1] images:
    `deepinv_physics.generator_measurements` converts deepinv's [0, 1] ones).

    Round 0 runs from `config.restarts` random starts as one batch of images x starts; each image
    continues into the intermediate rounds from the start whose round-0 result fits its
    measurements best (a poor start is what intermediate rounds cannot repair, so this is where
    restarts pay). `max_rows` caps the rows of one generator call (a memory budget): images are
    solved in chunks, and where not even one image's starts fit, its starts run in groups.
    `starts` [B, rows, D] (a learned start, `encoder.learned_starts`) replaces each image's first
    random start; the others stay random. `on_round(k, first, images)`, after each round k: the
    best iterates so far of images first, first + 1, ... of the batch (a live view of a solve)."""
    check_view(gen)  # a generator without a member the solver uses is refused here, not mid-round
    op = _as_operator(op, gen)
    config = config or ILOConfig()
    batch = y.shape[0]
    seeds = image_seeds if image_seeds is not None else [config.seed + i for i in range(batch)]
    if len(seeds) != batch:
        raise IloError(f"{len(seeds)} seeds for {batch} images")
    if starts is not None and starts.shape[0] != batch:
        raise IloError(f"{starts.shape[0]} learned starts for {batch} images")
    if config.ensemble > 1:
        return _solve_ensemble(y, op, gen, config, seeds, lpips, progress, max_rows, starts, on_round)
    op, y, judge = _held_out_split(op, y, config, seeds)
    _check_inputs(y, config, lpips, max_rows)
    per_chunk = batch if max_rows is None else max(1, min(batch, max_rows // config.restarts))
    latents = Latents(gen, config, y.device)  # once per solve: it loads (and fingerprints for) the latent statistics
    parts = []
    with torch.enable_grad():  # the steps need gradients even where the caller turned them off (deepinv's loops do)
        for i in range(0, batch, per_chunk):
            rows = slice(i, i + per_chunk)
            parts.append(
                _solve_chunk(
                    y[rows],
                    op.select(rows),
                    gen,
                    config,
                    latents,
                    seeds[rows],
                    lpips,
                    progress,
                    max_rows,
                    take_judge(judge, rows),
                    None if starts is None else starts[rows],
                    _shifted(on_round, i),
                )
            )
    return parts[0] if len(parts) == 1 else _concatenate(parts)


# on_round(k, first, images [n, 3, H, W] in [-1, 1]): images first .. first + n - 1 of the batch
OnRound = Callable[[int, int, torch.Tensor], None]


def _shifted(on_round: OnRound | None, offset: int) -> OnRound | None:
    """A chunk's report as the whole batch's: its images start at `offset`."""
    if on_round is None:
        return None
    return lambda k, first, images: on_round(k, offset + first, images)


def _as_operator(op, gen: GeneratorView) -> Operator:
    """One of this project's operators as it is; a deepinv physics as the operator it stands for."""
    if isinstance(op, Operator):
        return op
    # a deepinv physics: imported only then (an optional extra)
    from ilo.engine.problems.deepinv_physics import operator_from_physics

    return operator_from_physics(op, (3, gen.resolution, gen.resolution))


def _held_out_split(op: Operator, y: torch.Tensor, config: ILOConfig, seeds: list[int]):
    """The operator and measurements fitted, and the judge of the iterates (None: the fit)."""
    if not (config.hold_out and holds_out(op)):
        return op, y, None
    fitted_op, fitted_y, held = split_measurements(op, y, config.hold_out, seeds)
    return fitted_op, fitted_y, (held, y)


def _check_inputs(y: torch.Tensor, config: ILOConfig, lpips: LPIPS | None, max_rows: int | None) -> None:
    if config.lpips_weight and lpips is None:
        raise IloError("lpips_weight > 0 needs an LPIPS module")
    if not torch.isfinite(y).all():
        raise IloError("the measurements contain NaN or inf values")
    if max_rows is not None and max_rows < 1:
        raise IloError(f"max_rows must be at least 1, got {max_rows}")


def _solve_ensemble(
    y,
    op: Operator,
    gen,
    config: ILOConfig,
    seeds: list[int],
    lpips,
    progress,
    max_rows: int | None,
    starts: torch.Tensor | None = None,
    on_round: OnRound | None = None,
) -> SolveResult:
    """Every member of every image as one batch (member-major rows), then each image's mean.
    A row's result does not depend on its batch, so member 0 is the plain solve, and max_rows
    splits the members' rows as it would any batch's."""
    batch, members = y.shape[0], config.ensemble
    rows = torch.arange(batch, device=y.device).repeat(members)
    member_seeds = [member_seed(s, m) for m in range(members) for s in seeds]
    single = dataclasses.replace(config, ensemble=1)
    r = solve(
        y[rows],
        op.select(rows),
        gen,
        single,
        image_seeds=member_seeds,
        lpips=lpips,
        progress=progress,
        max_rows=max_rows,
        starts=None if starts is None else starts[rows],
        on_round=None if on_round is None else _member_zero(on_round, batch),
    )

    def per_member(t: torch.Tensor) -> torch.Tensor:  # [members * B, ...] -> [members, B, ...]
        return t.reshape(members, batch, *t.shape[1:])

    def first(states: list[tuple]) -> list[tuple]:
        return [tuple(s[:batch] for s in group) for group in states]

    return SolveResult(
        images=per_member(r.images).mean(0),
        wplus=r.wplus[:batch],
        states=first(r.states),
        round_starts=first(r.round_starts),
        loss_curves=[c[:, :batch] for c in r.loss_curves],
        best_round=r.best_round[:batch],
        best_loss=per_member(r.best_loss).mean(0),
        seconds=r.seconds,
        measurement_curves=[c[:, :batch] for c in r.measurement_curves],
        held_out=r.held_out,
        member_rounds=per_member(r.best_round).T,
        member_loss=per_member(r.best_loss).T,
    )


def _member_zero(on_round: OnRound, batch: int) -> OnRound:
    """An ensemble's rows (member-major) reported as its images: member 0's, the plain solve (the
    result is the members' mean, known only at the end)."""

    def report(k: int, first: int, images: torch.Tensor) -> None:
        if first < batch:
            on_round(k, first, images[: batch - first])

    return report


def _solve_chunk(
    y,
    op,
    gen,
    config: ILOConfig,
    latents: Latents,
    seeds: list[int],
    lpips,
    progress,
    max_rows: int | None,
    judge: Judge | None = None,
    learned: torch.Tensor | None = None,
    on_round: OnRound | None = None,
) -> SolveResult:
    t0 = time.perf_counter()
    batch = y.shape[0]
    objective = Objective(op, y, config, lpips, [noise_stream(s) for s in seeds], judge)
    noise_maps = min(config.noise_maps, len(gen.stored_noises()))
    setting = SolveSetting(
        gen=gen, config=config, latents=latents, progress=progress, images=batch, noise_maps=noise_maps
    )
    run = Run(setting, objective)
    group = config.restarts if max_rows is None else max(1, min(config.restarts, max_rows // batch))
    groups = [range(first, min(first + group, config.restarts)) for first in range(0, config.restarts, group)]
    chosen = best_start([run.first_round(seeds, starts, learned) for starts in groups])
    run.seconds["round 0"] = time.perf_counter() - t0
    if on_round is not None:
        on_round(0, 0, run.best.image.detach())
    z, noises, state = chosen.z, chosen.noises, ()
    for k in range(1, last_round(config, len(gen.specs)) + 1):
        t = time.perf_counter()
        with torch.no_grad():  # stage k's input, from the previous round's variables
            state = gen.run_stages(state, latents.wplus(z), noises, k - 1, k)
        z, noises, state = run.round(k, z, noises, state)
        run.seconds[f"round {k}"] = time.perf_counter() - t
        if on_round is not None:
            on_round(k, 0, run.best.image.detach())
    run.seconds["total"] = time.perf_counter() - t0
    return SolveResult(
        images=run.best.image,
        wplus=latents.wplus(z).detach(),
        states=run.states,
        round_starts=run.starts,
        loss_curves=run.curves,
        best_round=run.best.round,
        best_loss=run.best.loss,
        seconds=run.seconds,
        measurement_curves=run.measured_curves,
        held_out=judge is not None,
    )


def fused_rounds(
    op: Operator, y: torch.Tensor, n_stages: int, n_noises: int, config: ILOConfig
) -> list[tuple[int, Operator, int]]:
    """(round, operator fitted, noise maps optimised) of each fused step graph a solve of `op`
    with `config` asks the generator for (`GeneratorView.fused_step`), so an engine can export
    them all ahead, side by side. The operator fitted is the held-out split's, where there is one."""
    if config.lpips_weight:
        return []
    if config.hold_out and holds_out(op):
        op = split_measurements(op, y, config.hold_out, [config.seed] * y.shape[0])[0]
    noises = min(config.noise_maps, n_noises)
    return [(k, op, noises) for k in range(last_round(config, n_stages) + 1)]


def _concatenate(parts: list[SolveResult]) -> SolveResult:
    """One result from the results of consecutive chunks of a batch."""

    def cat_states(states: list[tuple]) -> tuple:
        return tuple(torch.cat(group) for group in zip(*states))

    def cat_curves(curves: list[torch.Tensor]) -> torch.Tensor:
        # plateau switching can end a chunk's round early: its last losses stand for the rest
        steps = max(c.shape[0] for c in curves)
        return torch.cat([torch.cat([c, c[-1:].expand(steps - c.shape[0], -1)]) for c in curves], dim=1)

    seconds: dict = {}
    for part in parts:
        for key, value in part.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
    return SolveResult(
        images=torch.cat([p.images for p in parts]),
        wplus=torch.cat([p.wplus for p in parts]),
        states=[cat_states(list(group)) for group in zip(*(p.states for p in parts))],
        round_starts=[cat_states(list(group)) for group in zip(*(p.round_starts for p in parts))],
        loss_curves=[cat_curves(list(group)) for group in zip(*(p.loss_curves for p in parts))],
        best_round=torch.cat([p.best_round for p in parts]),
        best_loss=torch.cat([p.best_loss for p in parts]),
        seconds=seconds,
        measurement_curves=[cat_curves(list(group)) for group in zip(*(p.measurement_curves for p in parts))],
        held_out=parts[0].held_out,
    )
