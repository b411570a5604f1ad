"""Pictures handed over in memory (by a pipeline, or an HTTP upload) as the `Pixels` a file
would give: torch tensors, numpy arrays, PIL images, encoded bytes (PNG, JPEG, ...) or paths.

Conventions are the ones such objects usually follow: tensors are channels-first, arrays and
PIL images channels-last; floats lie in [0, 1] and 8-bit integers in [0, 255]. Each object also
gets a content hash, which names it (and so seeds its solve) when the caller gives no name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ilo.choices import DEFAULT_MAX_PIXELS
from ilo.engine.inputs.image_files import (
    Picture,
    alpha_array,
    decode_picture,
    image_tensor,
    mask_tensor,
    read_picture,
    rgb_array,
)
from ilo.engine.inputs.measurements import Pixels
from ilo.errors import InputError

# pixels outside [0, 1] by more than this are a different convention (e.g. [-1, 1] or [0, 255] floats), not rounding
RANGE_SLACK = 1e-3


def picture_pixels(
    obj, name: str, mask: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, fit: tuple[str | None, int] | None = None
) -> tuple[Pixels, str]:
    """One picture as `Pixels` ([3, h, w] in [-1, 1], or a [1, h, w] {0, 1} mask) and its SHA-256."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_picture(decode_picture(bytes(obj), name, max_pixels, fit), name, mask)
    if isinstance(obj, (str, Path)):
        return _from_picture(read_picture(obj, max_pixels, fit), str(obj), mask)
    if isinstance(obj, Image.Image):
        pixels = rgb_array(obj, name)  # a mask's transparency is missing, as in a file
        return _from_picture(Picture(pixels, obj.size, _digest(pixels), alpha_array(obj)), name, mask)
    if isinstance(obj, torch.Tensor):
        array = obj.detach().cpu()
        if array.dim() == 3:  # channels-first, as torch keeps images
            array = array.permute(1, 2, 0)
        return _from_array(array.numpy(), name, mask, max_pixels)
    if isinstance(obj, np.ndarray):
        return _from_array(obj, name, mask, max_pixels)
    raise InputError(
        f"{name}: a {type(obj).__name__} is not a picture (give a tensor, a numpy array, a PIL image, "
        "encoded image bytes or a path)"
    )


def _from_array(array: np.ndarray, name: str, mask: bool, max_pixels: int) -> tuple[Pixels, str]:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] as 0..255 pixels (alpha counts only in a mask,
    where transparent is missing, as in a file)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name}: a picture of shape {tuple(array.shape)}; expected [3, H, W] (tensor), "
            "[H, W, 3] (array) or [H, W] (grey)"
        )
    height, width = array.shape[:2]
    if height * width > max_pixels:
        raise InputError(f"{name}: {width}x{height} is over the limit of {max_pixels} pixels")
    if min(height, width) < 1:
        raise InputError(f"{name}: an empty picture ({width}x{height})")
    if array.dtype == np.uint8:
        pixels = array.astype(np.float64)
    elif array.dtype.kind == "f" or array.dtype == np.float16:
        pixels = array.astype(np.float64)
        if not np.isfinite(pixels).all():
            raise InputError(f"{name}: the picture holds NaN or inf values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
            raise InputError(f"{name}: floating-point pixels must lie in [0, 1], these span [{low:.4g}, {high:.4g}]")
        pixels = pixels.clip(0, 1) * 255.0
    elif array.dtype == bool:
        pixels = array.astype(np.float64) * 255.0
    else:
        raise InputError(f"{name}: pixels of type {array.dtype}; give uint8 in [0, 255] or floats in [0, 1]")
    alpha = pixels[..., 3].round().astype(np.uint8) if pixels.shape[2] == 4 else None
    pixels = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels, 3, axis=2)
    return _from_picture(Picture(pixels, (width, height), _digest(pixels), alpha), name, mask)


def _from_picture(picture: Picture, name: str, mask: bool) -> tuple[Pixels, str]:
    tensor = mask_tensor(picture) if mask else image_tensor(picture)
    return Pixels(tensor, picture.size, name), picture.sha256


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels.astype(np.float32)).tobytes()).hexdigest()


def vector_digest(values) -> str:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return hashlib.sha256(np.ascontiguousarray(array.astype(np.float32)).tobytes()).hexdigest()
