"""The ILO solver (DESIGN §2) and the CSGM / PULSE-style baselines, on any staged generator.

`solve(y, operator, generator, config) -> SolveResult`. Round 0 optimises the latents (and the
first noise maps); round k >= 1 drops stages < k and optimises the input state of stage k,
initialised from the previous round, with the latents and noise maps the remaining stages use.

Every loss is a sum of per-image terms and Adam is elementwise, so one optimiser over the
batch equals one optimiser per image; plateau switching freezes an image, not the batch, and
random starts come from per-image seeds. An image's result therefore does not depend on what
else is in its batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ilo.errors import IloError
from ilo.engine.losses import LPIPS, add_measurement_noise, geocross, inpainting_fill, measurement_mse
from ilo.engine.operators import Operator
from ilo.engine.projections import lr_ramp, norms, project_l1_ball, project_to_norm
from ilo.export.latent_stats import LatentStats, latent_stats
from ilo.export.staged import StagedGenerator


def _per_round(value, k: int):
    return value[min(k, len(value) - 1)] if isinstance(value, (list, tuple)) else value


@dataclass
class ILOConfig:
    """Settings of one solve. List-valued settings are per round (the last entry repeats)."""

    end_stage: int | None = None  # last stage whose input state is optimised (None: all but the last)
    steps: int | list[int] = field(default_factory=lambda: [300, 100])
    lr: float | list[float] = field(default_factory=lambda: [0.1, 0.01])
    l1_radius: float | None | list = field(default_factory=lambda: [None, 0.1])  # × the state's own l1 norm
    switch: str = "fixed"  # 'fixed' budgets or 'plateau' (relative improvement over a window)
    plateau_window: int = 25
    plateau_tol: float = 1e-3
    mse_weight: float = 1.0
    lpips_weight: float = 0.0  # α; needs `lpips`
    geocross_weight: float = 0.1  # β
    latent_norm_weight: float = 0.0  # CSGM's λ‖z‖²
    latent_space: str = "gaussian"  # 'gaussian' (PULSE's), or 'w' (plain w+) for mapped generators
    spherical: bool = True
    noise_maps: int = 5  # how many of the first noise maps round 0 optimises
    restarts: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.switch not in ("fixed", "plateau"):
            raise IloError(f"switch must be 'fixed' or 'plateau', got '{self.switch}'")
        for lr in self.lr if isinstance(self.lr, (list, tuple)) else [self.lr]:
            if not (lr > 0 and lr < float("inf")):
                raise IloError(f"learning rates must be positive finite numbers, got {lr}")
        if self.latent_space not in ("gaussian", "w"):
            raise IloError(f"latent_space must be 'gaussian' or 'w', got '{self.latent_space}'")


def csgm_config(**kw) -> ILOConfig:
    """Bora et al.: Adam on z only, MSE + λ‖z‖², random restarts, no intermediate layers."""
    base = dict(end_stage=0, steps=[500], lr=[0.05], geocross_weight=0.0, latent_norm_weight=1e-3,
                spherical=False, noise_maps=0, restarts=3, latent_space="gaussian")  # fmt: skip
    return ILOConfig(**{**base, **kw})


def pulse_config(**kw) -> ILOConfig:
    """PULSE-style: the latent only, on the sphere, with geocross; no intermediate layers."""
    base = dict(end_stage=0, steps=[500], lr=[0.1], geocross_weight=0.1, noise_maps=0, spherical=True)
    return ILOConfig(**{**base, **kw})


@dataclass
class SolveResult:
    images: torch.Tensor  # [B, 3, H, W] best iterate per image
    wplus: torch.Tensor  # [B, n_latent, D] final latents
    states: list  # input state of each round's first stage, as optimised
    round_starts: list  # the same states as each round began
    loss_curves: list[torch.Tensor]  # per round: [steps, B] total loss
    best_round: torch.Tensor  # [B]
    best_loss: torch.Tensor  # [B] measurement loss of the returned images
    seconds: dict = field(default_factory=dict)


class _Objective:
    """The per-image loss of a generated image against the measurements."""

    def __init__(self, op: Operator, y: torch.Tensor, config: ILOConfig, lpips: LPIPS | None, seeds: list[int]):
        self.op, self.y, self.config, self.lpips = op, y, config, lpips
        # eq. 4's fresh noise comes from one stream per image (batch independence)
        self.noise_streams = [torch.Generator().manual_seed(s * 7919 + 17) for s in seeds]

    def __call__(self, image: torch.Tensor, pre_latents: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        seen = add_measurement_noise(image, self.op, self.noise_streams)
        loss = c.mse_weight * measurement_mse(self.op, seen, self.y)
        if c.lpips_weight:
            target = inpainting_fill(self.op, seen, self.y)
            if target.shape != seen.shape:
                raise IloError("LPIPS needs measurements in image space (inpainting, denoising)")
            loss = loss + c.lpips_weight * self.lpips(target, seen)
        if c.geocross_weight and pre_latents.shape[1] > 1:
            loss = loss + c.geocross_weight * geocross(pre_latents)
        if c.latent_norm_weight:
            loss = loss + c.latent_norm_weight * z.square().flatten(1).sum(1)
        return loss


def _initial_z(gen: StagedGenerator, seeds: list[int], restart: int) -> torch.Tensor:
    rows = [torch.randn(gen.n_latent if gen.has_mapping else 1, gen.style_dim,
                        generator=torch.Generator().manual_seed(s * 1009 + restart)) for s in seeds]  # fmt: skip
    z = torch.stack(rows)
    if gen.has_mapping:  # every layer starts from the same latent, as a mapped z would
        z = z[:, :1].expand_as(z).clone()
    return z


class _Latents:
    """Map the optimised variable z to w+ (and to the pre-activation geocross measures)."""

    def __init__(self, gen: StagedGenerator, config: ILOConfig):
        self.gen = gen
        self.stats: LatentStats | None = None
        if gen.has_mapping and config.latent_space == "gaussian":
            self.stats = latent_stats(gen)
        self.direct_w = gen.has_mapping and config.latent_space == "w"

    def start(self, z: torch.Tensor) -> torch.Tensor:
        if self.direct_w:  # begin plain w+ optimisation at the mapped random latent
            with torch.no_grad():
                return self.gen.mapping(z[:, 0])[:, None].expand_as(z).clone()
        return z

    def pre(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.stats.std + self.stats.mean if self.stats is not None else z

    def wplus(self, z: torch.Tensor) -> torch.Tensor:
        if self.stats is not None:
            return self.stats.to_w(z)
        return z


def _plateaued(history: list[torch.Tensor], window: int, tol: float) -> torch.Tensor:
    if len(history) <= window:
        return torch.zeros_like(history[-1], dtype=torch.bool)
    old, new = history[-window - 1], history[-1]
    return (old - new) / old.abs().clamp_min(1e-12) < tol


def solve(y: torch.Tensor, op: Operator, gen: StagedGenerator, config: ILOConfig | None = None,
          image_seeds: list[int] | None = None, lpips: LPIPS | None = None, progress=None) -> SolveResult:  # fmt: skip
    """Restore images from measurements y = A(x) (+ noise) by ILO over `gen`."""
    config = config or ILOConfig()
    batch = y.shape[0]
    seeds = image_seeds if image_seeds is not None else [config.seed + i for i in range(batch)]
    if len(seeds) != batch:
        raise IloError(f"{len(seeds)} seeds for {batch} images")
    if config.lpips_weight and lpips is None:
        raise IloError("lpips_weight > 0 needs an LPIPS module")
    t0 = time.perf_counter()
    latents = _Latents(gen, config)
    objective = _Objective(op, y, config, lpips, seeds)
    best = None
    for restart in range(config.restarts):
        run = _solve_once(y, op, gen, config, latents, objective, _initial_z(gen, seeds, restart), progress)
        if best is None:
            best = run
        else:  # keep, per image, the restart with the lower measurement loss
            better = run.best_loss < best.best_loss
            for name in ("images", "wplus", "best_round", "best_loss"):
                mask = better.reshape(-1, *[1] * (getattr(run, name).ndim - 1))
                setattr(best, name, torch.where(mask, getattr(run, name), getattr(best, name)))
    best.seconds["total"] = time.perf_counter() - t0
    return best


def _solve_once(y, op, gen, config, latents, objective, z0, progress) -> SolveResult:
    batch = y.shape[0]
    n_stages = len(gen.stages)
    end = n_stages - 1 if config.end_stage is None else min(config.end_stage, n_stages - 1)
    z = latents.start(z0).requires_grad_(True)
    noises = [x.expand(batch, -1, -1, -1).clone() for x in gen.stored_noises()]
    n_opt_noise = min(config.noise_maps, len(noises))
    state: tuple = ()
    best_loss = torch.full((batch,), float("inf"))
    best_images = torch.zeros(batch, 3, gen.resolution, gen.resolution)
    best_round = torch.zeros(batch, dtype=torch.long)
    curves, states, starts = [], [], []

    for k in range(end + 1):
        if k > 0:  # initialise stage k's input from the previous round's variables
            with torch.no_grad():
                state = gen.run_stages(state, latents.wplus(z), noises, k - 1, k)
        state = tuple(s.detach().clone().requires_grad_(True) for s in state)
        noise_vars = [n.requires_grad_(True) for n in noises[:n_opt_noise]] if k == 0 else [
            noises[i].requires_grad_(True) for s in gen.specs[k:] for i in s.noise_indices if i < n_opt_noise
        ]  # fmt: skip
        params = [z, *state, *noise_vars]
        start_norm_z = norms(z.detach(), 1)
        start_norm_noise = [norms(n.detach(), 3) for n in noise_vars]
        start_state = [s.detach().clone() for s in state]
        starts.append(tuple(start_state))
        radius = _per_round(config.l1_radius, k)
        steps, lr0 = int(_per_round(config.steps, k)), float(_per_round(config.lr, k))
        optimiser = torch.optim.Adam(params, lr=lr0, betas=(0.9, 0.999))
        frozen = torch.zeros(batch, dtype=torch.bool)
        history, curve = [], []
        for step in range(steps):
            for group in optimiser.param_groups:
                group["lr"] = lr_ramp(step / steps, lr0)
            image = gen.image_from_state(gen.run_stages(state, latents.wplus(z), noises, k))
            loss = objective(image, latents.pre(z), z)
            if not torch.isfinite(loss).all():
                raise IloError(f"the optimisation diverged (loss is NaN/inf) in round {k}, step {step}; lower the learning rate")
            with torch.no_grad():
                measured = measurement_mse(op, image, y)
                improved = measured < best_loss
                best_loss = torch.where(improved, measured, best_loss)
                best_images[improved] = image.detach()[improved]
                best_round[improved] = k
            before = [p.detach().clone() for p in params] if frozen.any() else None
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimiser.step()
            with torch.no_grad():
                _project(z, start_norm_z, noise_vars, start_norm_noise, state, start_state, radius, config)
                for p, old in zip(params, before or []):  # images that stopped keep their values
                    p[frozen] = old[frozen]
            curve.append(loss.detach())
            history.append(measured)
            if config.switch == "plateau":
                frozen |= _plateaued(history, config.plateau_window, config.plateau_tol)
                if frozen.all():
                    break
            if progress is not None:
                progress(k, step, steps, measured)
        curves.append(torch.stack(curve))
        states.append(tuple(s.detach() for s in state))
    return SolveResult(best_images, latents.wplus(z).detach(), states, starts, curves, best_round, best_loss)


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
