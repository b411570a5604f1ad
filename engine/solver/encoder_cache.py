"""A model's trained encoder in the cache, keyed by the generator's weights: trained once
(resumably: a stopped training picks up at its last checkpoint), checked and exported to ONNX
beside the model's graphs, then found by every later run."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ilo.engine.solver.encoder import EncoderShape, LatentEncoder, encoder_bundle
from ilo.engine.solver.encoder_files import load_encoder, save_encoder
from ilo.engine.solver.encoder_training import TrainingSettings, train_encoder
from ilo.export.artifacts import ExportResult, export_bundle
from ilo.generators.staged import StagedGenerator
from ilo.paths import assets_dir, cache_dir


def encoder_path(gen: StagedGenerator, fingerprint: str | None = None) -> Path:
    """Where `gen`'s encoder is cached (`fingerprint`: gen's, where the caller has it: hashing
    a 1024² model's weights takes a noticeable fraction of a second)."""
    return cache_dir() / "encoders" / f"{(fingerprint or gen.fingerprint())[:32]}.safetensors"


# the embedded default model's encoder, trained by `ilo export --model default --encoder
# --encoder-steps 2000 --seed 0` (its metadata records the run) and stored in float16
SHIPPED = assets_dir() / "dcgan_face64_encoder.safetensors"


def model_encoder(gen: StagedGenerator, fingerprint: str | None = None) -> LatentEncoder | None:
    """`gen`'s own encoder: the one `ilo export --encoder` cached, else the one shipped for the
    embedded model; None where there is neither. A damaged or foreign file is refused by
    load_encoder, not passed over. `fingerprint`: gen's, where the caller has it."""
    fingerprint = fingerprint or gen.fingerprint()
    path = encoder_path(gen, fingerprint)
    if path.exists():
        return load_encoder(path, fingerprint)
    if encoder_metadata(SHIPPED).get("generator_sha256") == fingerprint:
        return load_encoder(SHIPPED, fingerprint)
    return None


def encoder_metadata(path: Path) -> dict:
    """A file's metadata ({} where it cannot be read: load_encoder says why, where it matters)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


def train_and_cache(
    gen: StagedGenerator, settings: TrainingSettings, shape: EncoderShape | None = None, progress=None
) -> tuple[Path, LatentEncoder, ExportResult, dict]:
    """Train `gen`'s encoder (resuming a stopped run of the same settings), save it in the cache
    and export its graph there; the file, the encoder, the export and the training's record."""
    fingerprint = gen.fingerprint()
    path = encoder_path(gen, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = path.with_name(path.stem + f".s{settings.seed}.training")
    t0 = time.perf_counter()
    encoder, losses = train_encoder(gen, shape, settings, checkpoint, progress)
    record = {
        **vars(settings),
        "seconds": time.perf_counter() - t0,
        "final_image_mse": sum(losses[-50:]) / len(losses[-50:]),
        "torch": torch.__version__,
    }
    save_encoder(encoder, fingerprint, path, record)
    exported = export_bundle(encoder_bundle(encoder))
    checkpoint.unlink(missing_ok=True)
    return path, encoder, exported, record
