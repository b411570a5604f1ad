"""An encoder on disk: safetensors (tensors only, so reading one runs no code) with metadata
that names the generator it was trained for, its shape and the format's version. A file made
for other weights, from another version, or damaged is refused by name: a learned start from
the wrong encoder would look like a working one and quietly cost quality."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ilo.atomic import atomic_write_bytes
from ilo.engine.solver.encoder import EncoderShape, LatentEncoder
from ilo.errors import InputError

FORMAT = "ilo-encoder-1"


def save_encoder(
    encoder: LatentEncoder, generator_sha256: str, path: Path, training: dict | None = None, half: bool = False
) -> None:
    """Write `encoder` (trained for the generator of fingerprint `generator_sha256`) to `path`
    atomically; `training` (settings, seconds, losses) is kept as metadata. `half` stores the
    weights in float16: half the file, and the starts it gives move by far less than a solve's own
    spread."""
    from safetensors.torch import save

    metadata = {
        "format": FORMAT,
        "generator_sha256": generator_sha256,
        "shape": json.dumps(encoder.shape.describe()),
        "training": json.dumps(training or {}),
    }
    tensors = {k: (v.half() if half else v).detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    metadata["weights_sha256"] = weights_sha256(tensors)
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every stored tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_encoder(path: Path, generator_sha256: str) -> LatentEncoder:
    """The encoder in `path`, refused (InputError, one line) unless it was made by this format
    for the generator of fingerprint `generator_sha256`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            f"{path}: not a readable encoder file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
    if metadata.get("format") != FORMAT:
        raise InputError(
            f"{path}: an encoder of format '{metadata.get('format')}', not {FORMAT}: train it again "
            "(ilo export --encoder)"
        )
    if metadata.get("weights_sha256") != weights_sha256(tensors):
        raise InputError(f"{path}: the encoder's weights do not match the hash recorded with them (a damaged file)")
    if metadata.get("generator_sha256") != generator_sha256:
        raise InputError(
            f"{path}: this encoder was trained for another generator (weights "
            f"{str(metadata.get('generator_sha256'))[:12]}…, this one {generator_sha256[:12]}…)"
        )
    try:
        encoder = LatentEncoder(EncoderShape(**json.loads(metadata["shape"])))
        encoder.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: the encoder's weights do not match its recorded shape ({type(e).__name__})") from e
    return encoder.eval().requires_grad_(False)
