"""The kernels as torch ops, with VJPs: the fast paths of `ilo.generators.ops`.

Each public function has the same meaning as its reference there and is checked against it
(tests/test_kernels.py). The autograd Functions use the setup_context form; torch.func still
cannot look inside them (their pointers need real storage), so the engine's graph functions
take plain autograd while the kernels are active (`ilo.export.graphs.vjp_pullback`). Gradients
are those ILO needs: activations, styles and noise maps; weights and biases are frozen
(`layer_weights` refuses weights that require grad rather than return no gradient for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ilo.kernels.library import (
    DTYPES,
    ActGradArgs,
    BiasActArgs,
    ConvArgs,
    Epilogue,
    KernelLibrary,
    KernelLibraryError,
    UpfirdnArgs,
)

NO_CLAMP = -1.0


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _dtype(t: torch.Tensor) -> int:
    return DTYPES[t.dtype]


def _check(lib: KernelLibrary, *tensors: torch.Tensor | None, fp32: tuple = ()) -> None:
    """Every tensor on the library's device and contiguous; those in `fp32` (weights, styles,
    filters: the C side reads them as float*) in float32."""
    for t in (*tensors, *fp32):
        if t is None:
            continue
        if t.device.type != lib.device_type:
            raise KernelLibraryError(
                f"the {lib.build_info} kernel library takes {lib.device_type} tensors, got one on {t.device}"
            )
        if not t.is_contiguous():
            raise KernelLibraryError("kernel inputs must be contiguous")
    for t in fp32:
        if t is not None and t.dtype != torch.float32:
            raise KernelLibraryError(f"kernel weights, styles and filters are float32, got {t.dtype}")


def epilogue(
    scale=None, z=None, noise=None, bias=None, alpha=1.0, gain=1.0, clamp=None, reduce_ref=None, reduce_out=None
) -> Epilogue:
    """The kernel epilogue (ilo_kernels.h): noise may be one map [1, 1, H, W] for the batch."""
    stride = 0 if noise is None or noise.shape[0] == 1 else noise[0].numel()
    return Epilogue(
        _ptr(scale),
        _ptr(z),
        _ptr(noise),
        stride,
        _ptr(bias),
        alpha,
        gain,
        NO_CLAMP if clamp is None else clamp,
        _ptr(reduce_ref),
        _ptr(reduce_out),
    )


def _broadcast_noise(noise: torch.Tensor | None) -> torch.Tensor | None:
    """A noise map expanded over the batch (stride 0) crosses as its one map."""
    if noise is None:
        return None
    if noise.shape[0] > 1 and noise.stride(0) == 0:
        noise = noise[:1]
    return noise.contiguous()


# --- raw kernel calls -------------------------------------------------------------------------
def conv(
    lib, x, weight, *, in_scale=None, stride=1, pad=0, transposed=False, ep=None, out=None, tf32=False
) -> torch.Tensor:
    """Direct conv (or conv_transpose2d with weight^T) of x * in_scale[:, :, None, None], on
    TF32 tensor cores where tf32 (and the layer has more than 4 output channels)."""
    n, ci, hi, wi = x.shape
    co, _, k, _ = weight.shape
    if transposed:
        ho, wo = (hi - 1) * stride - 2 * pad + k, (wi - 1) * stride - 2 * pad + k
    else:
        ho, wo = (hi + 2 * pad - k) // stride + 1, (wi + 2 * pad - k) // stride + 1
    y = torch.empty(n, co, ho, wo, dtype=x.dtype, device=x.device) if out is None else out
    _check(lib, x, y, fp32=(weight, in_scale))
    args = ConvArgs(
        _dtype(x),
        n,
        ci,
        hi,
        wi,
        co,
        ho,
        wo,
        k,
        stride,
        pad,
        int(transposed),
        int(tf32),
        _ptr(x),
        _ptr(in_scale),
        _ptr(weight),
        _ptr(y),
        ep or epilogue(),
    )
    lib.call("ilo_conv", args, x.device)
    return y


def upfirdn(lib, x, taps, *, up=1, down=1, pad=(0, 0), adjoint=False, in_size=None, ep=None) -> torch.Tensor:
    """upfirdn2d with `taps` already flipped and scaled; adjoint=True maps a cotangent of the
    output back to one of the input (whose size `in_size` must then be given)."""
    n, c = x.shape[:2]
    fh, fw = taps.shape
    if adjoint:
        (hi, wi), (ho, wo) = in_size, x.shape[2:]
    else:
        hi, wi = x.shape[2:]
        ho, wo = (hi * up + pad[0] + pad[1] - fh) // down + 1, (wi * up + pad[0] + pad[1] - fw) // down + 1
    y = torch.empty(n, c, *((hi, wi) if adjoint else (ho, wo)), dtype=x.dtype, device=x.device)
    _check(lib, x, y, fp32=(taps,))
    args = UpfirdnArgs(
        _dtype(x),
        n,
        c,
        hi,
        wi,
        ho,
        wo,
        up,
        down,
        pad[0],
        pad[1],
        fh,
        fw,
        int(adjoint),
        _ptr(taps),
        _ptr(x),
        _ptr(y),
        ep or epilogue(),
    )
    lib.call("ilo_upfirdn2d", args, x.device)
    return y


def act_grad(lib, dy, y, *, alpha, gain, clamp, scale=None, want_dx=True, ref=None, row_sum=False, channel_sum=False):
    """(dx = g * scale, row sums of g * ref, channel sums of g) for g the activation's VJP."""
    n, c = y.shape[:2]
    hw = y[0, 0].numel()
    dx = torch.empty_like(y) if want_dx else None
    rows = torch.empty(n, c, dtype=torch.float32, device=y.device) if row_sum else None
    channels = torch.empty(n, 1, *y.shape[2:], dtype=torch.float32, device=y.device) if channel_sum else None
    _check(lib, dy, y, ref, fp32=(scale,))
    args = ActGradArgs(
        _dtype(y),
        n,
        c,
        hw,
        _ptr(dy),
        _ptr(y),
        alpha,
        gain,
        NO_CLAMP if clamp is None else clamp,
        _ptr(scale),
        _ptr(dx),
        _ptr(ref),
        _ptr(rows),
        _ptr(channels),
    )
    lib.call("ilo_act_grad", args, y.device)
    return dx, rows, channels


