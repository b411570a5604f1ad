"""Per-image restoration metrics on [0, 1] pixels (never pooled over a batch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def mean_and_std(values) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1) of per-image numbers, for tables."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var)}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator range [-1, 1] -> [0, 1], clipped as a saved PNG would be."""
    return ((images + 1) / 2).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image of [0, 1] images; `weight` [B|1, 1, H, W] restricts it to a region."""
    err = (a - b).square()
    if weight is None:
        mse = err.flatten(1).mean(1)
    else:
        w = weight.expand_as(err)
        mse = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region,
    mean over channels) of [0, 1] images."""
    c = a.shape[1]
    window = _gaussian_window().to(a)[None, None].expand(c, 1, -1, -1)
    size = min(11, a.shape[2], a.shape[3])
    if size < 11:  # tiny images: shrink the window rather than fail
        window = _gaussian_window(size, 1.5 * size / 11).to(a)[None, None].expand(c, 1, -1, -1)

    def blur(x):
        return F.conv2d(x, window, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a.square() + mu_b.square() + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).flatten(1).mean(1)


def restoration_metrics(
    restored: torch.Tensor, truth: torch.Tensor, observed: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """PSNR and SSIM on [0, 1]; given the observed-pixel mask [B|1, 1, H, W] of an inpainting
    (an operator's `observed`), also PSNR inside the hole and MSE on the observed pixels.
    Inputs in the generator's [-1, 1] range; each value is [B]."""
    r, t = to_unit(restored), to_unit(truth)
    out = {"psnr": psnr(r, t), "ssim": ssim(r, t)}
    if observed is not None:
        mask = observed.to(r)
        out["psnr_hole"] = psnr(r, t, 1 - mask)
        observed = mask.expand_as(r)
        out["mse_observed"] = ((r - t).square() * observed).flatten(1).sum(1) / observed.flatten(1).sum(1).clamp_min(1)
    return out
