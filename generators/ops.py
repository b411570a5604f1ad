"""Reference torch ops for StyleGAN2 layers, written in graph-export-friendly form.

Every op here is plain torch (no per-sample weights, no grouped convs, no in-graph randomness):
modulated convolution is scale-activations -> conv with constant weights -> scale-outputs, which
is what ONNX / TensorRT handle well and what the fused CUDA kernels are checked against.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ilo.generators import frozen_ops

SQRT2 = math.sqrt(2.0)
DEMODULATION_EPS = 1e-8


class FastLayers(Protocol):
    """A fast implementation of the StyleGAN2 layers below (ilo.kernels.fast_path.KernelOps).

    Each method computes what the layer's reference computes, or returns None for an input it
    does not take (another device, a dtype it lacks, weights that require grad): the layer then
    runs its reference. Defined here, not in ilo.kernels, because kernels sit above generators.
    """

    def styled_conv(
        self, layer: StyledConv, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor | None: ...

    def to_rgb(self, layer: ToRGB, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None: ...

    def upsample_rgb(self, skip: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor | None: ...


class TakesFastLayers(nn.Module):
    """A module that runs its layers on `self.fast` when it is set. It is None on every module
    as built and loaded, so graph export and every other caller trace the references; only
    `with_fast_layers` returns modules with it set."""

    fast: FastLayers | None = None


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def with_fast_layers(module: ModuleT, fast: FastLayers | None) -> ModuleT:
    """A copy of `module` whose layers run on `fast` (None: the references). The copy shares
    every parameter and buffer with `module`, so it costs no weight memory and follows in-place
    weight changes; `module` itself is left as it was."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    shared |= {id(m.fast): m.fast for m in module.modules() if isinstance(m, TakesFastLayers) and m.fast is not None}
    twin = copy.deepcopy(module, shared)
    for m in twin.modules():
        if isinstance(m, TakesFastLayers):
            m.fast = fast
    return twin


def runs_fast_layers(module: nn.Module) -> bool:
    """Whether any layer of `module` is set to run on a fast implementation."""
    return any(isinstance(m, TakesFastLayers) and m.fast is not None for m in module.modules())


def fir_kernel(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable 2-D low-pass kernel from 1-D taps, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter (true convolution), then downsample.

    x: [N, C, H, W]; kernel: [kh, kw]; pad: (before, after), the same on both axes, may be
    negative (crop). Matches the upfirdn2d of the StyleGAN2 reference implementations.
    """
    n, c, h, w = x.shape
    if up > 1:
        # Zero insertion as reshape + pad keeps the graph free of scatter ops.
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    weight = (torch.flip(kernel, [0, 1]) * gain).to(x.dtype)
    weight = weight[None, None].expand(c, 1, *kernel.shape)
    x = frozen_ops.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    gain: float = SQRT2,
    alpha: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """bias -> leaky ReLU(alpha) -> gain -> optional clamp, over channel dim 1."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.reshape(shape)
    x = frozen_ops.leaky_relu(x, alpha) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class EqualizedLinear(nn.Module):
    """Linear layer with the equalised learning rate of StyleGAN2.

    Weights are stored as the checkpoints store them (unscaled, divided by lr_multiplier) and
    scaled at run time, so loading and saving are lossless.
    """

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return bias_act(F.linear(x, self.weight * self.weight_gain), self.bias * self.bias_gain)
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) convolution, optionally upsampling by 2.

    Computed as scale -> conv -> scale: x * style, a convolution whose weights are constants of
    the checkpoint, then multiplication by the per-sample demodulation coefficients. This equals
    the grouped per-sample-weight form of the reference code up to float rounding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        up: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.affine = EqualizedLinear(style_dim, in_channels)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.up = up
        self.padding = kernel_size // 2
        self.register_buffer("blur_kernel", fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # [B, in]
        weight = self.weight * self.weight_gain
        x = x * styles[:, :, None, None]
        if self.up:
            x = frozen_ops.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = upfirdn2d(x, self.blur_kernel, pad=(1, 1), gain=4.0)
        else:
            x = frozen_ops.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,kh,kw} (W[o,i,kh,kw] * s[b,i])^2 == s^2 @ (sum_{kh,kw} W^2)^T
            energy = weight.square().sum(dim=(2, 3))  # [out, in]
            dcoefs = torch.rsqrt(styles.square() @ energy.t() + DEMODULATION_EPS)  # [B, out]
            x = x * dcoefs[:, :, None, None]
        return x


class StyledConv(TakesFastLayers):
    """Modulated 3x3 conv + noise map + bias + leaky ReLU: one StyleGAN2 synthesis layer."""

    def __init__(
        self, in_channels: int, out_channels: int, style_dim: int, up: bool = False, conv_clamp: float | None = None
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.fast is not None and (y := self.fast.styled_conv(self, x, w, noise)) is not None:
            return y
        x = self.conv(x, w)
        x = x + self.noise_strength * noise
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class ToRGB(TakesFastLayers):
    """Modulated 1x1 conv to RGB without demodulation, plus bias."""

    def __init__(self, in_channels: int, style_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fast is not None and (y := self.fast.to_rgb(self, x, w)) is not None:
            return y
        x = self.conv(x, w) + self.bias[None, :, None, None]
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


def upsample_rgb(skip: torch.Tensor, kernel: torch.Tensor, fast: FastLayers | None = None) -> torch.Tensor:
    """The 2x FIR upsampling of the rgb skip path between StyleGAN2 blocks, on `fast` where
    given and it takes the input."""
    if fast is not None and (y := fast.upsample_rgb(skip, kernel)) is not None:
        return y
    return upfirdn2d(skip, kernel, up=2, pad=(2, 1), gain=4.0)
