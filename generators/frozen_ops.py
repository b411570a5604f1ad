"""Convolutions with frozen weights whose backward pass is itself a convolution, and a max-pool
whose backward is a comparison mask.

Why: a VJP graph traced from torch autograd contains `aten.convolution_backward`, which the
ONNX exporter cannot translate. A generator's weights never change during ILO, so only the
input gradient is needed, and that is a transposed convolution with the same weights (and the
gradient of a transposed convolution is a convolution). These autograd functions say exactly
that, so traced VJP graphs hold plain Conv / ConvTranspose nodes that TensorRT runs natively.

Likewise a max-pool's autograd backward needs its indices (a MaxPool indices output, which
VJP graphs must not hold): here the gradient goes to every input equal to its window's maximum,
placed by zero insertion and padding. Ties get the gradient at each maximal position (torch
picks one); real feature maps have no exact ties.

`frozen_weights()` reroutes `F.conv2d`, `F.conv_transpose2d` and `F.max_pool2d` calls inside
modules we do not own (LPIPS' torchvision backbone) to these versions while tracing.

The reference paths are the plain torch functions under ordinary autograd; tests compare them. Weights that require grad (training) take the plain path, which computes their gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _output_padding(in_size, out_size, stride, padding, kernel, dilation) -> list[int]:
    """The transposed convolution's output_padding that lands exactly on the forward input size."""
    return [
        i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for i, o, s, p, k, d in zip(in_size, out_size, stride, padding, kernel, dilation)
    ]


_GRAPH_FORMS = False  # set while tracing graphs: see graph_forms()


class graph_forms:
    """While tracing graphs, use the forms ONNX Runtime's CPU provider runs fastest (each
    measured on config-f layer shapes, 2 threads): a stride-1 transposed convolution — the
    input gradient of every 3×3 convolution — as a convolution with the flipped, transposed
    kernel (faster than its ConvTranspose on every config-f shape; stride 2 stays native, which
    is faster than any convolution rewrite), and leaky ReLU with a multiplicative gradient (below). Eager
    torch keeps the plain ops: that is the reference the graphs are checked against."""

    def __enter__(self):
        global _GRAPH_FORMS
        self.saved, _GRAPH_FORMS = _GRAPH_FORMS, True

    def __exit__(self, *exc):
        global _GRAPH_FORMS
        _GRAPH_FORMS = self.saved


