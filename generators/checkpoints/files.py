"""Checkpoint files: recognise the format from the bytes, load safely, save atomically.

No format runs code from the file: torch files load with `weights_only=True`, NVIDIA pickles
through `safe_pickle`, safetensors have no code at all.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from ilo.atomic import atomic_write_bytes
from ilo.choices import SAVE_FORMATS  # noqa: F401  (re-exported)
from ilo.errors import CheckpointError, UnsafeCheckpointError
from ilo.generators.checkpoints import dcgan, nvidia, rosinality
from ilo.generators.checkpoints.safe_pickle import safe_load_pickle
from ilo.generators.checkpoints.zip_sizes import check_declared_sizes
from ilo.generators.staged import StagedGenerator
from ilo.generators.stylegan2 import StyleGAN2Generator
from ilo.paths import assets_dir

DEFAULT_MODEL = "default"
DEFAULT_WEIGHTS_NAME = "dcgan_face64.safetensors"


def default_weights_path() -> Path:
    """The embedded 64x64 face DCGAN, shipped inside the `ilo` package."""
    candidate = assets_dir() / DEFAULT_WEIGHTS_NAME
    if candidate.is_file():
        return candidate
    raise CheckpointError(f"the embedded default model ({DEFAULT_WEIGHTS_NAME}) is missing from the installation")


def sniff_format(data: bytes) -> str:
    """'zip' (torch.save), 'pickle', 'safetensors' or 'unknown', from the leading bytes."""
    if data[:4] == b"PK\x03\x04":
        return "zip"
    # safetensors first: its header length is any 8 bytes, so its first byte can be 0x80 too,
    # while a pickle's second byte (the protocol) is never followed by 6 bytes and a '{'
    if len(data) > 9:
        (header_len,) = struct.unpack("<Q", data[:8])
        if 0 < header_len <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _torch_load(data: bytes, origin: str) -> object:
    check_declared_sizes(data, origin)  # before torch allocates a record at its declared size
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        detail = str(e).strip().splitlines()
        reason = next(
            (line for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0] if detail else ""
        )
        raise UnsafeCheckpointError(
            f"{origin}: refusing to load: {reason.strip()} (nothing from the file was run)"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{origin}: truncated or corrupt torch checkpoint ({first})") from e


def read_checkpoint(path: Path) -> object:
    """The file's contents as plain data (dicts, tensors, PersistentRecords)."""
    origin = str(path)
    if not path.exists():
        raise CheckpointError(f"{origin}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{origin}: not a file")
    return decode_checkpoint(path.read_bytes(), origin)


def decode_checkpoint(data: bytes, origin: str) -> object:
    """Checkpoint bytes -> plain data, by the format the bytes show."""
    kind = sniff_format(data)
    if kind == "zip":
        return _torch_load(data, origin)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError) as e:
            raise CheckpointError(f"{origin}: corrupt safetensors file ({e})") from e
    if kind == "pickle":
        try:
            obj = safe_load_pickle(data)
        except CheckpointError as e:
            raise type(e)(f"{origin}: {e}") from e
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise CheckpointError(f"{origin}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
        if isinstance(obj, int):  # torch's legacy (pre-zip) format starts with a pickled magic number
            return _torch_load(data, origin)
        return obj
    raise CheckpointError(f"{origin}: unrecognised file format (not a torch checkpoint, pickle or safetensors file)")


def estimate_latent_avg(gen: StyleGAN2Generator, samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Mean of the mapping network's output over seeded samples (for checkpoints without one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return gen.mapping(torch.randn(samples, gen.z_dim, generator=g)).mean(0)


def generator_from_data(obj: object, origin: str) -> StagedGenerator:
    if rosinality.is_rosinality(obj):
        return rosinality.load_rosinality(obj, origin, estimate_latent_avg)
    if nvidia.is_nvidia(obj):
        return nvidia.load_nvidia(obj, origin)
    if isinstance(obj, dict) and dcgan.is_dcgan_state(obj.get("netG_state_dict")):
        return dcgan.load_dcgan(obj["netG_state_dict"], origin)
    if dcgan.is_dcgan_state(obj):
        return dcgan.load_dcgan(obj, origin)
    keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{origin}: unknown checkpoint layout (top level: {keys}); expected a rosinality StyleGAN2 "
        "checkpoint ('g_ema'), an NVIDIA network pickle ('G_ema') or a DCGAN state dict ('main.0.weight')"
    )


def load_generator(model: str | Path = DEFAULT_MODEL) -> StagedGenerator:
    """Load a generator by path, or the embedded default DCGAN for 'default'. Never runs code
    from the file. Returns the generator in eval mode on the CPU, in float32."""
    if str(model) == DEFAULT_MODEL:
        path = default_weights_path()
    else:
        path = Path(model).expanduser()
    gen = generator_from_data(read_checkpoint(path), str(model))
    gen.requires_grad_(False)
    return gen


def checkpoint_bytes(gen: StagedGenerator, fmt: str) -> bytes:
    if not isinstance(gen, StyleGAN2Generator):
        raise CheckpointError(f"only StyleGAN2 generators can be written as '{fmt}' checkpoints (got {gen.family})")
    if fmt == "nvidia":
        return nvidia.to_nvidia_pickle(gen)
    if fmt == "rosinality":
        buf = io.BytesIO()
        torch.save(rosinality.to_rosinality(gen), buf)
        return buf.getvalue()
    raise CheckpointError(f"unknown checkpoint format '{fmt}'; choose from {sorted(SAVE_FORMATS)}")


def format_for_path(path: Path) -> str:
    for fmt, suffix in SAVE_FORMATS.items():
        if path.suffix == suffix:
            return fmt
    raise CheckpointError(
        f"{path}: cannot tell the format from the suffix '{path.suffix}'; give --to {{rosinality,nvidia}}"
    )


def save_generator(gen: StagedGenerator, path: str | Path, fmt: str | None = None) -> None:
    """Write `gen` as a rosinality .pt or NVIDIA .pkl checkpoint, atomically."""
    path = Path(path)
    atomic_write_bytes(path, checkpoint_bytes(gen, fmt or format_for_path(path)))
