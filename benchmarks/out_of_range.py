"""Ground truths the generator cannot make: its own faces pushed out of its range (rotated,
two half-faces joined, colour-shifted, shifted with reflection, occluded) and the real
photograph. `quality.py --set out-of-range` restores them; quality.ood_verdicts holds the targets.

Each transform starts from a face of its own seed (97_000 + i: never the in-range benchmark's,
the tuning set's or the solver's seeds), so the set is reproducible from the embedded model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OOD_SEED = 97_000


def _face(gen, i: int) -> torch.Tensor:
    z = torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(OOD_SEED + i))
    with torch.no_grad():
        return gen.synthesize(z) if not gen.has_mapping else gen.synthesize(gen.latents_from_z(z[:, 0]))


def _warp(image: torch.Tensor, angle_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Rotate about the centre and shift (in pixels), reflecting at the borders so no blank
    corner makes the picture trivially out of range."""
    a = math.radians(angle_deg)
    size = image.shape[-1]
    theta = torch.tensor(
        [[math.cos(a), -math.sin(a), -2 * shift[0] / size], [math.sin(a), math.cos(a), -2 * shift[1] / size]],
        dtype=image.dtype,
    )[None]
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rotated(gen) -> torch.Tensor:
    return _warp(_face(gen, 0), angle_deg=20.0)


def joined(gen) -> torch.Tensor:
    """The left half of one face beside the right half of another."""
    left, right = _face(gen, 1), _face(gen, 2)
    half = left.shape[-1] // 2
    return torch.cat([left[..., :half], right[..., half:]], dim=-1)


def colour_shifted(gen) -> torch.Tensor:
    """Gamma 0.6 and a warm cast: brighter, yellower skin than the training faces have."""
    unit = (_face(gen, 3) + 1) / 2
    cast = torch.tensor([1.1, 1.0, 0.75]).reshape(1, 3, 1, 1)
    return ((unit.clamp(0, 1) ** 0.6) * cast).clamp(0, 1) * 2 - 1


def shifted(gen) -> torch.Tensor:
    return _warp(_face(gen, 4), shift=(12.0, -8.0))


def occluded(gen) -> torch.Tensor:
    """A dark bar across the eyes and a coloured patch on the cheek."""
    image = _face(gen, 5).clone()
    size = image.shape[-1]
    image[..., round(0.34 * size) : round(0.46 * size), round(0.15 * size) : round(0.85 * size)] = -0.9
    patch = torch.tensor([0.2, 0.8, -0.6]).reshape(1, 3, 1, 1)
    image[..., round(0.6 * size) : round(0.75 * size), round(0.62 * size) : round(0.8 * size)] = patch
    return image


TRANSFORMS = {
    "rotated-20": rotated,
    "joined-halves": joined,
    "colour-shifted": colour_shifted,
    "shifted": shifted,
    "occluded": occluded,
}


def out_of_range_truths(gen) -> tuple[list[str], torch.Tensor, str]:
    """The transformed faces (the real photograph is added by quality.ground_truths' caller)."""
    names = list(TRANSFORMS)
    images = torch.cat([make(gen) for make in TRANSFORMS.values()]).clamp(-1, 1)
    note = (
        f"{len(names)} faces pushed out of the generator's range (seeds {OOD_SEED}..{OOD_SEED + 5}: "
        + ", ".join(names)
        + ")"
    )
    return names, images, note
