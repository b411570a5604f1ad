"""The latent variable a solve optimises, and the w+ latents the generator reads from it."""

from __future__ import annotations

import torch

from ilo.engine.solver.config import ILOConfig
from ilo.engine.solver.generator_view import GeneratorView
from ilo.generators.latent_stats import LatentStats


class Latents:
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
