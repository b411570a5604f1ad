"""Statistics of the Gaussianised latent space (PULSE, Menon et al. 2020; used by ILO's round 0).

The solver optimises z in R^{L x D} with w = leaky_relu_0.2(std * z + mean), where mean and std
are per-dimension statistics of the mapping network's output with its final leaky ReLU undone.
They are estimated from many seeded samples of z, in chunks, accumulated in float64, and cached
per generator fingerprint so every run on the same weights uses identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ilo.atomic import atomic_path
from ilo.errors import InputError
from ilo.generators.staged import StagedGenerator
from ilo.paths import cache_dir

MAPPING_SLOPE = 0.2
DEFAULT_SAMPLES = 100_000


@dataclass(frozen=True)
class LatentStats:
    mean: torch.Tensor  # [style_dim]
    std: torch.Tensor  # [style_dim]
    samples: int
    seed: int

    def to_w(self, z: torch.Tensor) -> torch.Tensor:
        """Gaussianised latent z [..., D] -> w [..., D]."""
        return F.leaky_relu(z * self.std + self.mean, MAPPING_SLOPE)

    def from_w(self, w: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_w`: w [..., D] -> z [..., D]."""
        return (F.leaky_relu(w, 1.0 / MAPPING_SLOPE) - self.mean) / self.std


def compute_latent_stats(
    gen: StagedGenerator, samples: int = DEFAULT_SAMPLES, seed: int = 0, chunk: int = 8192
) -> LatentStats:
    if not gen.has_mapping:
        raise InputError(f"the {gen.family} generator has no mapping network; its latent is already Gaussian")
    rng = torch.Generator().manual_seed(seed)
    total = torch.zeros(gen.style_dim, dtype=torch.float64)
    total_sq = torch.zeros(gen.style_dim, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            z = torch.randn(n, gen.z_dim, generator=rng)
            u = F.leaky_relu(gen.mapping(z), 1.0 / MAPPING_SLOPE).double()
            total += u.sum(0)
            total_sq += u.square().sum(0)
    mean = total / samples
    var = (total_sq / samples - mean.square()).clamp_min(0) * samples / max(samples - 1, 1)
    return LatentStats(mean.float(), var.sqrt().float(), samples, seed)


def latent_stats(
    gen: StagedGenerator, samples: int = DEFAULT_SAMPLES, seed: int = 0, cache: Path | None = None
) -> LatentStats:
    """Cached `compute_latent_stats`, keyed by the generator's fingerprint, samples and seed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    folder = (cache or cache_dir()) / "latent_stats"
    path = folder / f"{gen.fingerprint()[:32]}-n{samples}-s{seed}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            return LatentStats(t["mean"], t["std"], samples, seed)
        except (OSError, KeyError, SafetensorError):  # a damaged cache entry is recomputed, never trusted
            pass
    stats = compute_latent_stats(gen, samples, seed)
    with atomic_path(path) as tmp:
        save_file({"mean": stats.mean.contiguous(), "std": stats.std.contiguous()}, str(tmp))
    return stats
