"""A set no default was tuned on: fresh generated faces, faces pushed out of the generator's
range by transforms the out-of-range set does not use, and the real photograph mirrored and
zoomed. `time_to_quality.py --set untuned` restores it, so a schedule chosen on quality.py's
faces is checked on pictures it never saw.

Seeds 61_000.. (generated) and 62_000.. (transformed) are used by no other benchmark, by the
solver (its seeds come from image names) or by the encoder's training stream (its own
generator, seeded from the training seed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.out_of_range import _warp

GENERATED_SEED = 61_000
TRANSFORMED_SEED = 62_000
GENERATED = 6


def _face(gen, seed: int) -> torch.Tensor:
    z = torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen.synthesize(z) if not gen.has_mapping else gen.synthesize(gen.latents_from_z(z[:, 0]))


def _tilted(gen) -> torch.Tensor:
    return _warp(_face(gen, TRANSFORMED_SEED), angle_deg=-12.0, shift=(-6.0, 4.0))


def _cool_and_dark(gen) -> torch.Tensor:
    """Gamma 1.5 and a blue cast: darker, bluer than any training face."""
    unit = (_face(gen, TRANSFORMED_SEED + 1) + 1) / 2
    cast = torch.tensor([0.8, 0.95, 1.15]).reshape(1, 3, 1, 1)
    return ((unit.clamp(0, 1) ** 1.5) * cast).clamp(0, 1) * 2 - 1


def _stacked(gen) -> torch.Tensor:
    """The top half of one face over the bottom half of another."""
    top, bottom = _face(gen, TRANSFORMED_SEED + 2), _face(gen, TRANSFORMED_SEED + 3)
    half = top.shape[-2] // 2
    return torch.cat([top[..., :half, :], bottom[..., half:, :]], dim=-2)


def _masked_mouth(gen) -> torch.Tensor:
    """A pale band over the mouth and chin, as a face mask would make."""
    image = _face(gen, TRANSFORMED_SEED + 4).clone()
    size = image.shape[-1]
    image[..., round(0.62 * size) : round(0.9 * size), round(0.22 * size) : round(0.78 * size)] = 0.7
    return image


TRANSFORMS = {"tilted": _tilted, "cool-dark": _cool_and_dark, "stacked": _stacked, "masked-mouth": _masked_mouth}


def _photo_mirrored_zoomed(photo: torch.Tensor) -> torch.Tensor:
    """The photograph flipped left-right and zoomed 1.2x about its centre."""
    size = photo.shape[-1]
    big = F.interpolate(photo.flip(-1), scale_factor=1.2, mode="bilinear", align_corners=False, antialias=True)
    top = (big.shape[-1] - size) // 2
    return big[..., top : top + size, top : top + size].clamp(-1, 1)


def untuned_truths(gen, photo: torch.Tensor | None) -> tuple[list[str], torch.Tensor, str]:
    """The untuned set; `photo` ([1, 3, R, R], or None where it is missing) is added changed."""
    names = [f"fresh{i:02d}" for i in range(GENERATED)] + list(TRANSFORMS)
    images = [_face(gen, GENERATED_SEED + i) for i in range(GENERATED)]
    images += [make(gen).clamp(-1, 1) for make in TRANSFORMS.values()]
    note = (
        f"{GENERATED} generated faces (seeds {GENERATED_SEED}..{GENERATED_SEED + GENERATED - 1}) + "
        f"{len(TRANSFORMS)} pushed out of range (seeds {TRANSFORMED_SEED}..: " + ", ".join(TRANSFORMS) + ")"
    )
    if photo is not None:
        images.append(_photo_mirrored_zoomed(photo))
        names.append("astronaut-mirrored")
        note += " + the real photograph mirrored and zoomed 1.2x"
    return names, torch.cat(images), note
