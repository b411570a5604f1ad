"""One round's steps: evaluate the generator from the round's variables, keep each image's best
iterate, take an Adam step and project back onto the round's constraints; round 0 prunes its
starts as it goes, and with plateau switching an image that has stopped leaves the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ilo.engine.solver.adam import Adam
from ilo.engine.solver.best_iterates import BestIterates
from ilo.engine.solver.config import ILOConfig, per_round
from ilo.engine.solver.generator_view import FusedEvaluation, GeneratorView
from ilo.engine.solver.latents import Latents
from ilo.engine.solver.objective import Objective
from ilo.engine.solver.patience import Patience
from ilo.engine.solver.projections import lr_ramp
from ilo.engine.solver.round_variables import Parked, RoundVariables
from ilo.errors import IloError


@dataclass(frozen=True)
class SolveSetting:
    """What every round of a solve shares."""

    gen: GeneratorView
    config: ILOConfig
    latents: Latents
    progress: Callable | None  # progress(round, step, steps, measured) after each step, or None
    images: int  # the images a batch's rows are slots of
    noise_maps: int  # how many of the first noise maps round 0 optimises (at most the generator's)


@dataclass
class StepRecord:
    """One step's per-row values in the round's layout: the total loss, the data fit and the score
    an iterate is judged by."""

    loss: torch.Tensor
    measured: torch.Tensor
    score: torch.Tensor

    def written_in(self, live: torch.Tensor, now: StepRecord) -> StepRecord:
        """These values with the batch's new ones written in at the layout's rows `live`."""
        return StepRecord(
            loss=self.loss.index_copy(0, live, now.loss),
            measured=self.measured.index_copy(0, live, now.measured),
            score=self.score.index_copy(0, live, now.score),
        )


class RoundLoop:
    """Round k's steps over a batch whose rows are numbered in the round's layout (slots x
    images, slot-major; it shrinks where round 0's starts are pruned). With plateau switching an
    image that has stopped leaves the batch once no pruning is left to do (its values are parked
    in the layout), so stopped images cost nothing; `config.retire_stopped=False` keeps them in
    the batch, frozen (the reference)."""

    def __init__(
        self, k: int, setting: SolveSetting, objective: Objective, best: BestIterates, variables: RoundVariables
    ):
        c = setting.config
        self.k, self.setting, self.best, self.variables = k, setting, best, variables
        self.objective = self.layout_objective = objective  # the layout's: for the rounds after this one
        self.steps, self.lr0 = int(per_round(c.steps, k)), float(per_round(c.lr, k))
        self.radius = per_round(c.l1_radius, k)
        self.optimiser = Adam(variables.params, lr=self.lr0, betas=(0.9, 0.999))
        rows = objective.y.shape[0]
        self.frozen = torch.zeros(rows, dtype=torch.bool, device=objective.y.device)  # in the layout
        self.patience = Patience(c.plateau_window, c.plateau_tol)
        self.curve: list[torch.Tensor] = []
        self.measured_curve: list[torch.Tensor] = []
        self.fused = self._fused_step()
        self.prune_after = _prune_steps(c, k, self.steps, rows, setting.images)
        self.last_prune = max(self.prune_after, default=-1)
        self.retire = c.switch == "plateau" and c.retire_stopped
        self.live: torch.Tensor | None = None  # layout rows still in the batch (None: all)
        self.parked: Parked | None = None  # the layout's values, written for rows that left
        self.last: StepRecord | None = None

    def optimise(self) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        """Run the round; returns the optimised latents, noise maps and input state of stage k,
        on every row of the layout (fewer than given where round 0's starts were pruned)."""
        c, images = self.setting.config, self.setting.images
        for step in range(self.steps):
            self.optimiser.lr = lr_ramp(step / self.steps, self.lr0)
            loss, image, data, noise = self._evaluate(step)
            now = self._record(loss, image, data, noise)
            frozen_here = self.frozen if self.live is None else self.frozen[self.live]
            self._descend(loss, frozen_here, step)
            self.curve.append(now.loss.reshape(-1, images).min(0).values)
            self.measured_curve.append(now.measured.reshape(-1, images).min(0).values)
            if c.switch == "plateau" and self._switch(step, now.score, frozen_here):
                break
            if self.setting.progress is not None:
                self.setting.progress(self.k, step, self.steps, now.measured)
            if step in self.prune_after:  # successive halving: the rest of round 0 runs on fewer rows
                self._prune(now.measured)
        return self._values()

    def _evaluate(self, step: int):
        """The batch's loss, images, fused data term (None: not fused) and eq. 4 noise."""
        gen, latents, objective, v = self.setting.gen, self.setting.latents, self.objective, self.variables
        wplus = latents.wplus(v.z)
        noise = objective.draw_noise(objective.y.shape[0], gen.resolution)
        if self.fused is not None:  # one engine call: stages, image, loss and its gradient
            data, image = self.fused(v.state, wplus, v.noises, objective.fused_data_term(noise))
            loss = self.setting.config.mse_weight * data + objective.prior(latents.pre(v.z), v.z)
        else:
            data = None
            image = gen.image_from_state(gen.run_stages(v.state, wplus, v.noises, self.k))
            loss = objective(image, noise, latents.pre(v.z), v.z)
        if not torch.isfinite(loss).all():
            raise IloError(
                f"the optimisation diverged (loss is NaN/inf) in round {self.k}, step {step}; lower the learning rate"
            )
        return loss, image, data, noise

    @torch.no_grad()
    def _record(self, loss, image, data, noise) -> StepRecord:
        """This step's values in the layout, each image's best iterate kept."""
        objective = self.objective
        # without eq. 4's noise the fused graph's data term is the data fit itself
        measured = data.detach() if data is not None and noise is None else objective.op.data_fit(image, objective.y)
        now = StepRecord(loss=loss.detach(), measured=measured, score=objective.score(image, measured))
        if self.live is not None:  # rows that left keep their last values in the records
            assert self.last is not None
            now = self.last.written_in(self.live, now)
        self.last = now
        self.best.track(now.score, image, self.k, self.live)
        return now

    def _descend(self, loss: torch.Tensor, frozen_here: torch.Tensor, step: int) -> None:
        """One Adam step and the projections; images that stopped keep their values."""
        v = self.variables
        before = [p.detach().clone() for p in v.params] if frozen_here.any() else None
        self.optimiser.zero_grad()
        # only the round's variables: a generator with trainable weights (a module fresh
        # from training code) gets no weight gradients, neither computed nor stored on it
        loss.sum().backward(inputs=v.params)
        self.optimiser.step()
        with torch.no_grad():
            v.project(self.radius, self.setting.config.spherical)
            for p, old in zip(v.params, before or []):
                p[frozen_here] = old[frozen_here]
            if not all(bool(torch.isfinite(p).all()) for p in v.params):
                raise IloError(
                    f"the optimisation diverged (variables became NaN/inf) in round {self.k}, step {step}; "
                    "lower the learning rate"
                )

    def _switch(self, step: int, score: torch.Tensor, frozen_here: torch.Tensor) -> bool:
        """Plateau switching, where the held-out loss stops falling: whether every image has
        stopped. An image leaves the batch one step after it stopped: that step measured its
        last values."""
        self.frozen = self.frozen | self.patience.update(score)  # not in place: frozen_here is the old one
        if self.frozen.all():
            return True
        if self.retire and step > self.last_prune and bool(frozen_here.any()):
            if self.live is None:
                self.layout_objective = self.objective
            self.parked = self.variables.park(self.parked, self.live)
            positions = (~frozen_here).nonzero().flatten()
            self.live = positions if self.live is None else self.live[positions]
            self._narrow(positions)
        return False

    def _prune(self, measured: torch.Tensor) -> None:
        rows = _better_half(measured, self.setting.images)
        self._narrow(rows)
        self.frozen = self.frozen[rows]
        self.patience.take(rows)

    def _narrow(self, rows: torch.Tensor) -> None:
        """Continue on these rows of the batch (their optimiser moments go with them)."""
        self.objective = self.objective.take(rows)
        self.variables.narrow(rows)
        self.optimiser.take(self.variables.params, rows)
        self.fused = self._fused_step()

    def _fused_step(self) -> FusedEvaluation | None:
        """The fused evaluation of the round, where the generator has one for the operator (an
        engine with its loss head) and the objective has no LPIPS term (which needs the image's
        gradient from outside the fused graph)."""
        if self.setting.config.lpips_weight:
            return None
        return self.setting.gen.fused_step(
            self.k, self.objective.op, self.objective.y.shape[0], self.setting.noise_maps
        )

    def _values(self) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        """The round's final values on the layout's rows; the layout's objective back."""
        v = self.variables
        z, noises, state = v.z, v.noises, v.state
        if self.live is not None:
            parked = v.park(self.parked, self.live)
            z, noises, state = parked.z, parked.noises, tuple(parked.state)
            self.objective = self.layout_objective
        return z.detach(), [n.detach() for n in noises], tuple(s.detach() for s in state)


def _prune_steps(config: ILOConfig, k: int, steps: int, rows: int, images: int) -> set[int]:
    """The steps after which round 0 keeps the better half of each image's starts (none once
    one start per image is left)."""
    if k != 0 or rows == images:
        return set()
    return {int(f * steps) - 1 for f in config.prune_starts_at if int(f * steps) >= 1}


def _better_half(measured: torch.Tensor, images: int) -> torch.Tensor:
    """The rows of the better half of each image's slots (by data fit), slot-major again."""
    per_slot = measured.reshape(-1, images)
    keep = math.ceil(per_slot.shape[0] / 2)
    order = per_slot.argsort(dim=0, stable=True)[:keep]
    return (order * images + torch.arange(images, device=order.device)).flatten()
