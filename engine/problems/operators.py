"""Forward operators f: what the camera (or the damage) did to the image.

An operator is a small `nn.Module` that owns everything known about its degradation: `A(x)`
and, where linear, `A_adjoint(y)`; the per-image data fit; the observed-pixel mask (if any);
how to take some images of its batch; and the loss head it exports for the fused step graphs.
Its tensors are buffers, so `.to(device)` moves it. A known Gaussian noise level `sigma` rides
along (measurements are `A(x) + sigma * n`). Operators compose with `*` (`Noise(0.1) *
Downsample(4)` = downsample, then noise). Parameters that differ per image (masks, sigmas,
circulant signs) carry a batch axis; images are [B, C, H, W] in the generator's [-1, 1] range,
and sigma is in [0, 1] pixel units (the [-1, 1] noise is 2σ).

Every operator is importable from here. The contract they keep and composition live in
`operator_base`, the compressed-sensing operators in `compressed_sensing`, the downsampling
kernel in `resampling`, and the heads' revision in `loss_heads`.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ilo.engine.problems.compressed_sensing import (
    HEAD_EXAMPLE_MIN_ROWS,
    HEAD_EXAMPLE_VALUES,
    DenseGaussianCS,
    PartialCirculantCS,
)
from ilo.engine.problems.loss_heads import HEADS_REVISION, head
from ilo.engine.problems.operator_base import Composed, Operator, take_rows
from ilo.engine.problems.resampling import keys_cubic, reflect_pad
from ilo.errors import InputError
from ilo.export.graphs import LossHead

__all__ = [
    "HEADS_REVISION",
    "HEAD_EXAMPLE_MIN_ROWS",
    "HEAD_EXAMPLE_VALUES",
    "Composed",
    "DenseGaussianCS",
    "Downsample",
    "Identity",
    "Inpainting",
    "Noise",
    "Operator",
    "PartialCirculantCS",
    "denoising_head",
    "every_loss_head",
    "keys_cubic",
    "reflect_pad",
    "take_rows",
]

# the name held-out selection imports for `take_rows`
_take = take_rows


# A head's loss is a module-level function (bound with partial), not a closure: an export worker
# process receives its bundle pickled.
def _masked_fit(kind: type[Inpainting], x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return kind(mask).data_fit(x, y)


class Identity(Operator):
    name = "identity"

    def A(self, x):
        return x

    def A_adjoint(self, y, like):
        return y

    def select(self, index):
        return type(self)(self._sigma_of(index))

    def loss_head(self, resolution):
        return denoising_head(resolution)


class Noise(Identity):
    """Additive Gaussian noise of known std sigma (per image allowed), no other degradation."""

    name = "noise"


class Inpainting(Operator):
    """Keep the pixels where mask = 1; mask [B|1, 1, H, W] with values in {0, 1}."""

    name = "inpaint"
    mask: torch.Tensor  # a buffer

    def __init__(self, mask: torch.Tensor, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise InputError(f"a mask must have shape [B, 1, H, W], got {list(mask.shape)}")
        self.register_buffer("mask", (mask > 0.5).float())

    def A(self, x):
        self._check(x)
        return x * self.mask

    def A_adjoint(self, y, like):
        return y * self.mask

    @property
    def observed(self):
        return self.mask

    def data_fit(self, image, y):
        """The mean runs over observed pixels only, so the loss scale does not depend on how
        much is missing."""
        diff = (self.A(image) - y).square().reshape(y.shape[0], -1)
        kept = self.mask.expand(y.shape[0], 1, *y.shape[2:]).reshape(y.shape[0], -1).sum(1) * y.shape[1]
        return diff.sum(1) / kept.clamp_min(1)

    def perceptual_target(self, image, y):
        """Eq. 3: the observed pixels pasted onto the generation, M⊙y + (1−M)⊙G."""
        return self.mask * y + (1 - self.mask) * image

    def select(self, index):
        return Inpainting(take_rows(self.mask, index), self._sigma_of(index))

    def loss_head(self, resolution):
        image = (3, resolution, resolution)  # a subclass's own data fit, not the base class's
        return head("inpaint", image, (("mask", (1, resolution, resolution)),), partial(_masked_fit, type(self)))

    def head_inputs(self, batch):
        return [self.mask.expand(batch, -1, -1, -1).contiguous()]

    def _check(self, x):
        if tuple(self.mask.shape[2:]) != tuple(x.shape[2:]):
            raise InputError(
                f"mask is {self.mask.shape[3]}x{self.mask.shape[2]} but images are {x.shape[3]}x{x.shape[2]}"
            )

    @classmethod
    def box(cls, size: int, batch: int, top: int, left: int, height: int, width: int, **kw) -> "Inpainting":
        mask = torch.ones(batch, 1, size, size)
        mask[:, :, top : top + height, left : left + width] = 0
        return cls(mask, **kw)

    @classmethod
    def centre_box(cls, size: int, batch: int = 1, fraction: float = 0.5, **kw) -> "Inpainting":
        side = round(size * fraction)
        start = (size - side) // 2
        return cls.box(size, batch, start, start, side, side, **kw)

    @classmethod
    def random_pixels(
        cls, size: int, batch: int, keep: float, generator: torch.Generator | None = None, **kw
    ) -> "Inpainting":
        if not 0 < keep <= 1:
            raise InputError(f"the keep rate must be in (0, 1], got {keep}")
        return cls((torch.rand(batch, 1, size, size, generator=generator) < keep).float(), **kw)


class Downsample(Operator):
    """Anti-aliased bicubic downsampling by an integer factor (the PULSE / ILO operator): Keys
    a = -0.5 kernel stretched by the factor, reflect padding, separable strided convolution.
    Factor 1 is exactly the identity."""

    name = "sr"

    def __init__(self, factor: int, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if int(factor) != factor or factor < 1:
            raise InputError(f"the super-resolution factor must be a positive integer, got {factor}")
        self.factor = int(factor)
        size = 4 * self.factor
        taps = (torch.arange(size, dtype=torch.float64) - size // 2 + 0.5) / self.factor
        k = keys_cubic(taps)
        self.register_buffer("kernel", (k / k.sum()).float())
        pad = size - self.factor
        self.pad = (pad // 2, pad - pad // 2)

    def select(self, index):
        return Downsample(self.factor, self._sigma_of(index))

    def loss_head(self, resolution):
        if self.factor == 1:
            return denoising_head(resolution)
        side = resolution // self.factor
        if resolution % self.factor or side < 4:  # the graph's reflect padding needs 4 pixels
            return None
        return head(f"sr{self.factor}", (3, side, side), (), type(self)(self.factor).data_fit)

    def no_head_reason(self, resolution):
        if self.loss_head(resolution) is not None:
            return None
        return f"factor {self.factor} must divide the {resolution}px side and leave at least 4 pixels"

    def A(self, x):
        if self.factor == 1:
            return x
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise InputError(f"image size {x.shape[3]}x{x.shape[2]} is not divisible by the factor {self.factor}")
        if max(self.pad) >= min(x.shape[2:]):
            raise InputError(f"factor {self.factor} is too large for {x.shape[3]}x{x.shape[2]} images")
        c = x.shape[1]
        k = self.kernel.to(x)
        x = reflect_pad(x, *self.pad, dim=2)
        x = F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(self.factor, 1), groups=c)
        x = reflect_pad(x, *self.pad, dim=3)
        return F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, self.factor), groups=c)


def denoising_head(resolution: int) -> LossHead:
    image = (3, resolution, resolution)
    return head("denoise", image, (), Identity().data_fit)


def every_loss_head(resolution: int, sr_factors=(2, 4, 8)) -> dict[str, LossHead]:
    """The loss head of every operator kind that has one, at `resolution` (what `ilo export`
    writes ahead of a run): inpainting, denoising, super-resolution per factor, dense CS."""
    whole = torch.ones(1, 1, resolution, resolution)
    kinds = [Inpainting(whole), Identity(), *(Downsample(f) for f in sr_factors)]
    heads = [op.loss_head(resolution) for op in kinds] + [DenseGaussianCS.head_at(resolution)]
    return {h.name: h for h in heads if h is not None}
