"""A learned start for round 0 (amortized inversion): a small convolutional encoder maps what a
task measures to the latent round 0 optimises, so the search begins near the answer instead of
at random latents.

The encoder reads `measurement_view` (y back-projected to image space, the observed mask and
the task family) and predicts z in the solver's own parametrisation: the statistics-normalised
Gaussian latent of a mapped generator (one row per w+ layer) or a DCGAN's z. Each row is put on
the sphere of radius sqrt(D), where N(0, I_D) samples lie and where the spherical projection of
round 0 keeps them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ilo.engine.problems.measurement_view import VIEW_CHANNELS, measurement_view
from ilo.engine.problems.operators import Operator
from ilo.engine.solver.generator_view import GeneratorView
from ilo.export.artifacts import Bundle
from ilo.export.graphs import GraphFn
from ilo.generators.staged import state_fingerprint


@dataclass(frozen=True)
class EncoderShape:
    """What an encoder is built from: the generator's size and latent layout, and its widths."""

    resolution: int
    rows: int  # latent rows predicted: the generator's n_latent where it has a mapping, else 1
    style_dim: int
    width: int = 32  # channels after the stem; doubled at each halving up to max_width
    max_width: int = 256

    @classmethod
    def of(cls, gen: GeneratorView, **widths) -> EncoderShape:
        return cls(gen.resolution, gen.n_latent if gen.has_mapping else 1, gen.style_dim, **widths)

    def describe(self) -> dict:
        return asdict(self)


class LatentEncoder(nn.Module):
    """view [B, VIEW_CHANNELS, R, R] -> z [B, rows, style_dim], each row of norm sqrt(style_dim)."""

    def __init__(self, shape: EncoderShape):
        super().__init__()
        if shape.resolution < 4 or shape.resolution & (shape.resolution - 1):
            raise ValueError(f"an encoder needs a power-of-two resolution of at least 4, got {shape.resolution}")
        self.shape = shape
        width = shape.width
        layers: list[nn.Module] = [nn.Conv2d(VIEW_CHANNELS, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(int(math.log2(shape.resolution // 4))):  # halve down to 4 x 4
            wider = min(2 * width, shape.max_width)
            layers += [
                nn.Conv2d(width, wider, 3, stride=2, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(wider, wider, 3, padding=1),
                nn.LeakyReLU(0.2),
            ]
            width = wider
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width * 16, shape.rows * shape.style_dim)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        u = self.head(self.features(view).flatten(1)).reshape(-1, self.shape.rows, self.shape.style_dim)
        return u * (math.sqrt(self.shape.style_dim) / u.norm(dim=2, keepdim=True).clamp_min(1e-8))


def learned_starts(encoder: nn.Module, op: Operator, y: torch.Tensor, gen: GeneratorView) -> torch.Tensor:
    """The encoder's z for each image of a batch, laid out as round 0's starting variable:
    [B, n_latent, D] for a mapped generator, [B, 1, D] otherwise."""
    with torch.no_grad():
        z = encoder(measurement_view(op, y, gen.resolution))
    if gen.has_mapping and z.shape[1] != gen.n_latent:
        z = z[:, :1].expand(-1, gen.n_latent, -1).contiguous()
    return z


def encoded_images(encoder: nn.Module, op: Operator, y: torch.Tensor, gen: GeneratorView) -> torch.Tensor:
    """The encoder alone as a restoration (one pass, nothing optimised): G(E(y)), [B, 3, R, R]."""
    z = learned_starts(encoder, op, y, gen)
    with torch.no_grad():
        return gen.synthesize(gen.gaussian_to_w(z, gen.latent_stats()) if gen.has_mapping else z)


def encoder_graph(encoder: LatentEncoder) -> GraphFn:
    """The encoder as a graph function: measurement view -> z, batch axis dynamic. (The input
    is not called "view": the exporter names nodes after torch ops, and a graph input of that
    name breaks single assignment.)"""
    shape = encoder.shape

    def fn(measurement: torch.Tensor) -> tuple[torch.Tensor]:
        return (encoder(measurement),)

    return GraphFn(
        "encoder.fwd",
        fn,
        [("measurement", (VIEW_CHANNELS, shape.resolution, shape.resolution))],
        [("z", (shape.rows, shape.style_dim))],
    )


def encoder_bundle(encoder: LatentEncoder) -> Bundle:
    """The encoder's graph, exported, linted and checked against a float64 copy like every
    other bundle, and cached by its weights (which name the generator they were trained for)."""

    def build():
        double = copy.deepcopy(encoder).double()
        return [encoder_graph(encoder)], {"encoder.fwd": encoder_graph(double)}

    return Bundle(
        "encoder", {"encoder_sha256": state_fingerprint(encoder, "encoder"), **encoder.shape.describe()}, build
    )