def conv_transpose_as_conv(x, weight, bias, stride, padding, output_padding, groups, dilation) -> torch.Tensor:
    """`F.conv_transpose2d` with stride 1 as `F.conv2d`: the kernel's taps reversed, its in and
    out channels swapped (per group), padding k − 1 − p. Anything else stays native."""
    kh, kw = weight.shape[2:]
    (ph, pw) = padding
    if (
        list(stride) != [1, 1]
        or list(dilation) != [1, 1]
        or list(output_padding) != [0, 0]
        or ph > kh - 1
        or pw > kw - 1
    ):
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    c_in, per_group = weight.shape[0], weight.shape[1]  # [C_in, C_out / g, k, k] -> [C_out, C_in / g, k, k]
    kernel = (
        weight.reshape(groups, c_in // groups, per_group, kh, kw)
        .transpose(1, 2)
        .reshape(groups * per_group, c_in // groups, kh, kw)
    )
    return F.conv2d(x, kernel.flip(2, 3), bias, padding=(kh - 1 - ph, kw - 1 - pw), groups=groups)


def _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation) -> torch.Tensor:
    if _GRAPH_FORMS:
        return conv_transpose_as_conv(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)


class _MaskedLeakyReLU(torch.autograd.Function):
    """Leaky ReLU whose gradient is g · (slope + (1 − slope)·[x > 0]): multiplications, where
    the traced aten backward is a Where, which ONNX Runtime's CPU provider runs several times
    slower than the multiplications on a StyleGAN2 feature map."""

    @staticmethod
    def forward(x, slope):
        return F.leaky_relu(x, slope) if slope else F.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.slope = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        factor = (x > 0).to(grad.dtype)
        if ctx.slope:
            factor = factor * (1 - ctx.slope) + ctx.slope
        return grad * factor, None


def leaky_relu(x: torch.Tensor, slope: float = 0.0) -> torch.Tensor:
    """`F.leaky_relu` (`F.relu` for slope 0); in graph forms with a multiplicative backward."""
    if _GRAPH_FORMS:
        return _MaskedLeakyReLU.apply(x, slope)
    return F.leaky_relu(x, slope) if slope else F.relu(x)


class FrozenConv2d(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(weight)
        ctx.conf = (stride, padding, dilation, groups, tuple(x.shape[2:]), tuple(output.shape[2:]))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups, in_size, out_size = ctx.conf
        extra = _output_padding(in_size, out_size, stride, padding, weight.shape[2:], dilation)
        grad_x = _conv_transpose(grad, weight, None, stride, padding, extra, groups, dilation)
        return grad_x, None, None, None, None, None, None


class FrozenConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, stride, padding, output_padding, groups, dilation):
        return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, weight, _, stride, padding, _, groups, dilation = inputs
        ctx.save_for_backward(weight)
        ctx.conf = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        grad_x = F.conv2d(grad, weight, None, stride, padding, dilation, groups)
        return grad_x, None, None, None, None, None, None, None


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """`F.conv2d`; for constant weights the backward is a transposed convolution."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):  # training: plain autograd
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return FrozenConv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> torch.Tensor:
    """`F.conv_transpose2d`; for constant weights the backward is a convolution."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return FrozenConvTranspose2d.apply(
        x, weight, bias, _pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation)
    )


class FrozenMaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(x, kernel, stride):
        return F.max_pool2d(x, kernel, stride)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel, stride = inputs
        ctx.save_for_backward(x, output)
        ctx.conf = (kernel, stride)

    @staticmethod
    def backward(ctx, grad):
        x, pooled = ctx.saved_tensors
        (kh, kw), (sh, sw) = ctx.conf
        n, c, h, w = x.shape
        ho, wo = pooled.shape[2:]
        grad_x = torch.zeros_like(x)
        for di in range(kh):
            for dj in range(kw):
                seen = x[:, :, di : di + sh * (ho - 1) + 1 : sh, dj : dj + sw * (wo - 1) + 1 : sw]
                part = grad * (seen == pooled).to(grad.dtype)
                # place part[i, j] at (sh*i + di, sw*j + dj): zero insertion, then padding
                part = F.pad(part.reshape(n, c, ho, 1, wo, 1), [0, sw - 1, 0, 0, 0, sh - 1]).reshape(
                    n, c, ho * sh, wo * sw
                )
                part = part[:, :, : sh * (ho - 1) + 1, : sw * (wo - 1) + 1]
                grad_x = grad_x + F.pad(part, [dj, w - dj - part.shape[3], di, h - di - part.shape[2]])
        return grad_x, None, None


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """`F.max_pool2d` whose backward needs no indices (padding 0, dilation 1, floor mode only)."""
    stride = kernel_size if stride is None or stride == [] else stride
    if _pair(padding) != [0, 0] or _pair(dilation) != [1, 1] or ceil_mode or return_indices:
        raise NotImplementedError("frozen max-pool supports padding 0, dilation 1, floor mode, no indices")
    return FrozenMaxPool2d.apply(x, _pair(kernel_size), _pair(stride))


class frozen_weights(TorchFunctionMode):
    """Within this context, convolutions and max-pools anywhere use the versions above."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func is F.conv2d or name == "conv2d":
            return conv2d(*args, **kwargs)
        if func is F.conv_transpose2d or name == "conv_transpose2d":
            return conv_transpose2d(*args, **kwargs)
        if name in ("max_pool2d", "_max_pool2d"):
            return max_pool2d(*args, **kwargs)
        return func(*args, **kwargs)
