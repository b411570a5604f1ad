"""Every forward operator: adjointness, per-image parameters, shapes, composition."""

import pytest
import torch
import torch.nn.functional as F

from ilo import InputError
from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Identity, Inpainting, Noise, PartialCirculantCS

SIZE, BATCH = 16, 3
N = 3 * SIZE * SIZE


def _operators():
    g = torch.Generator().manual_seed(0)
    return {
        "identity": Identity(),
        "noise": Noise(0.1),
        "inpaint-box": Inpainting.centre_box(SIZE, BATCH),
        "inpaint-random": Inpainting.random_pixels(SIZE, BATCH, 0.3, generator=g),
        "sr2": Downsample(2),
        "sr4": Downsample(4),
        "cs-dense": DenseGaussianCS(N, N // 10, seed=1),
        "cs-circulant": PartialCirculantCS(N, N // 10, batch=BATCH, seed=2),
        "sr2-then-noise": Noise(0.05) * Downsample(2),
        "inpaint-then-sr": Downsample(2) * Inpainting.centre_box(SIZE, BATCH),
    }


@pytest.mark.parametrize("name", list(_operators()))
def test_adjointness(name):
    op = _operators()[name]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    op_x = op.A(x.float()).double()
    y = torch.randn(op_x.shape, generator=g, dtype=torch.float64)
    lhs = (op_x * y).sum()
    rhs = (x * op.A_adjoint(y.float(), x.float()).double()).sum()
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs).item())


@pytest.mark.parametrize("name", list(_operators()))
def test_generic_autograd_adjoint_agrees_with_closed_form(name):
    from ilo.engine.problems.operators import Operator

    op = _operators()[name]
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randn(op.A(x).shape)
    assert torch.allclose(Operator.A_adjoint(op, y, x), op.A_adjoint(y, x), atol=1e-5)


def test_downsample_factor_one_is_identity_and_constants_survive():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(Downsample(1).A(x), x)
    y = Downsample(4).A(torch.full((1, 3, 32, 32), 0.3))
    assert y.shape == (1, 3, 8, 8) and torch.allclose(y, torch.full_like(y, 0.3), atol=1e-6)


def test_downsample_refuses_bad_sizes():
    with pytest.raises(InputError, match="not divisible"):
        Downsample(3).A(torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputError, match="too large"):
        Downsample(16).A(torch.zeros(1, 3, 16, 16))


def test_masks_are_per_image():
    op = Inpainting.random_pixels(SIZE, BATCH, 0.5, generator=torch.Generator().manual_seed(1))
    x = torch.ones(BATCH, 3, SIZE, SIZE)
    y = op.A(x)
    assert not torch.equal(y[0], y[1])
    assert torch.equal(y[:, 0:1], op.mask)


def test_mask_size_mismatch_is_refused():
    with pytest.raises(InputError, match="mask is 8x8 but images are 16x16"):
        Inpainting(torch.ones(1, 1, 8, 8)).A(torch.zeros(1, 3, 16, 16))


def test_noise_levels_per_image_and_reproducible():
    op = Noise(torch.tensor([0.0, 0.1, 0.2]))
    x = torch.zeros(3, 3, 32, 32)
    y = op.measure(x, torch.Generator().manual_seed(0))
    assert y[0].abs().max() == 0
    assert abs(y[1].std().item() - 0.2) < 0.02 and abs(y[2].std().item() - 0.4) < 0.04
    assert torch.equal(y, op.measure(x, torch.Generator().manual_seed(0)))


def test_composed_noise_adds_in_quadrature():
    op = Noise(0.3) * Noise(0.4) * Downsample(2)
    assert abs(op.sigma.item() - 0.5) < 1e-6 and op.linear


def test_circulant_cs_per_image_and_scaled():
    op = PartialCirculantCS(N, N // 4, batch=2, seed=3)
    x = torch.randn(2, 3, SIZE, SIZE)
    assert op.A(x).shape == (2, N // 4)
    assert not torch.equal(op.signs[0], op.signs[1])
    # E||Ax||^2 ≈ ||x||^2 · ||filter||^2 / n: the scale is independent of m.
    ratio = op.A(x).square().sum() / x.square().sum()
    assert 0.2 < ratio.item() < 5


@pytest.mark.parametrize("before,after,dim", [(3, 4, 2), (1, 2, 3), (0, 5, 3), (6, 6, 2)])
def test_reflect_pad_matches_torch(before, after, dim):
    from ilo.engine.problems.operators import reflect_pad

    x = torch.randn(2, 3, 9, 11)
    pads = (before, after, 0, 0) if dim == 3 else (0, 0, before, after)
    assert torch.equal(reflect_pad(x, before, after, dim), F.pad(x, pads, mode="reflect"))
