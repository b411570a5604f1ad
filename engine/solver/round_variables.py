"""What one round optimises: the latents, the input state of its first stage and some noise
maps, with the values the round's projections measure from (where each began)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ilo.engine.solver.projections import norms, project_l1_ball, project_to_norm


@dataclass
class Parked:
    """The values of every row of a round's layout, kept for the rows that left its batch."""

    z: torch.Tensor
    noises: list[torch.Tensor]
    state: list[torch.Tensor]


@dataclass
class RoundVariables:
    """A round's variables on the rows of its batch. `optimised` are the indices of the noise
    maps the round optimises (the others are carried along as constants); `start_*` are where
    the round began: the spherical projection keeps the latents' and noise maps' norms, the l1
    ball is centred on the start state."""

    z: torch.Tensor
    noises: list[torch.Tensor]
    state: tuple[torch.Tensor, ...]
    optimised: Sequence[int]
    start_norm_z: torch.Tensor
    start_norm_noise: list[torch.Tensor]
    start_state: list[torch.Tensor]

    @classmethod
    def begin(
        cls, z: torch.Tensor, noises: list[torch.Tensor], state: tuple, optimised: Sequence[int]
    ) -> RoundVariables:
        """Fresh leaf copies of the values a round starts from, the optimised ones needing gradients."""
        z = z.detach().clone().requires_grad_(True)
        noises = [n.detach().clone() for n in noises]
        state = tuple(s.detach().clone().requires_grad_(True) for s in state)
        noise_vars = [noises[i].requires_grad_(True) for i in optimised]
        return cls(
            z=z,
            noises=noises,
            state=state,
            optimised=optimised,
            start_norm_z=norms(z.detach(), 1),
            start_norm_noise=[norms(n.detach(), 3) for n in noise_vars],
            start_state=[s.detach().clone() for s in state],
        )

    @property
    def noise_vars(self) -> list[torch.Tensor]:
        return [self.noises[i] for i in self.optimised]

    @property
    def params(self) -> list[torch.Tensor]:
        """The tensors the optimiser steps, in its order."""
        return [self.z, *self.state, *self.noise_vars]

    def narrow(self, rows: torch.Tensor) -> None:
        """Continue on these rows of the batch (as new leaves)."""
        self.z = self.z.detach()[rows].requires_grad_(True)
        self.noises = [n.detach()[rows] for n in self.noises]
        for i in self.optimised:
            self.noises[i].requires_grad_(True)
        self.state = tuple(s.detach()[rows].requires_grad_(True) for s in self.state)
        self.start_norm_z = self.start_norm_z[rows]
        self.start_norm_noise = [r[rows] for r in self.start_norm_noise]
        self.start_state = [s[rows] for s in self.start_state]

    def park(self, into: Parked | None, live: torch.Tensor | None) -> Parked:
        """The layout's values with the batch's current ones written in at `live` (the layout's
        rows still in the batch; None: the batch is the whole layout, copied)."""
        into = into or Parked(
            z=self.z.detach().clone(),
            noises=[n.detach().clone() for n in self.noises],
            state=[s.detach().clone() for s in self.state],
        )
        if live is not None:
            into.z[live] = self.z.detach()
            for whole, part in zip(into.noises + into.state, self.noises + list(self.state)):
                whole[live] = part.detach()
        return into

    @torch.no_grad()
    def project(self, radius: float | None, spherical: bool) -> None:
        """Back onto the round's constraints after a step: the latents and noise maps onto the
        spheres they started on, the state into the l1 ball of `radius` x its start's l1 norm."""
        if spherical:
            self.z.copy_(project_to_norm(self.z, self.start_norm_z, 1))
            for n, r in zip(self.noise_vars, self.start_norm_noise):
                n.copy_(project_to_norm(n, r, 3))
        if radius is not None:
            for s, s0 in zip(self.state, self.start_state):
                flat0 = s0.flatten(1)
                delta = project_l1_ball((s - s0).flatten(1), radius * flat0.abs().sum(1))
                s.copy_((flat0 + delta).reshape(s.shape))
