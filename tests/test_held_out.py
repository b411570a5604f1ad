"""Held-out measurements (issue #19): the split, the restricted operator, and a solve that
returns the iterate the held-out measurements judge best."""

import pytest
import torch
from test_solver import _truth

from ilo import IloError
from ilo.engine.problems.held_out import HeldOut, holds_out, split_measurements
from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Inpainting, Noise
from ilo.engine.solver.ilo_solver import ILOConfig, solve


def test_inpainting_holds_out_observed_pixels_only_and_keeps_its_head():
    op = Inpainting.centre_box(32, 2)
    y = op.A(torch.rand(2, 3, 32, 32))
    fit, fit_y, judge = split_measurements(op, y, 0.2, [5, 6])
    assert isinstance(fit, Inpainting) and fit.loss_head(32) is not None  # the fused head stays
    held = judge.keep
    assert torch.equal(fit.mask + held, op.mask.expand(2, -1, -1, -1))  # disjoint, and together the observed
    share = float(held.sum() / op.mask.expand(2, -1, -1, -1).sum())
    assert 0.15 < share < 0.25
    assert torch.equal(fit_y, y * fit.mask)
    alone, _, _ = split_measurements(op.select(slice(1, 2)), y[1:], 0.2, [6])
    assert torch.equal(alone.mask, fit.mask[1:])  # an image's split comes from its seed, not its batch


@pytest.mark.parametrize("op", [Downsample(4), DenseGaussianCS(3 * 16 * 16, 100)], ids=["sr", "cs"])
def test_held_out_operator_is_the_restriction(op):
    x = torch.rand(2, 3, 16, 16)
    y = op.A(x) + 0.1
    fit, fit_y, judge = split_measurements(op, y, 0.25, [1, 2])
    assert isinstance(fit, HeldOut) and torch.equal(fit_y, y)
    assert torch.equal(fit.keep + judge.keep, torch.ones_like(fit.keep))
    # the data fits are means over each part's own measurements
    residual = (op.A(x) - y).square()
    for part in (fit, judge):
        keep = part.keep.expand_as(residual).reshape(2, -1)
        manual = (residual.reshape(2, -1) * keep).sum(1) / keep.sum(1)
        assert torch.allclose(part.data_fit(x, y), manual)
    # and A is linear with its adjoint: <A x, v> = <x, A^T v>
    v = torch.randn_like(y)
    assert torch.allclose((fit.A(x) * v).sum(), (x * fit.A_adjoint(v, x)).sum(), rtol=1e-4)


def test_denoising_holds_out_pixels_as_inpainting():
    op = Noise(0.1)
    y = torch.rand(1, 3, 16, 16)
    fit, fit_y, judge = split_measurements(op, y, 0.1, [3])
    assert isinstance(fit, Inpainting) and float(fit.sigma) == pytest.approx(0.1)


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan")])
def test_bad_held_out_shares_are_refused(share):
    with pytest.raises(IloError, match="hold_out"):
        ILOConfig(hold_out=share)


def test_solve_returns_the_iterate_the_held_out_measurements_judge_best(sg2):
    x = _truth(sg2, 2)
    op = Noise(0.1)
    y = op.measure(x, torch.Generator().manual_seed(0))
    config = ILOConfig(end_stage=2, steps=[20, 10], hold_out=0.2, restarts=1, prune_starts_at=[])
    result = solve(y, op, sg2, config, image_seeds=[1, 2])
    _, _, judge = split_measurements(op, y, 0.2, [1, 2])
    assert result.held_out
    assert torch.allclose(judge.data_fit(result.images, y), result.best_loss, rtol=1e-4)
    # the fit never saw the held-out measurements: the same solve on all of them differs
    plain = solve(
        y, op, sg2, ILOConfig(end_stage=2, steps=[20, 10], restarts=1, prune_starts_at=[]), image_seeds=[1, 2]
    )
    assert not plain.held_out and not torch.allclose(plain.images, result.images, atol=1e-3)


def test_super_resolution_is_fitted_on_every_measurement(sg2):
    # a held-out low-res pixel would leave its whole block free (see held_out.holds_out)
    assert not holds_out(Downsample(2)) and not holds_out(Inpainting.centre_box(32, 1) * Downsample(2))
    assert holds_out(Inpainting.centre_box(32, 1)) and holds_out(DenseGaussianCS(12, 4))
    x = _truth(sg2, 1)
    op = Downsample(2)
    short = dict(end_stage=1, steps=[5, 3], restarts=1, prune_starts_at=[])
    with_share = solve(op.A(x), op, sg2, ILOConfig(**short, hold_out=0.2))
    without = solve(op.A(x), op, sg2, ILOConfig(**short))
    assert not with_share.held_out and torch.equal(with_share.images, without.images)


def test_an_image_with_nothing_held_out_is_judged_by_its_fit(sg2):
    # a mask with a few observed pixels can leave nothing to hold out: that image must not be
    # judged by an empty (always zero) held-out loss, which would keep its very first iterate
    x = _truth(sg2, 2)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0] = 1
    mask[1, :, 0, 0] = 1  # image 1 observes one pixel
    op = Inpainting(mask)
    y = op.A(x)
    _, _, judge = split_measurements(op, y, 0.05, [1, 2])
    assert judge.empty(2).tolist() == [False, True]
    config = ILOConfig(end_stage=1, steps=[10, 5], hold_out=0.05, restarts=1, prune_starts_at=[])
    result = solve(y, op, sg2, config, image_seeds=[1, 2])
    assert torch.allclose(result.best_loss[1], op.select(slice(1, 2)).data_fit(result.images[1:], y[1:])[0], rtol=1e-4)
    assert result.best_loss[1] < result.measurement_curves[0][0, 1] * 0.5  # not stuck at the first iterate
