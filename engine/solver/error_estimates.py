"""Each candidate restoration's error, estimated from the measurements alone, on one share of them
that the estimates share: the held-out share ilo-auto already keeps from its fit (its seeds, its
size). Every candidate is judged on the same entries against the same noisy values, so the noise's
own energy there, the same for all, drops out of any comparison between them: what is left to
rank them is far steadier than either estimate alone (on 10% of a 64px image the noise's energy
varies by about its own size; the paired difference does not).

Two ways to be judged there, both unbiased for the error on those entries plus the noise variance:
- **refitted without them** (`refit_estimate`): a method that can take any linear operator is
  fitted on the rest and predicts the held-out entries. ILO is this case: ilo-auto never fits its
  held-out share.
- **seen, with Stein's correction** (`denoiser_estimate`): a black-box denoiser (BM3D, or a prior's
  proximal step) sees every pixel, so its residual on the held-out ones is lowered by how much it
  follows their noise; Monte-Carlo SURE adds that back: 2 sigma^2 div/n, the divergence per entry
  taken by one random probe over the whole image (a denoiser treats every pixel alike, and the
  whole image's probe is steadier than one on the held-out tenth).

Estimates are in measurement units, the noise variance taken off: an estimated mean squared
error of [-1, 1] images on the held-out entries (for compressed sensing, of their measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ilo.engine.problems.held_out import HeldOut

# The probe's step, as a share of the noise std. A hundredth (the usual choice for smooth
# denoisers) flips a few of BM3D's thresholds and block matches, and each flip divided by so small
# a step swings the estimate; a tenth averages over them, for a small bias (benchmarks/choice.py
# measures both, from probe to probe and against the truth).
PROBE_STEP = 0.1
PROBE_SEED = 1


def refit_estimate(judge: HeldOut, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] for images that never saw the judged entries: their loss there less the noise variance."""
    with torch.no_grad():
        loss = judge.data_fit(images, y)
    return loss - _noise_variance(judge, y.shape[0], loss.device)


def denoiser_estimate(
    judge: HeldOut,
    denoise: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    denoised: torch.Tensor,
    seeds: Sequence[int],
    probe_step: float = PROBE_STEP,
    probe_seed: int = PROBE_SEED,
) -> torch.Tensor:
    """[B] Monte-Carlo SURE on the judged pixels of `denoised = denoise(y)` (noisy images y
    [B, 3, H, W] in [-1, 1]): the residual there, less the noise variance, plus twice the variance
    times the divergence per entry, from one probe over the image, drawn from the image's own
    seed (`seeds`, one per image) so that its estimate does not depend on its batch."""
    batch = y.shape[0]
    std = judge.noise_std(batch, y.device)  # [B, 1, 1, 1], [-1, 1] units
    probe = torch.cat([_probe(y.shape[1:], seed, probe_seed) for seed in seeds]).to(y.device)
    step = probe_step * std.clamp_min(1e-8)
    with torch.no_grad():
        moved = denoise(y + step * probe)
        # per entry, normalised by the probe's own energy: exact for any multiple of the identity
        divergence = (probe * (moved - denoised) / step).flatten(1).sum(1) / probe.square().flatten(1).sum(1)
        variance = std.reshape(-1) ** 2
        return judge.data_fit(denoised, y) - variance + 2 * variance * divergence


def _probe(shape: torch.Size, image_seed: int, probe_seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(image_seed * 1_000_003 + probe_seed)
    return torch.randn((1, *shape), generator=generator)


def _noise_variance(judge: HeldOut, batch: int, device) -> torch.Tensor:
    return judge.noise_std(batch, device).reshape(-1) ** 2
