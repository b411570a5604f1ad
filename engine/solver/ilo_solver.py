"""The ILO solver and the CSGM / PULSE-style baselines, on any generator that offers the solver's view
(`ilo.engine.solver.generator_view.GeneratorView`: a torch staged generator or an engine).

`solve(y, operator, generator, config) -> SolveResult`. Round 0 optimises the latents (and the
first noise maps); round k >= 1 drops stages < k and optimises the input state of stage k,
initialised from the previous round, with the latents and noise maps the remaining stages use.

Every loss is a sum of per-image terms and Adam is elementwise, so one optimiser over the
batch equals one optimiser per image; plateau switching freezes an image, not the batch, and
random starts come from per-image seeds. An image's result therefore does not depend on what
else is in its batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import time
from dataclasses import dataclass, field

import torch

from ilo.engine.problems.held_out import HeldOut, holds_out, split_measurements
from ilo.engine.problems.losses import LPIPS, geocross, measurement_noise
from ilo.engine.problems.operators import Operator
from ilo.engine.solver.adam import Adam
from ilo.engine.solver.generator_view import FusedEvaluation, GeneratorView, check_view
from ilo.engine.solver.projections import lr_ramp, norms, project_l1_ball, project_to_norm
from ilo.errors import IloError
from ilo.generators.latent_stats import LatentStats


def _per_round(value, k: int):
    return value[min(k, len(value) - 1)] if isinstance(value, (list, tuple)) else value


@dataclass
class ILOConfig:
    """Settings of one solve. List-valued settings are per round (the last entry repeats)."""

    # Defaults tuned on the embedded DCGAN by benchmarks/quality.py (see its results): round 0
    # from 3 random starts to convergence, then the inputs of stages 1 and 2 at a tenth of the
    # learning rate inside an l1 ball of 10% of each state's own l1 norm.
    end_stage: int | None = 2  # last stage whose input state is optimised (None: every stage)
    steps: int | list[int] = field(default_factory=lambda: [300, 100])
    lr: float | list[float] = field(default_factory=lambda: [0.1, 0.01])
    l1_radius: float | None | list = field(default_factory=lambda: [None, 0.1])  # × the state's own l1 norm
    switch: str = "fixed"  # 'fixed' budgets or 'plateau' (the best loss stopped improving for a window)
    plateau_window: int = 25
    plateau_tol: float = 1e-3
    # with 'plateau': an image that has stopped leaves the batch, so it costs no more steps;
    # False keeps it in the batch, frozen (the reference path: the same results, no saving)
    retire_stopped: bool = True
    mse_weight: float = 1.0
    lpips_weight: float = 0.0  # α; needs `lpips`
    geocross_weight: float = 0.1  # β
    latent_norm_weight: float = 0.0  # CSGM's λ‖z‖²
    latent_space: str = "gaussian"  # 'gaussian' (PULSE's), or 'w' (plain w+) for mapped generators
    spherical: bool = True
    noise_maps: int = 5  # how many of the first noise maps round 0 optimises
    restarts: int = 3  # random starts of round 0, run as one batch; each image continues from its best
    # Successive halving of the starts: at each of these fractions of round 0's steps, every
    # image keeps the better half of its remaining starts (by data fit), so compute goes to
    # the starts that will win. Empty: every start runs all of round 0. By a quarter of round 0
    # the ranking of the starts has settled, which it had not by a tenth
    # (benchmarks/results/time_to_quality.md).
    prune_starts_at: list[float] = field(default_factory=lambda: [0.25, 0.5])
    # Held-out selection: this share of each image's measurements is left out of the
    # fit, and the iterate returned is the one that fits those best (over every round and step),
    # so how deep and how free the fit goes is decided per image without the ground truth. 0: fit
    # every measurement and return the iterate that fits them best. Super-resolution is always
    # fitted on every measurement (held_out.holds_out says why).
    hold_out: float = 0.0
    # Ensemble: solves per image, each from its own random starts (and, with hold_out, its own
    # held-out share), whose images are averaged; from a learned start every member begins
    # there and differs by its held-out share and noise streams. Where the generator cannot make the picture,
    # the members' errors differ and their mean is closer to it than any one
    # (benchmarks/results/ensemble.md); it costs about K x the time.
    # 1: the plain solve, which is also member 0 of any ensemble.
    ensemble: int = 1
    seed: int = 0

    def __post_init__(self):
        # Every setting is checked here, when the config is made, so a bad one stops a run
        # before it writes anything (a solve that fails halfway leaves a folder to clean up).
        if self.switch not in ("fixed", "plateau"):
            raise IloError(f"switch must be 'fixed' or 'plateau', got '{self.switch}'")
        for lr in _as_list(self.lr):
            if not (lr > 0 and lr <= 1e37):  # beyond float32's range Adam's step itself fails
                raise IloError(f"learning rates must be positive numbers up to 1e37, got {lr}")
        for steps in _as_list(self.steps):
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
                raise IloError(f"steps per round must be whole numbers of at least 1, got {steps}")
        for radius in _as_list(self.l1_radius):
            if radius is not None and not (math.isfinite(radius) and radius > 0):
                raise IloError(f"l1 radii must be positive numbers (or none), got {radius}")
        if self.end_stage is not None and (isinstance(self.end_stage, bool) or self.end_stage < 0):
            raise IloError(f"end_stage must be a stage index of at least 0, got {self.end_stage}")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, numbers.Integral) or self.restarts < 1:
            raise IloError(f"restarts must be a whole number of at least 1, got {self.restarts}")
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, numbers.Integral) or self.ensemble < 1:
            raise IloError(f"ensemble must be a whole number of solves of at least 1, got {self.ensemble}")
        if self.plateau_window < 1 or not (self.plateau_tol >= 0):
            raise IloError(
                f"the plateau window must be at least 1 and its tolerance at least 0, "
                f"got {self.plateau_window} and {self.plateau_tol}"
            )
        for name in ("mse_weight", "lpips_weight", "geocross_weight", "latent_norm_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise IloError(f"{name} must be a finite number of at least 0, got {value}")
        fractions = list(self.prune_starts_at)
        if any(not (0 < f < 1) for f in fractions) or fractions != sorted(set(fractions)):
            raise IloError(f"prune_starts_at must be increasing fractions of round 0 between 0 and 1, got {fractions}")
        if not (0 <= self.hold_out < 1):
            raise IloError(f"hold_out must be a share of the measurements in [0, 1), got {self.hold_out}")
        if self.noise_maps < 0:
            raise IloError(f"noise_maps must be at least 0, got {self.noise_maps}")
        if self.latent_space not in ("gaussian", "w"):
            raise IloError(f"latent_space must be 'gaussian' or 'w', got '{self.latent_space}'")


def radius_of_round(config: ILOConfig, k: int) -> float | None:
    """The l1 radius round k ran with (× its state's own l1 norm; None: unbounded)."""
    return _per_round(config.l1_radius, k)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def csgm_config(**kw) -> ILOConfig:
    """Bora et al.: Adam on z only, MSE + λ‖z‖², random restarts, no intermediate layers."""
    base = dict(
        end_stage=0,
        steps=[500],
        lr=[0.05],
        geocross_weight=0.0,
        latent_norm_weight=1e-3,
        spherical=False,
        noise_maps=0,
        restarts=3,
        latent_space="gaussian",
        prune_starts_at=[],
    )
    return ILOConfig(**{**base, **kw})


def auto_depth_config(learned: bool = False, fast: bool = False, **kw) -> ILOConfig:
    """ILO that decides per image how deep and how far to go: one stage deeper than
    the defaults, a 3x wider l1 ball, and the iterate chosen by 10% held-out measurements, so an
    image the generator cannot make goes as far as its measurements support and no further.
    Measured in benchmarks/results/held_out_selection.md.

    `learned`: round 0 begins at a learned start (an encoder's guess), so it needs no search
    from random latents (LEARNED_AUTO); `fast` (learned only): the shorter LEARNED_FAST."""
    if fast and not learned:
        raise IloError("the fast setting starts from a learned start: it needs the model's encoder")
    base = LEARNED_FAST if fast else LEARNED_AUTO if learned else AUTO_DEPTH
    return ILOConfig(**{**base, **kw})


AUTO_DEPTH = {"end_stage": 3, "l1_radius": [None, 0.3], "hold_out": 0.1}
# From a learned start one start is enough, and round 0 goes further in fewer steps at a higher
# learning rate: the start is already near the answer, and the rampdown settles it. Chosen and
# checked (on a set made after the choice) in benchmarks/results/time_to_quality_learned_*.md.
LEARNED_AUTO = {**AUTO_DEPTH, "restarts": 1, "prune_starts_at": [], "steps": [200, 30], "lr": [0.5, 0.01]}
LEARNED_FAST = {**LEARNED_AUTO, "steps": [140, 10]}


def pulse_config(**kw) -> ILOConfig:
    """PULSE-style: the latent only, on the sphere, with geocross; no intermediate layers."""
    base = dict(
        end_stage=0,
        steps=[500],
        lr=[0.1],
        geocross_weight=0.1,
        noise_maps=0,
        spherical=True,
        restarts=1,
        prune_starts_at=[],
    )
    return ILOConfig(**{**base, **kw})


@dataclass
class SolveResult:
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


class _Objective:
    """The per-image loss of a generated image against the measurements."""

    def __init__(
        self,
        op: Operator,
        y: torch.Tensor,
        config: ILOConfig,
        lpips: LPIPS | None,
        noise_streams: list[torch.Generator],
        judge: tuple[HeldOut, torch.Tensor] | None = None,
    ):
        self.op, self.y, self.config, self.lpips = op, y, config, lpips
        self.noise_streams = noise_streams  # eq. 4's fresh noise: one stream per row (batch independence)
        self.judge = judge  # the held-out measurements' operator and y, or None (iterates judged by the fit)
        # images with nothing held out (a mask of a handful of pixels) are judged by their fit
        self.unjudged = None if judge is None else judge[0].empty(judge[1].shape[0]).to(y.device)

    def take(self, rows: torch.Tensor) -> _Objective:
        """The objective of some of the rows (their noise streams continue where they were)."""
        streams = [self.noise_streams[i] for i in rows.tolist()]
        return _Objective(
            self.op.select(rows), self.y[rows], self.config, self.lpips, streams, _take_judge(self.judge, rows)
        )

    def score(self, image: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
        """What an iterate is judged by: the held-out loss, or (without, or for an image with
        nothing held out: a mask with a handful of observed pixels) the data fit itself."""
        if self.judge is None or self.unjudged is None:
            return fit
        held, y = self.judge
        return torch.where(self.unjudged, fit, held.data_fit(image, y))

    def draw_noise(self, batch: int, resolution: int) -> torch.Tensor | None:
        """This evaluation's eq. 4 noise for the generated images (None without noise)."""
        return measurement_noise(
            torch.Size((batch, 3, resolution, resolution)), self.op, self.noise_streams, self.y.device
        )

    def __call__(
        self, image: torch.Tensor, noise: torch.Tensor | None, pre_latents: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        seen = image if noise is None else image + noise
        loss = c.mse_weight * self.op.data_fit(seen, self.y)
        if c.lpips_weight:
            # eq. 3's target is a constant of each step (as the exported LPIPS VJP assumes)
            target = self.op.perceptual_target(seen, self.y).detach()
            if target.shape != seen.shape:
                raise IloError("LPIPS needs measurements in image space (inpainting, denoising)")
            loss = loss + c.lpips_weight * self.lpips(target, seen)
        return loss + self.prior(pre_latents, z)

    def prior(self, pre_latents: torch.Tensor, z: torch.Tensor) -> torch.Tensor | float:
        c = self.config
        loss = 0.0
        if c.geocross_weight and pre_latents.shape[1] > 1:
            loss = loss + c.geocross_weight * geocross(pre_latents)
        if c.latent_norm_weight:
            loss = loss + c.latent_norm_weight * z.square().flatten(1).sum(1)
        return loss

    def fused_data_term(self, image_noise: torch.Tensor | None):
        """The measurement the fused graphs compare against: the data term is
        ‖A(G + n) − y‖² = ‖A(G) − (y − A(n))‖² for a linear A, so eq. 4's noise moves into y."""
        return self.y if image_noise is None else self.y - self.op.A(image_noise)


def _take_judge(judge: tuple[HeldOut, torch.Tensor] | None, rows) -> tuple[HeldOut, torch.Tensor] | None:
    return None if judge is None else (judge[0].select(rows), judge[1][rows])


def _initial_z(gen: GeneratorView, seeds: list[int], restart: int) -> torch.Tensor:
    rows = [
        torch.randn(
            gen.n_latent if gen.has_mapping else 1,
            gen.style_dim,
            generator=torch.Generator().manual_seed(s * 1009 + restart),
        )
        for s in seeds
    ]
    z = torch.stack(rows)
    if gen.has_mapping:  # every layer starts from the same latent, as a mapped z would
        z = z[:, :1].expand_as(z).clone()
    return z


class _Latents:
    """Map the optimised variable z to w+ (and to the pre-activation geocross measures)."""

    def __init__(self, gen: GeneratorView, config: ILOConfig, device: torch.device):
        self.gen = gen
        self.stats: LatentStats | None = None
        if gen.has_mapping and config.latent_space == "gaussian":
            stats = gen.latent_stats()  # on the device once, not at every step
            self.stats = LatentStats(stats.mean.to(device), stats.std.to(device), stats.samples, stats.seed)
        self.direct_w = gen.has_mapping and config.latent_space == "w"

    def start(self, z: torch.Tensor) -> torch.Tensor:
        if self.direct_w:  # begin plain w+ optimisation at the mapped random latent
            with torch.no_grad():
                return self.gen.mapping(z[:, 0])[:, None].expand_as(z).clone()
        return z

    def pre(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.stats.std + self.stats.mean if self.stats is not None else z

    def wplus(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen.gaussian_to_w(z, self.stats) if self.stats is not None else z


class _Patience:
    """Plateau switching: an image has stopped when its best held-out loss has not improved by
    a share `tol` for `window` steps. The best so far, not the latest value: a step that went
    up (round 0 starts at a high learning rate) does not stop an image that is still improving."""

    def __init__(self, window: int, tol: float):
        self.window, self.tol = window, tol
        self.best: torch.Tensor | None = None
        self.stale: torch.Tensor | None = None

    def update(self, score: torch.Tensor) -> torch.Tensor:
        """Take a step's scores; which images have stopped."""
        if self.best is None or self.stale is None:
            self.best, self.stale = score.clone(), torch.zeros_like(score, dtype=torch.long)
        else:
            improved = score < self.best - self.tol * self.best.abs()
            self.best = torch.where(improved, score, self.best)
            self.stale = torch.where(improved, torch.zeros_like(self.stale), self.stale + 1)
        return self.stale >= self.window

    def take(self, rows: torch.Tensor) -> None:
        if self.best is not None and self.stale is not None:
            self.best, self.stale = self.best[rows], self.stale[rows]


def _noise_stream(seed: int, start: int | None = None) -> torch.Generator:
    """Eq. 4's noise for an image (its later rounds) or for one of its round-0 starts."""
    return torch.Generator().manual_seed(seed * 7919 + 17 + (0 if start is None else 1_000_003 * (start + 1)))


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
    random start; the others stay random."""
    check_view(gen)  # a generator without a member the solver uses is refused here, not mid-round
    if not isinstance(op, Operator):  # a deepinv physics: imported only then (an optional extra)
        from ilo.engine.problems.deepinv_physics import operator_from_physics

        op = operator_from_physics(op, (3, gen.resolution, gen.resolution))
    config = config or ILOConfig()
    batch = y.shape[0]
    seeds = image_seeds if image_seeds is not None else [config.seed + i for i in range(batch)]
    if len(seeds) != batch:
        raise IloError(f"{len(seeds)} seeds for {batch} images")
    if starts is not None and starts.shape[0] != batch:
        raise IloError(f"{starts.shape[0]} learned starts for {batch} images")
    if config.ensemble > 1:
        return _solve_ensemble(y, op, gen, config, seeds, lpips, progress, max_rows, starts)
    judge = None
    if config.hold_out and holds_out(op):
        full_y = y
        op, y, held = split_measurements(op, y, config.hold_out, seeds)
        judge = (held, full_y)
    if config.lpips_weight and lpips is None:
        raise IloError("lpips_weight > 0 needs an LPIPS module")
    if not torch.isfinite(y).all():
        raise IloError("the measurements contain NaN or inf values")
    if max_rows is not None and max_rows < 1:
        raise IloError(f"max_rows must be at least 1, got {max_rows}")
    per_chunk = batch if max_rows is None else max(1, min(batch, max_rows // config.restarts))
    latents = _Latents(gen, config, y.device)  # once per solve: it loads (and fingerprints for) the latent statistics
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
                    _take_judge(judge, rows),
                    None if starts is None else starts[rows],
                )
            )
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def member_seed(seed: int, member: int) -> int:
    """The seed of an image's ensemble member; member 0 keeps the image's own (its plain solve).
    A hash, not a mix like the one that makes image seeds from `--seed`: with the same mix,
    member m at --seed 0 would be the plain solve at --seed m, and the ensembles of nearby
    seeds would share members."""
    if member == 0:
        return seed
    digest = hashlib.blake2b(f"ensemble member {member} of seed {seed}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


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
        member_seeds,
        lpips,
        progress,
        max_rows,
        None if starts is None else starts[rows],
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


def _solve_chunk(
    y,
    op,
    gen,
    config: ILOConfig,
    latents: _Latents,
    seeds: list[int],
    lpips,
    progress,
    max_rows: int | None,
    judge: tuple[HeldOut, torch.Tensor] | None = None,
    learned: torch.Tensor | None = None,
) -> SolveResult:
    t0 = time.perf_counter()
    batch = y.shape[0]
    objective = _Objective(op, y, config, lpips, [_noise_stream(s) for s in seeds], judge)
    run = _Run(y, op, gen, config, latents, objective, progress)
    end = last_round(config, len(gen.specs))
    group = config.restarts if max_rows is None else max(1, min(config.restarts, max_rows // batch))
    chosen = None
    for first in range(0, config.restarts, group):
        starts = range(first, min(first + group, config.restarts))
        candidate = run.first_round(seeds, starts, learned)
        chosen = candidate if chosen is None else _pick(candidate, chosen)
    assert chosen is not None  # restarts >= 1 (checked by ILOConfig)
    run.seconds["round 0"] = time.perf_counter() - t0
    z, noises = chosen["z"], chosen["noises"]
    state: tuple = ()
    for k in range(1, end + 1):
        t = time.perf_counter()
        with torch.no_grad():  # stage k's input, from the previous round's variables
            state = gen.run_stages(state, run.latents.wplus(z), noises, k - 1, k)
        z, noises, state = run.round(k, z, noises, state)
        run.seconds[f"round {k}"] = time.perf_counter() - t
    run.seconds["total"] = time.perf_counter() - t0
    return SolveResult(
        images=run.best_images,
        wplus=run.latents.wplus(z).detach(),
        states=run.states,
        round_starts=run.starts,
        loss_curves=run.curves,
        best_round=run.best_round,
        best_loss=run.best_loss,
        seconds=run.seconds,
        measurement_curves=run.measured_curves,
        held_out=judge is not None,
    )


def last_round(config: ILOConfig, n_stages: int) -> int:
    """The last round's stage; the default (2) is meant for deep generators: a shallower one
    stops at its last stage."""
    return n_stages - 1 if config.end_stage is None else min(config.end_stage, n_stages - 1)


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


PICK_MARGIN = 1e-4


def _pick(candidate: dict, chosen: dict) -> dict:
    """Per image, keep the round-0 start whose final iterate fits the measurements better. A
    later start must win by a relative margin: near-ties (common in denoising, where the noise
    floor dominates the loss) would otherwise flip on float rounding that differs with the
    batch size, and an image's result would depend on its batch."""
    better = candidate["final_loss"] < chosen["final_loss"] * (1 - PICK_MARGIN)

    def mix(new, old):
        return torch.where(better.reshape(-1, *[1] * (new.ndim - 1)), new, old)

    return {
        "z": mix(candidate["z"], chosen["z"]),
        "final_loss": torch.minimum(candidate["final_loss"], chosen["final_loss"]),
        "noises": [mix(a, b) for a, b in zip(candidate["noises"], chosen["noises"])],
    }


class _Run:
    """The variables, per-image best iterates and records of one solve.

    A run's rows are `slots` x images, slot-major (row = slot * images + image): one slot per
    image in the intermediate rounds, one per remaining random start in round 0."""

    def __init__(
        self,
        y: torch.Tensor,
        op: Operator,
        gen: GeneratorView,
        config: ILOConfig,
        latents: _Latents,
        objective: _Objective,
        progress,
        images: int | None = None,
    ):
        self.y, self.op, self.gen, self.config = y, op, gen, config
        self.latents, self.objective, self.progress = latents, objective, progress
        self.images = y.shape[0] if images is None else images
        device = y.device
        self.best_loss = torch.full((self.images,), float("inf"), device=device)
        self.best_images = torch.zeros(self.images, 3, gen.resolution, gen.resolution, device=device)
        self.best_round = torch.zeros(self.images, dtype=torch.long, device=device)
        self.curves, self.states, self.starts = [], [], []
        self.measured_curves: list[torch.Tensor] = []
        self.seconds: dict = {}
        self.n_opt_noise = min(config.noise_maps, len(gen.stored_noises()))

    def first_round(self, seeds: list[int], starts: range, learned: torch.Tensor | None = None) -> dict:
        """Round 0 from the random starts `starts`, as one batch of images x starts (pruned by
        successive halving when the config says so); per image, the variables of its best start.
        `learned` [images, rows, D] stands in for start 0."""
        images, device = self.images, self.y.device
        rows = torch.arange(images, device=device).repeat(len(starts))
        z0 = torch.cat(
            [learned.cpu() if r == 0 and learned is not None else _initial_z(self.gen, seeds, r) for r in starts]
        ).to(device)  # same starts on any device
        streams = [_noise_stream(s, r) for r in starts for s in seeds]
        objective = _Objective(
            self.op.select(rows),
            self.y[rows],
            self.config,
            self.objective.lpips,
            streams,
            _take_judge(self.objective.judge, rows),
        )
        run = _Run(objective.y, objective.op, self.gen, self.config, self.latents, objective, self.progress, images)
        noises = [x.expand(len(rows), -1, -1, -1) for x in self.gen.stored_noises()]  # round() copies them
        z, noises, _ = run.round(0, self.latents.start(z0), noises, ())
        self._absorb(run)
        if not self.curves:  # the records keep the first group's round 0 (per image, its best start's loss)
            self.curves.append(run.curves[0])
            self.measured_curves.append(run.measured_curves[0])
            self.states.append(())
            self.starts.append(())
        with torch.no_grad():
            final_loss = run.op.data_fit(self.gen.synthesize(self.latents.wplus(z), noises), run.y)
        chosen = None
        for slot in range(z.shape[0] // images):  # in start (or rank) order: ties stay with the earlier
            picked = slice(slot * images, (slot + 1) * images)
            candidate = {"z": z[picked], "noises": [n[picked] for n in noises], "final_loss": final_loss[picked]}
            chosen = candidate if chosen is None else _pick(candidate, chosen)
        assert chosen is not None
        return chosen

    def _absorb(self, other: _Run) -> None:
        """Take another run's per-image best iterates where they are better (strictly)."""
        better = other.best_loss < self.best_loss
        self.best_loss = torch.where(better, other.best_loss, self.best_loss)
        self.best_images[better] = other.best_images[better]
        self.best_round[better] = other.best_round[better]

    def _track(self, measured: torch.Tensor, image: torch.Tensor, k: int, live: torch.Tensor | None = None) -> None:
        """Keep each image's best iterate so far (over its slots: the first of equals).
        `measured` is in the round's layout, `image` has the batch's rows: `live` of the layout
        (None: all of it). A row that left the batch never improves (its value was seen)."""
        value, slot = measured.reshape(-1, self.images).min(0)
        improved = value < self.best_loss
        if image.shape[0] != self.images or live is not None:
            rows = slot * self.images + torch.arange(self.images, device=slot.device)
            if live is not None:
                rows = torch.searchsorted(live, rows).clamp_max(live.numel() - 1)
            image = image[rows]
        self.best_loss = torch.where(improved, value, self.best_loss)
        self.best_images[improved] = image.detach()[improved]
        self.best_round[improved] = k

    def _survivors(self, measured: torch.Tensor) -> torch.Tensor:
        """The rows of the better half of each image's slots (by data fit), slot-major again."""
        per_slot = measured.reshape(-1, self.images)
        keep = math.ceil(per_slot.shape[0] / 2)
        order = per_slot.argsort(dim=0, stable=True)[:keep]
        return (order * self.images + torch.arange(self.images, device=order.device)).flatten()

    def _take(self, rows: torch.Tensor) -> None:
        self.objective = self.objective.take(rows)
        self.y, self.op = self.objective.y, self.objective.op

    def _prune_steps(self, k: int, steps: int) -> set[int]:
        if k != 0 or self.y.shape[0] == self.images:
            return set()
        return {int(f * steps) - 1 for f in self.config.prune_starts_at if int(f * steps) >= 1}

    def _fused_step(self, k: int) -> FusedEvaluation | None:
        """The fused evaluation of round k, where the generator has one for the operator (an
        engine with its loss head) and the objective has no LPIPS term (which needs the image's
        gradient from outside the fused graph)."""
        if self.config.lpips_weight:
            return None
        return self.gen.fused_step(k, self.op, self.y.shape[0], self.n_opt_noise)

    def round(
        self, k: int, z: torch.Tensor, noises: list[torch.Tensor], state: tuple
    ) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        """Optimise round k's variables; returns the optimised latents, noise maps and input
        state of stage k (fewer rows than given where round 0's starts were pruned).

        Rows are numbered in the round's layout (slot-major; it shrinks where starts are
        pruned). With plateau switching, an image that has stopped leaves the batch once no
        pruning is left to do (its values are parked in that layout), so stopped images cost
        nothing; `config.retire_stopped=False` keeps them in the batch, frozen (the reference)."""
        c, gen = self.config, self.gen
        z = z.detach().clone().requires_grad_(True)
        noises = [n.detach().clone() for n in noises]
        state = tuple(s.detach().clone().requires_grad_(True) for s in state)
        opt_noise = (
            range(self.n_opt_noise)
            if k == 0
            else [i for spec in gen.specs[k:] for i in spec.noise_indices if i < self.n_opt_noise]
        )
        noise_vars = [noises[i].requires_grad_(True) for i in opt_noise]
        params = [z, *state, *noise_vars]
        start_norm_z = norms(z.detach(), 1)
        start_norm_noise = [norms(n.detach(), 3) for n in noise_vars]
        start_state = [s.detach().clone() for s in state]
        self.starts.append(tuple(start_state))
        radius = _per_round(c.l1_radius, k)
        steps, lr0 = int(_per_round(c.steps, k)), float(_per_round(c.lr, k))
        optimiser = Adam(params, lr=lr0, betas=(0.9, 0.999))
        frozen = torch.zeros(self.y.shape[0], dtype=torch.bool, device=self.y.device)  # in the layout
        patience, curve, measured_curve = _Patience(c.plateau_window, c.plateau_tol), [], []
        fused = self._fused_step(k)
        prune_after = self._prune_steps(k, steps)
        last_prune = max(prune_after, default=-1)
        retire = c.switch == "plateau" and c.retire_stopped
        live: torch.Tensor | None = None  # layout rows still in the batch (None: all)
        parked: dict | None = None  # the layout's variables, written for rows that left
        last_measured = last_score = last_loss = None
        layout_objective = self.objective

        def narrow(rows: torch.Tensor) -> None:
            """Continue on these rows of the batch (their optimiser moments go with them)."""
            nonlocal z, noises, noise_vars, state, params, start_norm_z, start_norm_noise, start_state, fused
            self._take(rows)
            z = z.detach()[rows].requires_grad_(True)
            noises = [n.detach()[rows] for n in noises]
            noise_vars = [noises[i].requires_grad_(True) for i in opt_noise]
            state = tuple(s.detach()[rows].requires_grad_(True) for s in state)
            params = [z, *state, *noise_vars]
            optimiser.take(params, rows)
            start_norm_z, start_norm_noise = start_norm_z[rows], [r[rows] for r in start_norm_noise]
            start_state = [s[rows] for s in start_state]
            fused = self._fused_step(k)

        def park() -> dict:
            """The layout's variables with the batch's current values written in."""
            into = parked or {
                "z": z.detach().clone(),
                "noises": [n.detach().clone() for n in noises],
                "state": [s.detach().clone() for s in state],
            }
            if live is not None:
                into["z"][live] = z.detach()
                for whole, part in zip(into["noises"] + into["state"], noises + list(state)):
                    whole[live] = part.detach()
            return into

        for step in range(steps):
            batch = self.y.shape[0]
            optimiser.lr = lr_ramp(step / steps, lr0)
            wplus = self.latents.wplus(z)
            noise = self.objective.draw_noise(batch, gen.resolution)
            if fused is not None:  # one engine call: stages, image, loss and its gradient
                data, image = fused(state, wplus, noises, self.objective.fused_data_term(noise))
                loss = c.mse_weight * data + self.objective.prior(self.latents.pre(z), z)
            else:
                data = None
                image = gen.image_from_state(gen.run_stages(state, wplus, noises, k))
                loss = self.objective(image, noise, self.latents.pre(z), z)
            if not torch.isfinite(loss).all():
                raise IloError(
                    f"the optimisation diverged (loss is NaN/inf) in round {k}, step {step}; lower the learning rate"
                )
            with torch.no_grad():
                # without eq. 4's noise the fused graph's data term is the data fit itself
                measured = data.detach() if data is not None and noise is None else self.op.data_fit(image, self.y)
                score = self.objective.score(image, measured)
                if live is not None:  # rows that left keep their last values in the records
                    assert last_measured is not None and last_score is not None and last_loss is not None
                    loss_now = last_loss.index_copy(0, live, loss.detach())
                    measured = last_measured.index_copy(0, live, measured)
                    score = last_score.index_copy(0, live, score)
                else:
                    loss_now = loss.detach()
                last_measured, last_score, last_loss = measured, score, loss_now
                self._track(score, image, k, live)
            frozen_here = frozen if live is None else frozen[live]
            before = [p.detach().clone() for p in params] if frozen_here.any() else None
            optimiser.zero_grad()
            # only the round's variables: a generator with trainable weights (a module fresh
            # from training code) gets no weight gradients, neither computed nor stored on it
            loss.sum().backward(inputs=params)
            optimiser.step()
            with torch.no_grad():
                _project(z, start_norm_z, noise_vars, start_norm_noise, state, start_state, radius, c)
                for p, old in zip(params, before or []):  # images that stopped keep their values
                    p[frozen_here] = old[frozen_here]
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise IloError(
                        f"the optimisation diverged (variables became NaN/inf) in round {k}, step {step}; lower the learning rate"
                    )
            curve.append(loss_now.reshape(-1, self.images).min(0).values)
            measured_curve.append(measured.reshape(-1, self.images).min(0).values)
            if c.switch == "plateau":  # stops where the held-out loss stops falling
                frozen = frozen | patience.update(score)  # not in place: frozen_here is the old one
                if frozen.all():
                    break
                # an image leaves one step after it stopped: that step measured its last values
                if retire and step > last_prune and bool(frozen_here.any()):
                    if live is None:  # the layout's objective, for the rounds after this one
                        layout_objective = self.objective
                    parked = park()
                    positions = (~frozen_here).nonzero().flatten()
                    live = positions if live is None else live[positions]
                    narrow(positions)
            if self.progress is not None:
                self.progress(k, step, steps, measured)
            if step in prune_after:  # successive halving: the rest of round 0 runs on fewer rows
                rows = self._survivors(measured)
                narrow(rows)
                frozen = frozen[rows]
                patience.take(rows)
        if live is not None:
            parked = park()
            z, noises, state = parked["z"], parked["noises"], tuple(parked["state"])
            self.objective, self.y, self.op = layout_objective, layout_objective.y, layout_objective.op
        self.curves.append(torch.stack(curve))
        self.measured_curves.append(torch.stack(measured_curve))
        self.states.append(tuple(s.detach() for s in state))
        return z.detach(), [n.detach() for n in noises], tuple(s.detach() for s in state)


def _project(z, start_norm_z, noise_vars, start_norm_noise, state, start_state, radius, config):
    if config.spherical:
        z.copy_(project_to_norm(z, start_norm_z, 1))
        for n, r in zip(noise_vars, start_norm_noise):
            n.copy_(project_to_norm(n, r, 3))
    if radius is not None:
        for s, s0 in zip(state, start_state):
            flat0 = s0.flatten(1)
            delta = project_l1_ball((s - s0).flatten(1), radius * flat0.abs().sum(1))
            s.copy_((flat0 + delta).reshape(s.shape))
