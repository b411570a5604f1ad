"""Classical baselines beside the generator-based solvers: BM3D for denoising.

BM3D comes from the `bm3d` package (Tampere University; free for non-commercial use only),
an optional extra: `pip install "ilo-engine[bm3d]"`. It is imported on first use.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ilo.errors import IloError


def _bm3d_module():
    try:
        import bm3d
    except ImportError:
        raise IloError(
            "the BM3D baseline needs the `bm3d` package (non-commercial licence): "
            'pip install "ilo-engine[bm3d]" or pip install bm3d'
        ) from None
    return bm3d


def bm3d_denoise(y: torch.Tensor, sigma: float | torch.Tensor) -> tuple[torch.Tensor, float]:
    """Denoise [B, 3, H, W] images in [-1, 1] with white-noise std `sigma` in [0, 1] pixel units
    (per image allowed). Returns the images in [-1, 1] and the seconds it took."""
    bm3d = _bm3d_module()
    sigmas = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(y.shape[0])
    t0 = time.perf_counter()
    out = []
    for image, s in zip(y, sigmas):
        unit = ((image.detach().double().cpu() + 1) / 2).permute(1, 2, 0).numpy()
        if float(s) <= 0:  # nothing to remove
            out.append(image.detach().cpu().float())
            continue
        with np.errstate(divide="ignore", invalid="ignore"):  # its colour transform's scale on a flat channel
            clean = bm3d.bm3d_rgb(unit, float(s)) if unit.shape[2] == 3 else bm3d.bm3d(unit, float(s))
        out.append(torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1).float() * 2 - 1)
    return torch.stack(out).clamp(-1, 1), time.perf_counter() - t0