# --- bias_act ---------------------------------------------------------------------------------
class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(lib, x, bias, alpha, gain, clamp):
        x = x.contiguous()
        y = torch.empty_like(x)
        _check(lib, x, fp32=(bias,))
        n, c = x.shape[:2]
        args = BiasActArgs(
            _dtype(x), n, c, x[0, 0].numel(), _ptr(x), _ptr(y), epilogue(bias=bias, alpha=alpha, gain=gain, clamp=clamp)
        )
        lib.call("ilo_bias_act", args, x.device)
        return y

    @staticmethod
    def setup_context(ctx, inputs, output):
        lib, _, bias, alpha, gain, clamp = inputs
        ctx.lib, ctx.params, ctx.has_bias = lib, (alpha, gain, clamp), bias is not None
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        alpha, gain, clamp = ctx.params
        want_bias = ctx.has_bias and ctx.needs_input_grad[2]
        dx, rows, _ = act_grad(ctx.lib, dy.contiguous(), y, alpha=alpha, gain=gain, clamp=clamp, row_sum=want_bias)
        return None, dx, (rows.sum(0) if want_bias else None), None, None, None


def bias_act(lib, x, bias=None, gain=math.sqrt(2.0), alpha=0.2, clamp=None) -> torch.Tensor:
    """ilo.generators.ops.bias_act on the kernel: bias -> leaky ReLU -> gain -> clamp, in one pass."""
    return _BiasAct.apply(lib, x, None if bias is None else bias.float().contiguous(), alpha, gain, clamp)


