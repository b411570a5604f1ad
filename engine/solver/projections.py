"""Constraints and schedules the ILO rounds apply after each Adam step: the l1-ball projection
of an intermediate layer around its starting point, the latent-norm projection
and the learning-rate ramp."""

from __future__ import annotations

import math

import torch


def lr_ramp(t: float, lr0: float, rampdown: float = 0.75, rampup: float = 0.05) -> float:
    """lr(t) = lr0 · min(1, t/rampup) · (0.5 − 0.5·cos(π · min(1, (1−t)/rampdown))), t ∈ [0, 1]."""
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown))
    return lr0 * up * down


def norms(x: torch.Tensor, group_dims: int) -> torch.Tensor:
    """Euclidean norm over the trailing `group_dims` axes, kept for broadcasting."""
    dims = tuple(range(x.ndim - group_dims, x.ndim))
    return torch.linalg.vector_norm(x, dim=dims, keepdim=True)


def project_to_norm(x: torch.Tensor, target: torch.Tensor, group_dims: int) -> torch.Tensor:
    """Spherical projection: rescale every group (a latent vector: 1 axis; a noise map: 3) to
    the norm it had at the start of the round."""
    return x * (target / norms(x, group_dims).clamp_min(1e-12))


def project_l1_ball(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of v [B, n] onto {w : |w|_1 <= radius[b]} (Duchi et al.
    2008, sort-based, batched). Rows already inside are returned unchanged."""
    u = v.abs()
    mu, _ = u.sort(dim=1, descending=True)
    cumsum = mu.cumsum(dim=1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    positive = mu - (cumsum - radius[:, None]) / k > 0
    rho = (positive * k).amax(dim=1).long().clamp_min(1)  # the last index with a positive gap
    theta = ((cumsum.gather(1, (rho - 1)[:, None]).squeeze(1) - radius) / rho).clamp_min(0)
    projected = v.sign() * (u - theta[:, None]).clamp_min(0)
    inside = u.sum(dim=1) <= radius
    return torch.where(inside[:, None], v, projected)
