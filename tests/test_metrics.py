"""Per-image metrics: known values and the properties they must have."""

import math

import torch

from ilo.engine.problems.metrics import SSIM_C1, psnr, restoration_metrics, ssim
from ilo.engine.problems.operators import Inpainting


def test_psnr_known_value_and_per_image():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 40.0]), atol=1e-4)


def test_ssim_of_constants_matches_the_formula_and_identity_is_one():
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.6)
    expected = (2 * 0.2 * 0.6 + SSIM_C1) / (0.2**2 + 0.6**2 + SSIM_C1)
    assert math.isclose(ssim(a, b).item(), expected, rel_tol=1e-4)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)


def test_ssim_falls_with_noise_and_is_symmetric():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 32, 32, generator=g)
    small = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim(x, small) > ssim(x, large)
    assert torch.allclose(ssim(x, large), ssim(large, x), atol=1e-6)


def test_inpainting_metrics_split_hole_and_observed():
    op = Inpainting.centre_box(16, 1)
    truth = torch.zeros(1, 3, 16, 16)
    restored = truth.clone()
    restored[:, :, 4:12, 4:12] = 0.2  # error only inside the hole ([-1,1] units: 0.1 in [0,1])
    m = restoration_metrics(restored, truth, op.observed)
    assert m["mse_observed"].item() == 0
    assert math.isclose(m["psnr_hole"].item(), 20.0, abs_tol=1e-3)
    assert m["psnr"].item() > m["psnr_hole"].item()
