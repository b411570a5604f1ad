"""The restoration methods, one row each: how a method is configured, what it needs and what it
gives. Whatever differs between methods is read from its row, so the rest of the code asks the
method and never compares its name; a new method is a new row (and the module that solves it).

`ilo.choices.METHODS` keeps the names alone, for the command line's parser (which must not load
torch); an assertion below holds the two to the same names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from ilo.choices import METHODS as METHOD_NAMES
from ilo.engine.api.batch_solve import SolveJob, OnePass, one_pass_batch, searched_batch
from ilo.engine.api.choice import chosen_batch
from ilo.engine.api.results import BatchResult
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.solver.baselines import bm3d_denoise
from ilo.engine.solver.classical import check_installed, prior_pass
from ilo.engine.solver.encoder import encoded_images
from ilo.engine.solver.ilo_solver import ILOConfig, auto_depth_config, csgm_config, pulse_config
from ilo.errors import InputError


def _bm3d(encoder, op: Operator, y: torch.Tensor, model, task: TaskSpec) -> tuple[torch.Tensor, float]:
    return bm3d_denoise(y, task.sigma)


def _encoder_alone(encoder, op: Operator, y: torch.Tensor, model, task: TaskSpec) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    return encoded_images(encoder, op, y, model).cpu(), time.perf_counter() - t0


@dataclass(frozen=True)
class Method:
    """One method. `configure` makes its solver settings from the caller's overrides (None: a
    single pass, `one_pass`, that optimises nothing); `solve` restores a batch with it."""

    name: str
    label: str  # as messages name it
    configure: Callable[..., ILOConfig] | None = None
    one_pass: OnePass | None = None
    learned_start_by_default: bool = False  # takes the model's own encoder where it has one
    is_the_encoder: bool = False  # the method is the encoder's guess: it needs one
    has_fast: bool = False  # offers a faster schedule from the learned start
    denoiser: bool = False  # serves only tasks a denoiser can (TaskKind.bm3d)
    takes_physics: bool = True  # can solve a DeepInverse physics' measurements
    check_extra: Callable[[], None] | None = None  # refuses, naming it, an optional extra that is missing
    chooses: bool = False  # after its search, takes per image the candidate of smallest estimated error

    @property
    def optimises(self) -> bool:
        """Whether it searches the generator (and so has loss curves, rounds and a memory cost)."""
        return self.configure is not None

    def config(self, learned: bool = False, fast: bool = False, **overrides) -> ILOConfig | None:
        """Its solver settings with the caller's overrides (None where nothing is optimised).
        `learned`: the solve starts from a learned start; `fast`: the faster schedule from it."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if fast and not self.has_fast:
            raise InputError(f"the fast setting is ilo-auto's schedule from a learned start, not {self.name}'s")
        if self.configure is None:
            if overrides:
                raise InputError(f"{self.label} takes no solver settings (got {', '.join(sorted(overrides))})")
            return None
        if fast and not learned:
            raise InputError(
                "the fast setting starts from the model's encoder, and this model has none: train one "
                "with `ilo export --model MODEL --encoder` (cached for later runs)"
            )
        if self.has_fast:
            return self.configure(learned=learned, fast=fast, **overrides)
        return self.configure(**overrides)

    def solve(self, batch: SolveJob) -> BatchResult:
        """The batch solved this method's way: its single pass, or the generator's search."""
        if self.one_pass is not None:
            return one_pass_batch(batch, self.one_pass)
        return chosen_batch(batch) if self.chooses else searched_batch(batch)

    def check_physics(self) -> None:
        """Refuse a DeepInverse physics where this method cannot solve one."""
        if not self.takes_physics:
            raise InputError(
                f"{self.label} takes no physics here: use deepinv.models.BM3D, or method "
                + ", ".join(f"'{row.name}'" for row in REGISTRY.values() if row.takes_physics)
            )

    def check_task(self, task: TaskSpec) -> None:
        """Refuse what this method cannot run: its optional extra missing, or a task it does not serve
        (checked where the method is chosen, before anything is loaded)."""
        if self.check_extra is not None:
            self.check_extra()
        if self.denoiser and not task.kind.bm3d:
            raise InputError(f"{self.label} is a denoiser: use it with --task denoise")


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ilo", "ILO", configure=ILOConfig),
        Method("ilo-auto", "ilo-auto", configure=auto_depth_config, learned_start_by_default=True, has_fast=True),
        # ilo-auto, then per image the better of it and the classical methods by estimated error (api/choice.py)
        Method(
            "choose",
            "the per-image choice",
            configure=auto_depth_config,
            learned_start_by_default=True,
            has_fast=True,
            chooses=True,
        ),
        Method("csgm", "CSGM", configure=csgm_config),
        Method("pulse", "PULSE", configure=pulse_config),
        Method("bm3d", "BM3D", one_pass=_bm3d, denoiser=True, takes_physics=False),
        Method("encoder", "the encoder alone", one_pass=_encoder_alone, is_the_encoder=True),
        # weight-free priors solved by FISTA through DeepInverse (an optional extra), at each task's tuned weight
        Method("tv", "TV", one_pass=prior_pass("tv"), check_extra=partial(check_installed, "tv")),
        Method(
            "wavelet",
            "the wavelet prior",
            one_pass=prior_pass("wavelet"),
            check_extra=partial(check_installed, "wavelet"),
        ),
    )
}
assert tuple(REGISTRY) == METHOD_NAMES, "ilo.choices.METHODS names the same methods, in the same order"


def method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method '{name}' (choose from {', '.join(REGISTRY)})") from None
