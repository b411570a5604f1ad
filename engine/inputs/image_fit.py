"""Fitting an image (and its mask) to the generator's square size: `--fit crop`, `resize` or
`pad`, or a refusal that names the file and the size it needs. Tensors are [C, H, W] in the
generator's [-1, 1] range."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ilo.choices import FIT_MODES
from ilo.errors import InputError

# --fit resize's longest side, in short sides, before resizing (beyond it nothing reaches the centre)
MAX_ASPECT = 4


def _cut_long_side(image: torch.Tensor) -> torch.Tensor:
    """Only the centre square survives --fit resize, so a very long image is first cut to
    MAX_ASPECT times its short side around the centre: resized whole, a 1x1,000,000 strip would
    become 64x64,000,000 floats (49 GB) to keep 64x64 of them. Ordinary shapes are left whole."""
    _, h, w = image.shape
    long_side = MAX_ASPECT * min(h, w)
    if h > long_side:
        image = image[:, (h - long_side) // 2 : (h - long_side) // 2 + long_side]
    if w > long_side:
        image = image[:, :, (w - long_side) // 2 : (w - long_side) // 2 + long_side]
    return image


def fit_to(
    image: torch.Tensor, size: int, mode: str | None, name: str, what: str = "image", pad_ok: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring [C, H, W] to [C, size, size]. Returns it and a [1, size, size] mask of pixels that
    came from the input (0 where `pad` invented them). Without a mode, a wrong size is refused.
    `pad_ok`: whether the task takes --fit pad (only inpainting does), so errors suggest it."""
    c, h, w = image.shape
    valid = torch.ones(1, size, size)
    if (h, w) == (size, size):
        return image, valid
    if mode is None:
        refuse_size(name, (w, h), size, what)
    if mode == "crop":
        if h < size or w < size:
            other = "--fit pad or resize" if pad_ok else "--fit resize"  # suggest only what this task takes
            raise InputError(f"{name}: {w}x{h} is smaller than {size}x{size}, so it cannot be cropped; use {other}")
        top, left = (h - size) // 2, (w - size) // 2
        return image[:, top : top + size, left : left + size], valid
    if mode == "resize":  # shorter side to `size` (antialiased), then the centre square
        image = _cut_long_side(image)
        _, h, w = image.shape
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        return resized[:, top : top + size, left : left + size].clamp(-1, 1), valid
    if mode == "pad":
        if h > size or w > size:
            raise InputError(
                f"{name}: {w}x{h} is larger than {size}x{size}, so it cannot be padded; use --fit crop or resize"
            )
        top, left = (size - h) // 2, (size - w) // 2
        out = torch.full((c, size, size), -1.0)  # black, and marked as not observed
        out[:, top : top + h, left : left + w] = image
        valid = torch.zeros(1, size, size)
        valid[:, top : top + h, left : left + w] = 1
        return out, valid
    raise InputError(f"unknown --fit mode '{mode}' (choose from {', '.join(FIT_MODES)})")


def refuse_size(name, size: tuple[int, int], wanted: int, what: str = "image") -> None:
    raise InputError(
        f"{name}: {what} is {size[0]}x{size[1]} but this task needs {wanted}x{wanted}; "
        "resize it yourself or pass --fit crop|resize (or pad, for inpainting)"
    )


def fit_mask(mask: torch.Tensor, size: int, mode: str | None, name: str) -> torch.Tensor:
    """Apply the image's fit to its mask; nearest-neighbour so it stays binary."""
    if mode == "resize" and tuple(mask.shape[1:]) != (size, size):
        mask = _cut_long_side(mask)
        _, h, w = mask.shape
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        mask = F.interpolate(mask[None], size=(nh, nw), mode="nearest")[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        return mask[:, top : top + size, left : left + size]
    fitted, valid = fit_to(mask, size, mode, name, what="mask")
    return fitted * valid
