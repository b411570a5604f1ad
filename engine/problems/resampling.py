"""The resampling pieces of the downsampling operator, written so that they export to plain
ONNX nodes."""

from __future__ import annotations

import torch


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def reflect_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """`F.pad(mode="reflect")` along one axis, as slices, flips and a concat: the exported loss
    graphs then hold Slice nodes where torch's own reflect padding would export as GatherND."""
    n = x.shape[dim]
    head = x.narrow(dim, 1, before).flip(dim)
    tail = x.narrow(dim, n - 1 - after, after).flip(dim)
    return torch.cat([head, x, tail], dim=dim)
