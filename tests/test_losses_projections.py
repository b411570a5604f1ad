"""Loss terms, projections and the learning-rate schedule."""

import math

import pytest
import torch

from ilo import IloError
from ilo.engine.problems.losses import LPIPS, add_measurement_noise, geocross
from ilo.engine.problems.operators import Downsample, Inpainting, Noise
from ilo.engine.solver.projections import lr_ramp, project_l1_ball, project_to_norm


def test_lr_ramp_shape():
    assert lr_ramp(0.0, 0.1) == 0.0
    assert math.isclose(lr_ramp(0.05, 0.1), 0.1) and math.isclose(lr_ramp(0.25, 0.1), 0.1)
    assert math.isclose(lr_ramp(1.0, 0.1), 0.0, abs_tol=1e-12)
    assert math.isclose(lr_ramp(1 - 0.375, 0.1), 0.05, rel_tol=1e-9)  # half-way down the cosine
    values = [lr_ramp(t / 100, 0.1) for t in range(26, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def _l1_by_bisection(v, r):
    if v.abs().sum() <= r:
        return v
    lo, hi = 0.0, v.abs().max().item()
    for _ in range(200):
        mid = (lo + hi) / 2
        if (v.abs() - mid).clamp_min(0).sum() > r:
            lo = mid
        else:
            hi = mid
    return v.sign() * (v.abs() - hi).clamp_min(0)


def test_l1_projection_against_brute_force():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    radius = torch.tensor([0.5, 1.0, 2.0, 100.0, 0.0, 4.0], dtype=torch.float64)
    w = project_l1_ball(v, radius)
    for i in range(6):
        assert w[i].abs().sum() <= radius[i] + 1e-9
        assert torch.allclose(w[i], _l1_by_bisection(v[i], radius[i].item()), atol=1e-9)
        # no random feasible point is closer
        cand = torch.randn(4000, 5, generator=g, dtype=torch.float64)
        cand = (
            cand / cand.abs().sum(1, keepdim=True) * radius[i] * torch.rand(4000, 1, generator=g, dtype=torch.float64)
        )
        assert (cand - v[i]).norm(dim=1).min() >= (w[i] - v[i]).norm() - 1e-9
    assert torch.equal(w[3], v[3])  # already inside


def test_spherical_projection_restores_norms():
    x = torch.randn(2, 4, 8)
    target = x.norm(dim=-1, keepdim=True)
    y = project_to_norm(x * 3 + 0.1, target, 1)
    assert torch.allclose(y.norm(dim=-1, keepdim=True), target, atol=1e-5)
    noise = torch.randn(2, 1, 4, 4)
    n0 = torch.linalg.vector_norm(noise, dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(
        torch.linalg.vector_norm(project_to_norm(noise * 2, n0, 3), dim=(1, 2, 3), keepdim=True), n0, atol=1e-5
    )


def test_geocross_is_zero_for_identical_vectors_and_per_image():
    same = torch.randn(1, 1, 16).expand(2, 6, 16).clone()
    assert torch.allclose(geocross(same), torch.zeros(2), atol=1e-3)
    mixed = torch.cat([same[:1], torch.randn(1, 6, 16)])
    r = geocross(mixed)
    assert r.shape == (2,) and r[1] > 1 and r[0] < 1e-3
    opposite = torch.stack([torch.ones(16), -torch.ones(16)])[None]
    assert torch.allclose(geocross(opposite), torch.tensor([math.pi**2 / 2 * 16 / 8]), rtol=1e-4)


def test_inpainting_data_fit_counts_observed_pixels_only():
    op = Inpainting.centre_box(8, 1)
    x, g = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert torch.allclose(op.data_fit(g, op.A(x)), torch.ones(1))
    sr = Downsample(2)
    assert torch.allclose(sr.data_fit(g, sr.A(x)), torch.ones(1), atol=1e-6)


def test_inpainting_perceptual_target_is_eq3_fill_and_noise_addition():
    op = Inpainting.centre_box(8, 1)
    y, g = op.A(torch.full((1, 3, 8, 8), 0.5)), torch.full((1, 3, 8, 8), -0.5)
    fill = op.perceptual_target(g, y)
    assert torch.equal(fill[op.mask.expand_as(fill) > 0], torch.full((48 * 3,), 0.5))
    assert torch.equal(fill[op.mask.expand_as(fill) == 0], torch.full((16 * 3,), -0.5))
    noisy = add_measurement_noise(torch.zeros(2, 3, 64, 64), Noise(torch.tensor([0.0, 0.1])))
    assert noisy[0].abs().max() == 0 and abs(noisy[1].std().item() - 0.2) < 0.02


def test_lpips_random_backbone_is_a_distance():
    lp = LPIPS("vgg", backbone="random")
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d = lp(a, b)
    assert d.shape == (2,) and (d > 0).all() and torch.allclose(lp(a, a), torch.zeros(2), atol=1e-6)
    a.requires_grad_(True)
    lp(a, b).sum().backward()
    assert a.grad.abs().sum() > 0


def test_lpips_without_backbone_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(IloError, match="vgg16-397923af.pth"):
        LPIPS("vgg")


def test_lpips_loads_a_torchvision_backbone_file(tmp_path):
    import torchvision

    torch.manual_seed(3)
    vgg = torchvision.models.vgg16(weights=None)
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    lp = LPIPS("vgg", backbone=tmp_path / "vgg16.pth")
    assert torch.equal(lp.model.net.slice1[0].weight, vgg.features[0].weight)
    assert torch.equal(getattr(lp.model.net.slice5, "28").weight, vgg.features[28].weight)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_from_cached_target_features_equals_lpips(net):
    lp = LPIPS(net, backbone="random", seed=1)
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert torch.allclose(lp.distance_to_features(a, lp.target_features(b)), lp(a, b), rtol=1e-5, atol=1e-7)