# --- upfirdn2d --------------------------------------------------------------------------------
def _taps(kernel: torch.Tensor, gain: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.flip(kernel, [0, 1]) * gain).to(device=like.device, dtype=torch.float32).contiguous()


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(lib, x, taps, up, down, pad):
        return upfirdn(lib, x.contiguous(), taps, up=up, down=down, pad=pad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        lib, x, taps, up, down, pad = inputs
        ctx.lib, ctx.taps, ctx.geometry, ctx.in_size = lib, taps, (up, down, pad), tuple(x.shape[2:])

    @staticmethod
    def backward(ctx, dy):
        up, down, pad = ctx.geometry
        dx = upfirdn(ctx.lib, dy.contiguous(), ctx.taps, up=up, down=down, pad=pad, adjoint=True, in_size=ctx.in_size)
        return None, dx, None, None, None, None


def upfirdn2d(lib, x, kernel, up=1, down=1, pad=(0, 0), gain=1.0) -> torch.Tensor:
    """ilo.generators.ops.upfirdn2d on the kernel (filter taps on the kernel's side are flipped)."""
    return _Upfirdn2d.apply(lib, x, _taps(kernel, gain, x), up, down, tuple(pad))


# --- modulated layers -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSpec:
    """Which StyleGAN2 layer: 'conv' (3x3), 'up' (transposed 3x3 stride 2 + FIR blur) or 'rgb'
    (1x1, no demodulation, no activation), its activation, and whether its convolutions may run
    on TF32 tensor cores."""

    kind: str
    alpha: float = 0.2
    gain: float = math.sqrt(2.0)
    clamp: float | None = None
    tf32: bool = False

    @property
    def demodulate(self) -> bool:
        return self.kind != "rgb"


DEMODULATION_EPS = 1e-8


@dataclass(frozen=True)
class LayerWeights:
    """A layer's constants in the forms the kernels take, derived once per weight version:
    the gain-scaled weight, the weight of the input's VJP (transposed, and flipped for the
    stride-1 layers), the demodulation energies E[o, i] = sum over taps of W^2, the bias and
    the up layer's FIR taps."""

    weight: torch.Tensor
    adjoint: torch.Tensor
    energy: torch.Tensor | None
    bias: torch.Tensor | None
    blur: torch.Tensor | None


def layer_weights(spec: LayerSpec, weight, bias, blur_kernel=None) -> LayerWeights:
    """weight: the gain-scaled [Cout, Cin, k, k]; blur_kernel: the up layer's FIR kernel."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise KernelLibraryError(
            "the kernel layers are for frozen generators: weights and biases must not require grad"
        )
    weight = weight.detach().float().contiguous()
    adjoint = weight.transpose(0, 1) if spec.kind == "up" else weight.transpose(0, 1).flip(2, 3)
    return LayerWeights(
        weight,
        adjoint.contiguous(),
        weight.square().sum(dim=(2, 3)) if spec.demodulate else None,
        None if bias is None else bias.detach().float().contiguous(),
        _taps(blur_kernel, 4.0, weight) if spec.kind == "up" else None,
    )


class _ModulatedLayer(torch.autograd.Function):
    """y = act(d * L(x * s) + noise + bias); L is the layer's linear map, d its demodulation."""

    @staticmethod
    def forward(lib, spec, weights, x, styles, noise):
        x, styles = x.contiguous(), styles.contiguous().float()
        d = (
            torch.rsqrt(styles.square() @ weights.energy.t() + DEMODULATION_EPS).contiguous()
            if spec.demodulate
            else None
        )
        noise = _broadcast_noise(noise)
        n, co = x.shape[0], weights.weight.shape[0]
        out_hw = tuple(2 * s for s in x.shape[2:]) if spec.kind == "up" else tuple(x.shape[2:])
        # z, the pre-demodulation map, is kept for d's gradient
        z = torch.empty(n, co, *out_hw, dtype=x.dtype, device=x.device) if spec.demodulate else None
        ep = epilogue(d, z, noise, weights.bias, spec.alpha, spec.gain, spec.clamp)
        if spec.kind == "up":
            c = conv(lib, x, weights.weight, in_scale=styles, stride=2, transposed=True, tf32=spec.tf32)
            y = upfirdn(lib, c, weights.blur, pad=(1, 1), ep=ep)
        else:
            y = conv(lib, x, weights.weight, in_scale=styles, pad=weights.weight.shape[-1] // 2, ep=ep, tf32=spec.tf32)
        return y, z, d

    @staticmethod
    def setup_context(ctx, inputs, output):
        lib, spec, weights, x, styles, noise = inputs
        y, z, d = output
        ctx.mark_non_differentiable(*(t for t in (z, d) if t is not None))
        ctx.lib, ctx.spec, ctx.weights = lib, spec, weights
        ctx.noise_batch = None if noise is None else noise.shape[0]
        ctx.save_for_backward(x.contiguous(), styles.contiguous().float(), y, z, d)

    @staticmethod
    def backward(ctx, dy, _dz, _dd):
        x, styles, y, z, d = ctx.saved_tensors
        lib, spec, weights = ctx.lib, ctx.spec, ctx.weights
        want_noise = ctx.noise_batch is not None and ctx.needs_input_grad[5]
        g, dd, dnoise = act_grad(
            lib,
            dy.contiguous(),
            y,
            alpha=spec.alpha,
            gain=spec.gain,
            clamp=spec.clamp,
            scale=d,
            ref=z,
            row_sum=spec.demodulate,
            channel_sum=want_noise,
        )
        ds = torch.zeros_like(styles)
        ep = epilogue(scale=styles, reduce_ref=x, reduce_out=ds)  # dx = s * L^T(g), ds = sum_p x * L^T(g)
        if spec.kind == "up":
            gc = upfirdn(lib, g, weights.blur, pad=(1, 1), adjoint=True, in_size=tuple(2 * s + 1 for s in x.shape[2:]))
            dx = conv(lib, gc, weights.adjoint, stride=2, ep=ep, tf32=spec.tf32)
        else:
            dx = conv(lib, g, weights.adjoint, pad=weights.weight.shape[-1] // 2, ep=ep, tf32=spec.tf32)
        if spec.demodulate:  # d = (s^2 E^T + eps)^-1/2  =>  ds -= s * ((dd * d^3) E)
            ds = ds - styles * ((dd * d.pow(3)) @ weights.energy)
        if dnoise is not None:
            dnoise = dnoise.to(dy.dtype)
            if ctx.noise_batch == 1:
                dnoise = dnoise.sum(0, keepdim=True)
        return None, None, None, dx, ds, dnoise


def modulated_layer(lib, spec: LayerSpec, weights: LayerWeights, x, styles, noise) -> torch.Tensor:
    """One StyleGAN2 layer on the kernels: styles [B, Cin] (the affine output), noise the
    already-scaled noise term [B|1, 1, H, W] or None."""
    y, _, _ = _ModulatedLayer.apply(lib, spec, weights, x, styles, noise)
    return y


__all__ = ["LayerSpec", "LayerWeights", "bias_act", "layer_weights", "modulated_layer", "upfirdn2d"]
