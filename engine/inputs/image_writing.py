"""Writing images: generator output as 8-bit pixels, tiled into a grid, saved as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ilo.atomic import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8. Values outside [-1, 1] are clipped, never
    stretched, so a file shows what the generator produced."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile [N, H, W, C] uint8 images into one [rows*H', cols*W', C] array with black gaps."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image
    return grid


def save_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write an [H, W, 3] uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
