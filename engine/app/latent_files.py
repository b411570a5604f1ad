"""Reading latents and noise maps that users hand to `ilo sample` (.npy, .npz, .pt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ilo.choices import INPUT_SPACES  # noqa: F401  (re-exported)
from ilo.errors import InputError
from ilo.generators.staged import StagedGenerator


def _read_array(path: Path, key: str) -> torch.Tensor:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        if path.suffix in (".pt", ".pth"):
            obj = torch.load(path, weights_only=True, map_location="cpu")
            if isinstance(obj, dict):
                if key not in obj:
                    raise InputError(f"{path}: holds keys {sorted(obj)[:8]}, expected a tensor or a '{key}' entry")
                obj = obj[key]
            if not isinstance(obj, torch.Tensor):
                raise InputError(f"{path}: expected a tensor, found {type(obj).__name__}")
            return obj.float()
    except (ValueError, OSError, RuntimeError) as e:
        raise InputError(f"{path}: unreadable ({str(e).splitlines()[0]})") from e
    raise InputError(f"{path}: latents must be a .npy or .pt file")


def read_latents(path: Path, gen: StagedGenerator, input_space: str = "z") -> torch.Tensor:
    """z [N, z_dim] for input_space 'z', or w+ [N, n_latent, style_dim] for 'wplus'."""
    x = _read_array(path, input_space)
    expected = [gen.z_dim] if input_space == "z" else [gen.n_latent, gen.style_dim]
    if x.ndim != len(expected) + 1 or list(x.shape[1:]) != expected or x.shape[0] == 0:
        raise InputError(f"{path}: {input_space} latents must have shape [N, {', '.join(map(str, expected))}], got {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{path}: latents contain NaN or infinite values")
    return x


def read_noises(path: Path, gen: StagedGenerator, batch: int) -> list[torch.Tensor]:
    """Noise maps noise_0 ... from an .npz; each [H, W], [1, 1, H, W] or [N, 1, H, W]."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npz archive ({e})") from e
    noises = []
    with archive:
        for i, (h, w) in enumerate(gen.noise_shapes):
            name = f"noise_{i}"
            if name not in archive:
                raise InputError(f"{path}: missing '{name}' (expected {len(gen.noise_shapes)} maps, noise_0 ...)")
            x = torch.from_numpy(archive[name]).float()
            if x.ndim == 2:
                x = x[None, None]
            noises.append(x)
    gen.check_noises(noises, batch)
    return noises
