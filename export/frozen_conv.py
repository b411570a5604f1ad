"""Convolutions with frozen weights whose backward pass is itself a convolution.

Why: a VJP graph traced from torch autograd contains `aten.convolution_backward`, which the
ONNX exporter cannot translate. A generator's weights never change during ILO, so only the
input gradient is needed, and that is a transposed convolution with the same weights (and the
gradient of a transposed convolution is a convolution). These autograd functions say exactly
that, so traced VJP graphs hold plain Conv / ConvTranspose nodes that TensorRT runs natively.

The reference path is `F.conv2d` / `F.conv_transpose2d` under ordinary autograd; tests compare
the two. Weights that require grad (training) take the plain path, which computes their gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _output_padding(in_size, out_size, stride, padding, kernel, dilation) -> list[int]:
    """The transposed convolution's output_padding that lands exactly on the forward input size."""
    return [
        i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for i, o, s, p, k, d in zip(in_size, out_size, stride, padding, kernel, dilation)
    ]


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
        grad_x = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
        return grad_x, None, None, None, None, None, None


class FrozenConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, stride, padding, output_padding, groups, dilation):
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)

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
    return FrozenConvTranspose2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation))
