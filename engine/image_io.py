"""Reading the user's images and masks, and fitting them to the generator's size.

Pixels come back as float tensors in the generator's [-1, 1] range; masks as {0, 1} with
0 (black) = missing. Every failure names the file and what is wrong with it.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ilo.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FIT_MODES = ("crop", "resize", "pad")


def list_inputs(specs: list[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Files named by each spec (a file, a folder's images, or a glob), sorted, duplicates dropped."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not matches:
                raise InputError(f"{path}: no {'/'.join(suffixes)} files in this folder")
        elif path.is_file():
            matches = [path]
        elif any(ch in spec for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not matches:
                raise InputError(f"{spec}: the pattern matches no files")
        else:
            raise InputError(f"{spec}: no such file or folder")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    stems = [p.stem for p in unique]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:  # outputs are named by stem, so two inputs must not share one
        raise InputError(f"several inputs share the name(s) {', '.join(clashes)}; outputs would collide")
    return unique


def _open_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit greyscale: keep the precision, then scale
                a = np.asarray(im, dtype=np.float64)
                return np.repeat((a / 65535.0 * 255.0)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.float64)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as [3, H, W] float32 in [-1, 1] (alpha dropped, greyscale repeated)."""
    pixels = _open_rgb(Path(path))
    return torch.from_numpy(pixels / 127.5 - 1.0).float().permute(2, 0, 1).contiguous()


def read_mask(path: str | Path) -> torch.Tensor:
    """A mask image as [1, H, W] in {0, 1}: dark pixels (< half brightness) are missing."""
    pixels = _open_rgb(Path(path))
    return torch.from_numpy((pixels.mean(axis=2) >= 127.5).astype(np.float32))[None]


def fit_to(image: torch.Tensor, size: int, mode: str | None, name: str, what: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring [C, H, W] to [C, size, size]. Returns it and a [1, size, size] mask of pixels that
    came from the input (0 where `pad` invented them). Without a mode, a wrong size is refused."""
    c, h, w = image.shape
    valid = torch.ones(1, size, size)
    if (h, w) == (size, size):
        return image, valid
    if mode is None:
        raise InputError(
            f"{name}: {what} is {w}x{h} but this task needs {size}x{size}; "
            "resize it yourself or pass --fit crop|resize|pad"
        )
    if mode == "crop":
        if h < size or w < size:
            raise InputError(f"{name}: {w}x{h} is smaller than {size}x{size}, so it cannot be cropped; use --fit pad or resize")
        top, left = (h - size) // 2, (w - size) // 2
        return image[:, top : top + size, left : left + size], valid
    if mode == "resize":  # shorter side to `size` (antialiased), then the centre square
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        return resized[:, top : top + size, left : left + size].clamp(-1, 1), valid
    if mode == "pad":
        if h > size or w > size:
            raise InputError(f"{name}: {w}x{h} is larger than {size}x{size}, so it cannot be padded; use --fit crop or resize")
        top, left = (size - h) // 2, (size - w) // 2
        out = torch.full((c, size, size), -1.0)  # black, and marked as not observed
        out[:, top : top + h, left : left + w] = image
        valid = torch.zeros(1, size, size)
        valid[:, top : top + h, left : left + w] = 1
        return out, valid
    raise InputError(f"unknown --fit mode '{mode}' (choose from {', '.join(FIT_MODES)})")


def fit_mask(mask: torch.Tensor, size: int, mode: str | None, name: str) -> torch.Tensor:
    """Apply the image's fit to its mask; nearest-neighbour so it stays binary."""
    if mode == "resize" and tuple(mask.shape[1:]) != (size, size):
        _, h, w = mask.shape
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        mask = F.interpolate(mask[None], size=(nh, nw), mode="nearest")[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        return mask[:, top : top + size, left : left + size]
    fitted, valid = fit_to(mask, size, mode, name, what="mask")
    return fitted * valid
