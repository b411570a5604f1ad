"""DeepInverse both ways: its physics in the solver and the Restorer (same results where the
operators agree), our operators as its LinearPhysics (its own adjointness test), and ILO as its
reconstructor inside `deepinv.test`."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

import ilo
from ilo.engine.problems.deepinv_physics import (
    OperatorPhysics,
    PhysicsOperator,
    generator_measurements,
    operator_from_physics,
)
from ilo.engine.problems.operators import (
    DenseGaussianCS,
    Downsample,
    Inpainting,
    Noise,
    PartialCirculantCS,
)
from ilo.engine.solver.ilo_solver import ILOConfig, solve
from ilo.errors import InputError

SHAPE = (3, 64, 64)  # the embedded DCGAN's images
FEW_STEPS = ILOConfig(steps=[4, 2, 2], restarts=2, prune_starts_at=[])


def box_mask() -> torch.Tensor:
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 0
    return mask


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def mapped_physics():
    """(deepinv physics, the native operator it must become)."""
    cs = dinv.physics.CompressedSensing(m=300, img_size=SHAPE, rng=torch.Generator().manual_seed(3))
    return [
        (dinv.physics.Inpainting(SHAPE, mask=box_mask().expand(1, 3, -1, -1).clone()), Inpainting),
        (dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(0.1)), Noise),
        (cs, DenseGaussianCS),
        (dinv.physics.Downsampling(img_size=SHAPE, filter="bicubic", factor=2, padding="reflect"), Downsample),
    ]


@pytest.mark.parametrize("index", range(4), ids=["inpaint", "denoise", "cs", "sr2"])
def test_agreeing_physics_become_native_operators_with_the_same_A(index):
    physics, kind = mapped_physics()[index]
    op = operator_from_physics(physics, SHAPE)
    assert type(op) is kind and op.loss_head(64) is not None  # keeps the exported loss head
    x = images()
    torch.testing.assert_close(op.A(x), physics.A(x), atol=1e-6, rtol=0)
    assert float(op.sigma) == pytest.approx(0.1 if kind is Noise else 0.0)


def test_differing_downsampling_runs_as_deepinv_physics():
    # deepinv samples the filtered image at k*f, ours at the block centre: at factor 4 they differ
    physics = dinv.physics.Downsampling(img_size=SHAPE, filter="bicubic", factor=4, padding="reflect")
    x = images()
    assert (physics.A(x) - Downsample(4).A(x)).abs().max() > 1e-2
    op = operator_from_physics(physics, SHAPE)
    assert isinstance(op, PhysicsOperator) and op.loss_head(64) is None
    torch.testing.assert_close(op.A(x), physics.A(x))
    y = physics.A(x)
    torch.testing.assert_close(op.A_adjoint(y, x), physics.A_adjoint(y))


@pytest.mark.parametrize("index", [0, 2], ids=["inpaint", "cs"])
def test_solver_takes_a_physics_in_place_of_the_operator(dcgan, index):
    physics, _ = mapped_physics()[index]
    native = operator_from_physics(physics, SHAPE)
    x = images() * 2 - 1
    y = native.A(x)
    by_op = solve(y, native, dcgan, FEW_STEPS, image_seeds=[5, 6])
    by_physics = solve(y, physics, dcgan, FEW_STEPS, image_seeds=[5, 6])
    assert torch.equal(by_op.images, by_physics.images)


def test_the_torch_path_of_a_wrapped_physics_matches_the_native_operator(dcgan):
    """The same operator (bicubic x2, reflect) as deepinv's A in torch and as ours: the solves
    agree to float rounding (the two convolve in a different order)."""
    physics = dinv.physics.Downsampling(img_size=SHAPE, filter="bicubic", factor=2, padding="reflect")
    wrapped = PhysicsOperator(physics, SHAPE)
    x = images() * 2 - 1
    y = Downsample(2).A(x)
    native = solve(y, Downsample(2), dcgan, FEW_STEPS, image_seeds=[5, 6])
    through = solve(y, wrapped, dcgan, FEW_STEPS, image_seeds=[5, 6])
    assert (native.images - through.images).abs().max() < 1e-3
    assert not torch.equal(native.images, solve(y, Downsample(2), dcgan, FEW_STEPS, image_seeds=[7, 8]).images)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Inpainting(box_mask().expand(2, -1, -1, -1)),
        lambda: Downsample(2, sigma=0.05),
        lambda: Downsample(4),
        lambda: Noise(0.1),
        lambda: DenseGaussianCS(3 * 64 * 64, 500, seed=1),
        lambda: PartialCirculantCS(3 * 64 * 64, 500, batch=2, seed=1),
        lambda: Noise(0.1) * Downsample(4),
    ],
    ids=["inpaint", "sr2-noisy", "sr4", "denoise", "cs-dense", "cs-circulant", "composed"],
)
def test_our_operators_pass_deepinvs_adjointness_test(make):
    physics = OperatorPhysics(make(), SHAPE)
    u = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # deepinv draws its probes from the global generator
    # float32 sums: up to 9.7e-6 measured over 100 seeds (dense CS); a wrong adjoint gives O(1)
    assert float(physics.adjointness_test(u, num_samples=2)) < 1e-4  # 2: the per-image operators hold 2
    assert isinstance(physics.noise_model, dinv.physics.GaussianNoise) == (float(make().sigma.max()) > 0)


def test_measurements_of_unit_images_convert_to_the_generators_range():
    for physics, _ in mapped_physics():
        op = operator_from_physics(physics, SHAPE)
        u = images()
        y_unit = physics.A(u)
        # exact in exact arithmetic; float32 rounding of CS's 12288-term sums measured 3.3e-5
        torch.testing.assert_close(generator_measurements(y_unit, op, SHAPE), op.A(2 * u - 1), atol=1e-4, rtol=0)


def test_refused_physics_say_why():
    poisson = dinv.physics.Denoising(noise_model=dinv.physics.PoissonNoise(gain=0.1))
    with pytest.raises(InputError, match="Gaussian"):
        operator_from_physics(poisson, SHAPE)
    small = dinv.physics.Inpainting((3, 32, 32), mask=0.5)
    with pytest.raises(InputError, match="32x32"):
        operator_from_physics(small, SHAPE)
    with pytest.raises(InputError, match="not linear"):
        operator_from_physics(dinv.physics.Physics(A=lambda x: x.square()), SHAPE)
    with pytest.raises(InputError, match="per-image"):
        PhysicsOperator(dinv.physics.Blur(filter=torch.rand(2, 1, 5, 5)), SHAPE)
    op = operator_from_physics(dinv.physics.Downsampling(img_size=SHAPE, filter="bicubic", factor=2), SHAPE)
    with pytest.raises(InputError, match="do not match"):
        generator_measurements(torch.zeros(1, 3, 16, 16), op, SHAPE)


@pytest.fixture(scope="module")
def reconstructor(dcgan):
    return ilo.ILOReconstructor(task="inpaint", model=dcgan, backend="torch", config=FEW_STEPS)


def test_reconstructor_is_batch_independent_and_in_unit_range(reconstructor):
    physics = mapped_physics()[0][0]
    u = images(3, seed=1)
    y = physics(u)
    both = reconstructor(y, physics)
    assert both.shape == u.shape and 0 <= float(both.min()) and float(both.max()) <= 1
    alone = reconstructor(y[1:2], physics)
    # an image is seeded by its measurements, not its place in the batch; the rest is the CPU's
    # batch-size-dependent rounding (BATCH_ROUNDING in test_solver.py)
    assert (alone - both[1:2]).abs().max() < 5e-3
    assert (both[0] - both[1]).abs().max() > 0.05


def test_reconstructor_in_deepinvs_own_test_loop(reconstructor):
    physics = mapped_physics()[0][0]
    u = images(2, seed=2)
    loader = torch.utils.data.DataLoader(list(u), batch_size=2)  # a dataset of x alone: deepinv measures them
    metrics = dinv.test(
        reconstructor,
        loader,
        physics,
        metrics=[dinv.metric.PSNR()],
        online_measurements=True,
        show_progress_bar=False,
        verbose=False,
        compare_no_learning=False,
    )
    # the same images solved outside the loop: deepinv's numbers are ours
    torch.manual_seed(0)  # deepinv's Inpainting adds no noise, so y does not depend on the generator state
    ours = dinv.metric.PSNR()(reconstructor(physics(u), physics), u).mean()
    assert metrics["PSNR"] == pytest.approx(float(ours), abs=1e-3)


def test_restorer_on_the_engine_takes_a_native_mapped_physics(dcgan):
    """The default backend: the mapped physics runs the exported fused step graphs."""
    physics = mapped_physics()[0][0]
    engine = ilo.Restorer(model=dcgan, task="inpaint", centre_box=0.5, config=FEW_STEPS)
    assert engine.backend_name != "torch"
    torch_side = ilo.Restorer(model=dcgan, task="inpaint", centre_box=0.5, backend="torch", config=FEW_STEPS)
    u = images(2, seed=3)
    y = physics(u)
    a, b = engine.reconstruct(y, physics), torch_side.reconstruct(y, physics)
    assert (a - b).abs().max() < 5e-3  # the engine's fused graphs against torch eager (test_engine.py's bound)
    with pytest.raises(InputError, match="BM3D"):
        ilo.Restorer(model=dcgan, task="denoise", method="bm3d").reconstruct(y, physics)


def _classical_priors():
    """benchmarks/classical_priors.py (the quality benchmark's TV and wavelet baselines)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "classical_priors.py"
    spec = importlib.util.spec_from_file_location("classical_priors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("prior, denoise_lambda", [("tv", 0.03), ("wavelet", 0.3)])
def test_the_deepinv_prior_baselines_restore_through_our_operators(prior, denoise_lambda):
    """A piecewise-smooth picture: both priors must take the noise down and fill a hole with
    something closer than the grey they start from."""
    priors = _classical_priors()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.4).float()
    truth = torch.stack([0.6 * disc - 0.3 + 0.2 * xx, 0.4 * yy, -0.5 * disc + 0.2]).clamp(-1, 1)[None]
    noisy_op = Noise(0.1)
    y = noisy_op.measure(truth, torch.Generator().manual_seed(0))
    denoised, _ = priors.restore(prior, noisy_op, y, denoise_lambda, 64)  # ~ sigma's threshold for the wavelets
    psnr = dinv.metric.PSNR()
    before, after = psnr((y.clamp(-1, 1) + 1) / 2, (truth + 1) / 2), psnr((denoised + 1) / 2, (truth + 1) / 2)
    assert float(after) > float(before) + 1.5  # measured: +1.9 dB (wavelet), more for TV
    slit = torch.ones(1, 1, 64, 64)
    slit[..., 28:36, 20:44] = 0  # across the disc's edge
    holed, hole = Inpainting(slit), 1 - slit
    filled, _ = priors.restore(prior, holed, holed.A(truth), 0.01, 64)
    grey = holed.A(truth) + hole * (truth * slit).sum((2, 3), keepdim=True) / slit.sum()  # where FISTA starts
    # measured: TV 0.005, wavelet 0.29, against 62.5 for the start
    assert float(((filled - truth).square() * hole).sum()) < 0.1 * float(((grey - truth).square() * hole).sum())
