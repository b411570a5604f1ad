"""Image files: listing and reading the user's images and masks.

Pixels come back as float tensors in the generator's [-1, 1] range; masks as {0, 1} with
0 (black) = missing. Every failure names the file and what is wrong with it. Files are 8-bit
[0, 255] (16-bit and floating-point ones are scaled to that). Fitting to the generator's size
(`image_fit`) and writing (`image_writing`) have modules of their own; their names stay
importable from here.
"""

from __future__ import annotations

import glob
import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ilo.choices import DEFAULT_MAX_PIXELS, FIT_MODES  # noqa: F401  (FIT_MODES re-exported)
from ilo.engine.inputs.image_fit import MAX_ASPECT, fit_mask, fit_to, refuse_size  # noqa: F401  (re-exported)
from ilo.engine.inputs.image_writing import make_grid, save_png, to_uint8  # noqa: F401  (re-exported)
from ilo.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


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
        elif path.exists():  # a pipe, a socket or a device: reading it would block or never end
            raise InputError(f"{spec}: not a regular file (a pipe, socket or device); give an image file")
        else:
            raise InputError(f"{spec}: no such file or folder")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    stems = [p.stem for p in unique]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:  # outputs are named by stem, so two inputs must not share one
        raise InputError(f"several inputs share the name(s) {', '.join(clashes)}; outputs would collide")
    return unique


@dataclass(frozen=True)
class Picture:
    """An image file as read: pixels (possibly reduced early, see `read_picture`), the size the
    file declares, and the SHA-256 of its bytes (what a resumed run compares)."""

    pixels: np.ndarray  # [H, W, 3] float64 in [0, 255]
    size: tuple[int, int]  # (width, height) as shown (after the file's EXIF orientation)
    sha256: str
    alpha: np.ndarray | None = None  # [H, W] uint8 where the file has transparency (a mask's holes)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (inputs can be large)."""
    digest = hashlib.sha256()
    _check_regular(Path(path))
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e.strerror or e})") from None
    return digest.hexdigest()


def read_picture(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, fit: tuple[str | None, int] | None = None
) -> Picture:
    """Read an image file once: its bytes are hashed and decoded from the same buffer.

    The size in the file's header is checked against `max_pixels` before anything is decoded
    (a 48 KB PNG can declare 20000x20000). With `fit=(mode, size)` a large image is reduced
    while still 8-bit: `crop` cuts the centre square, `resize` shrinks by a whole factor
    (box filter) to no less than four times `size`, so `fit_to`'s antialiased resize finishes it
    from a small array instead of a full-size float one."""
    path = Path(path)
    _check_regular(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image") from None
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e.strerror or e})") from None
    return decode_picture(data, str(path), max_pixels, fit)


