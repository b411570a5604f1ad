"""An independent forward pass of an NVIDIA stylegan2-ada-pytorch G_ema, written from their
layer semantics (per-sample grouped-conv weights, zero-insertion upsampling) and reading
tensors by NVIDIA's own names. Tests compare the staged generator against it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _fir(x: torch.Tensor, pad: tuple[int, int], up: bool) -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = taps[:, None] * taps[None, :]
    f = f / f.sum() * 4.0  # both uses here carry the 2x upsampling gain
    n, c, h, w = x.shape
    if up:
        z = x.new_zeros(n, c, 2 * h, 2 * w)
        z[:, :, ::2, ::2] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, f.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _modconv(x, weight, styles, demodulate, up):
    b, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    wt = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        wt = wt * torch.rsqrt(wt.square().sum(dim=[2, 3, 4]) + 1e-8)[:, :, None, None, None]
    x = x.reshape(1, b * c_in, h, w)
    if up:
        wt = wt.transpose(1, 2).reshape(b * c_in, c_out, k, k)
        x = F.conv_transpose2d(x, wt, stride=2, groups=b)
        x = x.reshape(b, c_out, *x.shape[2:])
        return _fir(x, (1, 1), up=False)
    x = F.conv2d(x, wt.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
    return x.reshape(b, c_out, *x.shape[2:])


def _affine(t, name, w):
    weight, bias = t[f"{name}.affine.weight"], t[f"{name}.affine.bias"]
    return F.linear(w, weight / math.sqrt(weight.shape[1]), bias)


def nvidia_forward(t: dict, z: torch.Tensor, psi: float = 1.0, conv_clamp: float | None = None) -> torch.Tensor:
    t = {k: v.float() for k, v in t.items()}
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    i = 0
    while f"mapping.fc{i}.weight" in t:
        weight, bias = t[f"mapping.fc{i}.weight"], t[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(F.linear(x, weight * 0.01 / math.sqrt(weight.shape[1])) + bias * 0.01, 0.2) * math.sqrt(2)
        i += 1
    w = t["mapping.w_avg"].lerp(x, psi)

    def layer(x, name, up):
        x = _modconv(x, t[f"{name}.weight"], _affine(t, name, w), True, up)
        x = x + t[f"{name}.noise_const"] * t[f"{name}.noise_strength"]
        x = F.leaky_relu(x + t[f"{name}.bias"][None, :, None, None], 0.2) * math.sqrt(2)
        return x if conv_clamp is None else x.clamp(-conv_clamp, conv_clamp)

    def torgb(x, name):
        weight = t[f"{name}.weight"]
        styles = _affine(t, name, w) / math.sqrt(weight.shape[1])
        y = _modconv(x, weight, styles, False, False) + t[f"{name}.bias"][None, :, None, None]
        return y if conv_clamp is None else y.clamp(-conv_clamp, conv_clamp)

    x = t["synthesis.b4.const"][None].repeat(z.shape[0], 1, 1, 1)
    x = layer(x, "synthesis.b4.conv1", False)
    img = torgb(x, "synthesis.b4.torgb")
    r = 8
    while f"synthesis.b{r}.conv0.weight" in t:
        x = layer(x, f"synthesis.b{r}.conv0", True)
        x = layer(x, f"synthesis.b{r}.conv1", False)
        img = _fir(img, (2, 1), up=True) + torgb(x, f"synthesis.b{r}.torgb")
        r *= 2
    return img
