"""The per-image loss a solve minimises (the paper's eqs. 3-4: the data fit, LPIPS, geocross, a
latent-norm prior) and what its iterates are judged by: the held-out measurements where some are
held out, the data fit otherwise."""

from __future__ import annotations

import torch

from ilo.engine.problems.held_out import HeldOut
from ilo.engine.problems.losses import LPIPS, geocross, measurement_noise
from ilo.engine.problems.operators import Operator
from ilo.engine.solver.config import ILOConfig
from ilo.errors import IloError

# the held-out measurements' operator and the whole measurements, which it selects from
Judge = tuple[HeldOut, torch.Tensor]


def take_judge(judge: Judge | None, rows) -> Judge | None:
    """The judge of some of the rows (None stays None)."""
    return None if judge is None else (judge[0].select(rows), judge[1][rows])


class Objective:
    """The per-image loss of a generated image against the measurements."""

    def __init__(
        self,
        op: Operator,
        y: torch.Tensor,
        config: ILOConfig,
        lpips: LPIPS | None,
        noise_streams: list[torch.Generator],
        judge: Judge | None = None,
    ):
        self.op, self.y, self.config, self.lpips = op, y, config, lpips
        self.noise_streams = noise_streams  # eq. 4's fresh noise: one stream per row (batch independence)
        self.judge = judge  # None: iterates are judged by the fit
        # images with nothing held out (a mask of a handful of pixels) are judged by their fit
        self.unjudged = None if judge is None else judge[0].empty(judge[1].shape[0]).to(y.device)

    def take(self, rows: torch.Tensor, streams: list[torch.Generator] | None = None) -> Objective:
        """The objective of some of the rows (a row may repeat). Their noise streams continue
        where they were, or, given `streams` (one per row), each row draws from its own new one."""
        if streams is None:
            streams = [self.noise_streams[i] for i in rows.tolist()]
        return Objective(
            self.op.select(rows), self.y[rows], self.config, self.lpips, streams, take_judge(self.judge, rows)
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