def _check_regular(path: Path) -> None:
    """A FIFO or a device named as an image (or mask, or truth) would block the read or never
    end it: refuse it from its type, before opening it."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # the read reports a missing or unreadable file in its own words
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); give an image file")


def decode_picture(
    data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS, fit: tuple[str | None, int] | None = None
) -> Picture:
    """`read_picture` for bytes already in memory (an upload, say); `name` goes into errors."""
    from PIL import Image, UnidentifiedImageError

    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0) * 2:
        # the image library refuses above twice its own limit: a user who raised ours raises it too
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    _refuse_pixels(name, (width, height), max_pixels)
                if im.mode == "I" and im.format != "PNG":
                    # 32-bit integers (a TIFF's, say) have no agreed range: 8-bit values stored in
                    # them would read as black if taken for 16-bit, and larger ones would clip.
                    # (Older image libraries open a 16-bit PNG as mode I: that one is 16-bit.)
                    raise InputError(
                        f"{name}: 32-bit integer pixels, whose range ilo cannot tell; it reads 8- and 16-bit "
                        "images (and floating-point ones in [0, 1]): convert it to one of those"
                    )
                frames = getattr(im, "n_frames", 1)
                if frames > 1:  # which frame the user meant is not ours to guess
                    raise InputError(
                        f"{name}: has {frames} frames (an animation or a multi-page file); ilo restores still "
                        "images: save the frame you want as its own file"
                    )
                if _EXIF_SWAPS.get(_orientation(im), False):  # shown turned a quarter: the sides swap
                    width, height = height, width
                if fit is not None and fit[0] is None and (width, height) != (fit[1], fit[1]):
                    refuse_size(name, (width, height), fit[1])  # before decoding what would be refused
                im = _upright(im)
                im = _prefit(im, fit)
                pixels = rgb_array(im, name)
                alpha = alpha_array(im)
    except InputError:
        raise
    except Image.DecompressionBombError:
        size = _declared_size(data)
        if size is not None:
            _refuse_pixels(name, size, max_pixels)
        raise InputError(
            f"{name}: declares more pixels than the image library will decode; raise --max-pixels"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (not a format the image library knows)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InputError(f"{name}: not a readable image ({e})") from None
    return Picture(pixels, (width, height), hashlib.sha256(data).hexdigest(), alpha)


def _refuse_pixels(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    raise InputError(
        f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
        f"{max_pixels / 1e6:.0f}; raise it with --max-pixels if the file is genuine"
    )


_HEADER_ONLY = threading.Lock()


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """The size a file declares, where the image library refused to open it as a bomb: opening
    reads only the header, so its own limit can be lifted for that (under a lock, and put back)."""
    from PIL import Image

    with _HEADER_ONLY:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception:  # the header itself is broken: the caller's generic message stands
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


# EXIF Orientation -> whether the picture is shown turned a quarter (width and height swap);
# 1 (or no tag) is as stored
_EXIF_SWAPS = {2: False, 3: False, 4: False, 5: True, 6: True, 7: True, 8: True}


def _orientation(im) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the library warns of a broken block: lines of noise for the user
            return int(im.getexif().get(0x0112, 1))
    except (ValueError, TypeError, SyntaxError, OSError):  # a broken EXIF block: shown as stored
        return 1


def _upright(im):
    """The pixels as every viewer shows them: a phone's JPEG is stored sideways with an EXIF
    Orientation tag, and restoring it as stored would restore a sideways face."""
    if _orientation(im) not in _EXIF_SWAPS:
        return im
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def _prefit(im, fit: tuple[str | None, int] | None):
    if fit is None or fit[0] not in ("crop", "resize"):
        return im
    mode, size = fit
    width, height = im.size
    if mode == "crop" and min(width, height) >= size and (width, height) != (size, size):
        left, top = (width - size) // 2, (height - size) // 2
        return im.crop((left, top, left + size, top + size))
    factor = min(width, height) // (4 * size)  # at least 4x the target left for the antialiased resize
    if mode == "resize" and factor >= 2:
        if im.mode.startswith("I;16"):  # reduce() needs 32-bit integers; the values are kept
            im = im.convert("I")
        elif im.mode in ("P", "1"):  # a palette's transparency is kept for masks
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        return im.reduce(factor)
    return im


def rgb_array(im, path: str | Path) -> np.ndarray:
    """Decoded pixels as [H, W, 3] float64 in [0, 255], whatever the file's pixel format."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: keep the precision, then scale
        a = np.asarray(im, dtype=np.float64)
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 65535:  # 32-bit integers: their range has no convention, so no guess
            raise InputError(
                f"{path}: 32-bit integer pixels spanning [{low:.0f}, {high:.0f}]; ilo reads 8- and 16-bit images "
                "(and floating-point ones in [0, 1]): convert it to one of those"
            )
        return np.repeat((a / 65535.0 * 255.0)[..., None], 3, axis=2)
    if im.mode == "F":  # floating-point TIFFs hold [0, 1], the convention of every tool that writes them
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise InputError(f"{path}: the floating-point image holds NaN or inf values")
        low, high = float(a.min()), float(a.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise InputError(f"{path}: floating-point pixels must lie in [0, 1], these span [{low:.4g}, {high:.4g}]")
        return np.repeat((a.clip(0, 1) * 255.0)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def alpha_array(im) -> np.ndarray | None:
    """The file's transparency as [H, W] uint8 (255 = opaque), or None where it has none."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(im.getchannel("A"), dtype=np.uint8)
    if "transparency" in im.info and im.mode in ("P", "L", "RGB", "1"):  # a palette entry or a colour key
        return np.asarray(im.convert("RGBA").getchannel("A"), dtype=np.uint8)
    return None


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels / 127.5 - 1.0).float().permute(2, 0, 1).contiguous()


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An image file as [3, H, W] float32 in [-1, 1] (alpha dropped, greyscale repeated)."""
    return _to_tensor(read_picture(path, max_pixels).pixels)


def image_tensor(picture: Picture) -> torch.Tensor:
    """A read picture's pixels as [3, h, w] float32 in [-1, 1]."""
    return _to_tensor(picture.pixels)


def mask_tensor(picture: Picture) -> torch.Tensor:
    """A read mask's pixels as [1, h, w] in {0, 1}: dark pixels (< half brightness) are missing,
    and so are transparent ones (< half opaque): a hole is often drawn by erasing to transparency,
    which leaves the colour underneath as it was."""
    observed = picture.pixels.mean(axis=2) >= 127.5
    if picture.alpha is not None:
        observed &= picture.alpha >= 128
    return torch.from_numpy(observed.astype(np.float32))[None]


def read_mask(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A mask image as [1, H, W] in {0, 1}: dark or transparent pixels are missing."""
    return mask_tensor(read_picture(path, max_pixels))
