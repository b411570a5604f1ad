"""Training a `LatentEncoder` on the generator's own samples: x = G(z) for random latents, each
batch degraded by a random operator of one task family (box and scattered masks, x2/x4/x8
super-resolution, noise up to sigma 0.2, compressed sensing at several ratios), and the encoder
taught that G(E(view(y))) should be x (image space) and E(view(y)) near z (latent space).

Samples cost nothing but the generator's forward pass, so there is no data set. Training is
deterministic for a seed and resumable from a checkpoint of tensors only (read back with
weights_only, so a checkpoint file cannot run code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ilo.atomic import atomic_write_bytes
from ilo.choices import TASKS
from ilo.engine.problems.measurement_view import measurement_view
from ilo.engine.problems.operators import Downsample, Inpainting, Noise, Operator, PartialCirculantCS
from ilo.engine.solver.encoder import EncoderShape, LatentEncoder
from ilo.engine.solver.generator_view import GeneratorView
from ilo.errors import IloError


@dataclass(frozen=True)
class TrainingSettings:
    steps: int = 3000
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
    latent_weight: float = 0.1  # of the latent-space loss beside the image-space one
    checkpoint_every: int = 100


def _random_inpainting(batch: int, resolution: int, g: torch.Generator, u: Callable[[], float]) -> Operator:
    if u() < 0.5:  # a box per image, a quarter to two thirds of the side
        masks = torch.ones(batch, 1, resolution, resolution)
        for mask in masks:
            side = max(1, round(resolution * (0.25 + 0.4 * u())))
            top, left = (int(torch.randint(0, resolution - side + 1, (), generator=g)) for _ in range(2))
            mask[:, top : top + side, left : left + side] = 0
        return Inpainting(masks)
    return Inpainting.random_pixels(resolution, batch, keep=0.05 + 0.45 * u(), generator=g)


def _random_downsampling(batch: int, resolution: int, g: torch.Generator, u: Callable[[], float]) -> Operator:
    factors = [f for f in (2, 4, 8) if resolution % f == 0 and resolution // f >= 4]
    return Downsample(factors[int(torch.randint(0, len(factors), (), generator=g))], sigma=0.02 * u())


def _random_noise(batch: int, resolution: int, g: torch.Generator, u: Callable[[], float]) -> Operator:
    return Noise(torch.rand(batch, generator=g) * 0.2)


def _random_sensing(batch: int, resolution: int, g: torch.Generator, u: Callable[[], float]) -> Operator:
    n = 3 * resolution * resolution
    ratio = (0.02, 0.05, 0.1, 0.25)[int(torch.randint(0, 4, (), generator=g))]
    return PartialCirculantCS(
        n, max(1, round(ratio * n)), batch=batch, seed=int(torch.randint(0, 2**31, (), generator=g))
    )


# The degradations the encoder is trained under, one per task family; the draws' order is part
# of the training's determinism, so each family consumes the generator as it always has.
RANDOM_DEGRADATIONS: dict[str, Callable[[int, int, torch.Generator, Callable[[], float]], Operator]] = {
    "inpaint": _random_inpainting,
    "sr": _random_downsampling,
    "denoise": _random_noise,
    "cs": _random_sensing,
}
FAMILIES = tuple(RANDOM_DEGRADATIONS)
assert set(FAMILIES) == set(TASKS), "the encoder trains under a degradation of every task (ilo.choices.TASKS)"


def random_operator(family: str, batch: int, resolution: int, g: torch.Generator) -> Operator:
    """A random degradation of `family` for a batch, drawn from `g`."""
    if family not in RANDOM_DEGRADATIONS:
        raise IloError(f"unknown task family '{family}' (one of {', '.join(FAMILIES)})")
    return RANDOM_DEGRADATIONS[family](batch, resolution, g, lambda: float(torch.rand((), generator=g)))


def _generate(gen: GeneratorView, z: torch.Tensor, stats) -> torch.Tensor:
    return gen.synthesize(gen.gaussian_to_w(z, stats) if stats is not None else z)


def train_encoder(
    gen: GeneratorView,
    shape: EncoderShape | None = None,
    settings: TrainingSettings = TrainingSettings(),
    checkpoint: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[LatentEncoder, list[float]]:
    """Train an encoder for `gen`; its losses per step. With `checkpoint`, the state is saved
    there every `settings.checkpoint_every` steps and a run resumes from it (same settings)."""
    shape = shape or EncoderShape.of(gen)
    torch.manual_seed(settings.seed)  # the encoder's initial weights
    encoder = LatentEncoder(shape)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed + 1)
    losses: list[float] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        start, losses = _resume(checkpoint, encoder, optimiser, g, shape, settings)
    stats = gen.latent_stats() if gen.has_mapping else None
    rows = gen.n_latent if gen.has_mapping else 1
    for step in range(start, settings.steps):
        with torch.no_grad():
            z = torch.randn(settings.batch, 1, gen.style_dim, generator=g).expand(-1, rows, -1)
            z = z * (math.sqrt(gen.style_dim) / z.norm(dim=2, keepdim=True))  # where the encoder's rows lie
            x = _generate(gen, z, stats)
            op = random_operator(FAMILIES[step % len(FAMILIES)], settings.batch, gen.resolution, g)
            y = op.measure(x, g)
            view = measurement_view(op, y, gen.resolution)
        z_hat = encoder(view)
        if z_hat.shape[1] != rows:
            z_hat = z_hat[:, :1].expand(-1, rows, -1)
        image_loss = (_generate(gen, z_hat, stats) - x).square().mean()
        latent_loss = (z_hat - z).square().mean()
        loss = image_loss + settings.latent_weight * latent_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(image_loss.detach()))
        if progress is not None:
            progress(step + 1, settings.steps, losses[-1])
        if checkpoint is not None and ((step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps):
            _save(checkpoint, encoder, optimiser, g, step + 1, losses, shape, settings)
    return encoder.eval().requires_grad_(False), losses


def _save(path: Path, encoder, optimiser, g: torch.Generator, step: int, losses: list[float], shape, settings) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(
        {
            "encoder": encoder.state_dict(),
            "optimiser": optimiser.state_dict(),
            "rng": g.get_state(),
            "step": step,
            "losses": torch.tensor(losses),
            "shape": shape.describe(),
            "settings": {k: v for k, v in vars(settings).items()},
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _resume(path: Path, encoder, optimiser, g: torch.Generator, shape: EncoderShape, settings: TrainingSettings):
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file of any kind is one line
        raise IloError(
            f"{path}: cannot resume encoder training from it ({type(e).__name__}); delete it to start again"
        ) from e
    if saved.get("shape") != shape.describe() or saved.get("settings") != dict(vars(settings)):
        raise IloError(f"{path}: was saved by a training run with other settings; delete it to start again")
    encoder.load_state_dict(saved["encoder"])
    optimiser.load_state_dict(saved["optimiser"])
    g.set_state(saved["rng"])
    return int(saved["step"]), [float(v) for v in saved["losses"]]
