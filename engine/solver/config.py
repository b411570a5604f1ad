"""The solver's settings (`ILOConfig`) and the presets of the methods built on it: CSGM, PULSE,
and ILO that picks its depth per image by held-out measurements (from random or learned starts)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from ilo.errors import IloError


def per_round(value, k: int):
    """Round k's entry of a per-round setting (the last entry repeats), or the setting itself."""
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
    # the ranking of the starts has settled, which it had not by a tenth (benchmarks/time_to_quality.py
    # measures a schedule's seconds against its PSNR).
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
    return per_round(config.l1_radius, k)


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


def last_round(config: ILOConfig, n_stages: int) -> int:
    """The last round's stage; the default (2) is meant for deep generators: a shallower one
    stops at its last stage."""
    return n_stages - 1 if config.end_stage is None else min(config.end_stage, n_stages - 1)
