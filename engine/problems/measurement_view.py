"""What an encoder sees of a measurement: an image-shaped view of y that any operator can give.

An encoder that maps measurements to a starting latent (amortized inversion) needs one input
layout for every task: y's back-projection into image space (the observed pixels for
inpainting, the low-resolution image upsampled for super-resolution, the noisy image for
denoising, Aᵀy for compressed sensing), a channel saying which pixels were observed, and the
task family as constant planes, so one encoder serves every operator of the families it was
trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ilo.engine.problems.operators import (
    DenseGaussianCS,
    Downsample,
    Identity,
    Inpainting,
    Operator,
    PartialCirculantCS,
)

# operator kind -> family plane; a kind not listed (a composed or deepinv operator) sets none
FAMILIES = {Inpainting: 0, Downsample: 1, Identity: 2, DenseGaussianCS: 3, PartialCirculantCS: 3}
N_FAMILIES = 4
VIEW_CHANNELS = 3 + 1 + N_FAMILIES


def back_projection(op: Operator, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """y brought back to image space: bicubic upsampling for super-resolution (the adjoint of
    a low-pass downsampling is a faint, blocky image), the adjoint for every other operator."""
    if isinstance(op, Downsample) and op.factor > 1:
        return F.interpolate(y, size=like.shape[2:], mode="bicubic", align_corners=False)
    return op.A_adjoint(y, like)


def measurement_view(op: Operator, y: torch.Tensor, resolution: int) -> torch.Tensor:
    """[B, VIEW_CHANNELS, R, R]: the back-projection, the observed mask (ones where the
    operator keeps every pixel) and the family planes."""
    batch = y.shape[0]
    like = torch.zeros(batch, 3, resolution, resolution, dtype=y.dtype, device=y.device)
    image = back_projection(op, y, like).reshape(like.shape)
    observed = op.observed
    observed = torch.ones_like(like[:, :1]) if observed is None else observed.to(like).expand(batch, 1, -1, -1)
    family = torch.zeros(batch, N_FAMILIES, resolution, resolution, dtype=y.dtype, device=y.device)
    kind = next((i for cls, i in FAMILIES.items() if isinstance(op, cls)), None)
    if kind is not None:
        family[:, kind] = 1
    return torch.cat([image, observed, family], dim=1)
