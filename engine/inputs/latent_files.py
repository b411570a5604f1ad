"""Reading latents and noise maps that users hand to `ilo sample` (.npy, .npz, .pt).

These are files from anywhere: each is checked for what it declares (an .npy's header, an
archive's unpacked sizes) before anything is allocated for it, and torch files load with
`weights_only=True`, whose refusals are reported without torch's advice to turn that off."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ilo.choices import INPUT_SPACES  # noqa: F401  (re-exported)
from ilo.engine.inputs.npy_header import check_npy_holds, check_npz_members
from ilo.errors import InputError
from ilo.generators.checkpoints.zip_sizes import check_declared_sizes
from ilo.generators.staged import StagedGenerator


def _first_line(e: BaseException) -> str:
    # torch's refusals go on to suggest weights_only=False, i.e. running the file's code: never shown
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(e).__name__


def _torch_tensor_file(path: Path, data: bytes) -> object:
    check_declared_sizes(data, str(path))  # before torch allocates records at their declared size
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        detail = _first_line(e)
        if "global" in detail.lower():  # it asked for code; else the bytes are not a pickle at all
            raise InputError(f"{path}: refusing to load: {detail} (nothing from the file was run)") from None
        raise InputError(f"{path}: not a tensor file torch can read ({detail})") from None
    except Exception as e:  # noqa: BLE001  (a hostile file reaches torch's reader in many ways)
        raise InputError(f"{path}: not a tensor file torch can read ({type(e).__name__}: {_first_line(e)})") from None


def _read_array(path: Path, key: str) -> torch.Tensor:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix not in (".npy", ".pt", ".pth"):
        raise InputError(f"{path}: latents must be a .npy or .pt file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e.strerror or e})") from None
    if path.suffix == ".npy":
        check_npy_holds(data, str(path))
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: unreadable ({_first_line(e)})") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
            what = type(array).__name__ if not isinstance(array, np.ndarray) else f"{array.dtype} values"
            raise InputError(f"{path}: holds {what}, not an array of numbers")
        return torch.from_numpy(np.asarray(array, dtype=np.float32))
    obj = _torch_tensor_file(path, data)
    if isinstance(obj, dict):
        if key not in obj:
            raise InputError(f"{path}: holds keys {sorted(map(str, obj))[:8]}, expected a tensor or a '{key}' entry")
        obj = obj[key]
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{path}: expected a tensor, found {type(obj).__name__}")
    if obj.is_complex() or obj.is_sparse:
        raise InputError(f"{path}: holds a {obj.dtype} tensor, not real numbers")
    return obj.float()


def read_latents(path: Path, gen: StagedGenerator, input_space: str = "z") -> torch.Tensor:
    """z [N, z_dim] for input_space 'z', or w+ [N, n_latent, style_dim] for 'wplus'."""
    expected = [gen.z_dim] if input_space == "z" else [gen.n_latent, gen.style_dim]
    x = _read_array(path, input_space)
    if x.ndim != len(expected) + 1 or list(x.shape[1:]) != expected or x.shape[0] == 0:
        raise InputError(
            f"{path}: {input_space} latents must have shape [N, {', '.join(map(str, expected))}], got {list(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise InputError(f"{path}: latents contain NaN or infinite values")
    return x


def read_noises(path: Path, gen: StagedGenerator, batch: int) -> list[torch.Tensor]:
    """Noise maps noise_0 ... from an .npz; each [H, W], [1, 1, H, W] or [N, 1, H, W]."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = path.read_bytes()
    # an .npz may be deflated (savez_compressed), so its size says little: what the maps need does
    expected = sum(8 * batch * h * w for h, w in gen.noise_shapes)
    check_declared_sizes(data, str(path), expected)
    check_npz_members(data, str(path))
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz archive ({_first_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds one array, not an .npz archive of noise_0 ...")
    noises = []
    with archive:
        for i, (h, w) in enumerate(gen.noise_shapes):
            name = f"noise_{i}"
            if name not in archive:
                raise InputError(f"{path}: missing '{name}' (expected {len(gen.noise_shapes)} maps, noise_0 ...)")
            try:
                array = archive[name]
            except (ValueError, OSError, EOFError) as e:  # an object array, a corrupt member
                raise InputError(f"{path}: '{name}' is unreadable ({_first_line(e)})") from None
            if array.dtype.kind not in "fiub":
                raise InputError(f"{path}: '{name}' holds {array.dtype} values, not numbers")
            x = torch.from_numpy(np.asarray(array, dtype=np.float32))
            if x.ndim == 2:
                x = x[None, None]
            noises.append(x)
    gen.check_noises(noises, batch)
    return noises
