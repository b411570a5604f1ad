"""Every forward operator: adjointness, per-image parameters, shapes, composition, device
moves, batch selection and the loss head each exports (or its reason for having none)."""

import pytest
import torch
import torch.nn.functional as F

from ilo import InputError
from ilo.engine.problems.operators import (
    Composed,
    DenseGaussianCS,
    Downsample,
    Identity,
    Inpainting,
    Noise,
    Operator,
    PartialCirculantCS,
    every_loss_head,
)

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
        "deepinv-blur": _deepinv_blur(),  # any linear deepinv physics, through its own A (test_deepinv.py)
        "held-out-sr": _held_out(Downsample(2), (BATCH, 1, SIZE // 2, SIZE // 2)),  # issue #19's restriction
        "held-out-cs": _held_out(DenseGaussianCS(N, N // 10, seed=1), (BATCH, N // 10)),
    }


def _held_out(op, keep_shape):
    from ilo.engine.problems.held_out import HeldOut

    return HeldOut(op, (torch.rand(keep_shape, generator=torch.Generator().manual_seed(3)) < 0.8).float())


def _deepinv_blur():
    import deepinv as dinv

    from ilo.engine.problems.deepinv_physics import PhysicsOperator

    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = (taps[:, None] * taps[None, :] / 16)[None, None]  # [1, 1, 3, 3], a small blur
    return PhysicsOperator(dinv.physics.Blur(filter=kernel, padding="circular"), (3, SIZE, SIZE))


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


# operators whose class writes its own adjoint (a composition or restriction may still reach
# the generic one inside, e.g. of Downsample); the rest use Operator.A_adjoint, and comparing
# that with itself would prove nothing
CLOSED_FORM_ADJOINTS = [name for name, op in _operators().items() if type(op).A_adjoint is not Operator.A_adjoint]


def test_only_super_resolution_relies_on_the_autograd_adjoint():
    assert set(_operators()) - set(CLOSED_FORM_ADJOINTS) == {"sr2", "sr4"}


@pytest.mark.parametrize("name", CLOSED_FORM_ADJOINTS)
def test_generic_autograd_adjoint_agrees_with_closed_form(name):
    op = _operators()[name]
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randn(op.A(x).shape)
    assert torch.allclose(Operator.A_adjoint(op, y, x), op.A_adjoint(y, x), atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_super_resolution_adjoint_is_the_transpose_in_float64(factor):
    """The defining identity <Ax, y> = <x, A^T y> for random x and y, all in float64, where it
    holds to rounding (1e-16 per term): a wrong adjoint misses it by O(1) of the products."""
    op = Downsample(factor)
    g = torch.Generator().manual_seed(factor)
    x = torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64)
    op_x = op.A(x)
    assert op_x.dtype == torch.float64 and op_x.shape == (BATCH, 3, 32 // factor, 32 // factor)
    y = torch.randn(op_x.shape, generator=g, dtype=torch.float64)
    adjoint = op.A_adjoint(y, x)
    assert adjoint.dtype == torch.float64 and adjoint.shape == x.shape
    lhs, rhs = (op_x * y).flatten(1).sum(1), (x * adjoint).flatten(1).sum(1)  # per image
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


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
    # Over the random signs every row of the circulant has the filter's norm, so
    # E||Ax||^2 = ||x||^2 · ||filter||^2 / n whatever m is: the 1/sqrt(m) scale. Pooled over 4
    # images x 16 draws the ratio to that lands within 0.97-1.03 (seeds 3, 5, 11); scaled by
    # 1/sqrt(n) instead it would be m/n (0.1, 0.25, 0.5 at these m), left unscaled m (76 and up).
    xs = torch.randn(16, 4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    for m in (N // 10, N // 4, N // 2):
        op = PartialCirculantCS(N, m, batch=4, seed=3)
        filter_energy = torch.fft.irfft(op.filter_fft, n=N).square().sum(1) / N  # ||filter||^2 / n, per image
        ratios = torch.stack([op.A(x).square().sum(1) / x.flatten(1).square().sum(1) / filter_energy for x in xs])
        assert 0.9 < ratios.mean().item() < 1.1, m


@pytest.mark.parametrize("before,after,dim", [(3, 4, 2), (1, 2, 3), (0, 5, 3), (6, 6, 2)])
def test_reflect_pad_matches_torch(before, after, dim):
    from ilo.engine.problems.operators import reflect_pad

    x = torch.randn(2, 3, 9, 11)
    pads = (before, after, 0, 0) if dim == 3 else (0, 0, before, after)
    assert torch.equal(reflect_pad(x, before, after, dim), F.pad(x, pads, mode="reflect"))


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_operator_class_is_in_the_family_tested_here():
    tested = {type(op) for op in _operators().values()}
    assert set(_subclasses(Operator)) <= tested | {Composed} and Composed in tested


@pytest.mark.parametrize("name", list(_operators()))
def test_every_operator_exports_a_loss_head_equal_to_its_data_fit_or_says_why_not(name):
    op = _operators()[name]
    head = op.loss_head(SIZE)
    if head is None:
        assert op.no_head_reason(SIZE), f"{name} has no fused loss head and does not say why"
        return
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    y = op.A(torch.randn(x.shape, generator=torch.Generator().manual_seed(4)))
    extra = op.head_inputs(BATCH)
    for tensor, (input_name, shape) in zip(extra, head.extra, strict=True):  # symbolic axes (CS's m) may differ
        fixed = [i for i in range(len(shape)) if i not in head.symbolic.get(input_name, {})]
        assert [tensor.shape[-len(shape) + i] for i in fixed] == [shape[i] for i in fixed], input_name
    assert torch.allclose(head.loss(x, y, *extra), op.data_fit(x, y), rtol=1e-6, atol=0)


def test_every_head_ilo_export_writes_comes_from_an_operator():
    heads = every_loss_head(64)
    assert set(heads) == {"inpaint", "denoise", "sr2", "sr4", "sr8", "cs_gaussian"}
    assert Downsample(1).loss_head(64).name == "denoise" and Downsample(32).loss_head(64) is None  # 2 px: no head
    assert "at least 4 pixels" in Downsample(32).no_head_reason(64) and Downsample(4).no_head_reason(64) is None
    assert len({h.revision for h in heads.values()}) == 1 and heads["inpaint"].revision  # in the graphs' cache keys
    # the dense CS head is traced on a few rows (m is dynamic): at 1024² an example of n / 10
    # rows would take terabytes, and its float64 check twice that
    for resolution, rows in ((1024, 16), (256, 85), (64, 1229)):
        n = 3 * resolution**2
        assert every_loss_head(resolution)["cs_gaussian"].extra == (("matrix", (rows, n)),)
        assert rows * n * 4 <= 256 * 2**20


@pytest.mark.parametrize("name", list(_operators()))
def test_an_operator_moves_with_to_and_holds_no_stray_tensors(name):
    op = _operators()[name]
    for module in op.modules():
        stray = [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
        assert not stray, f"{name}: tensors {stray} are not buffers, so .to() would leave them behind"
    moved = op.to("meta")
    assert moved is op and all(b.is_meta for b in op.buffers())


@pytest.mark.parametrize("name", list(_operators()))
def test_selecting_images_of_a_batch_gives_their_rows(name):
    op = _operators()[name]
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    whole = op.A(x)
    for i in range(BATCH):
        one = op.select(slice(i, i + 1))
        assert torch.allclose(one.A(x[i : i + 1]), whole[i : i + 1], atol=1e-6), (name, i)
        assert one.noise_std(1).shape == (1, 1, 1, 1)


def test_per_image_noise_levels_are_selected_too():
    op = Noise(torch.tensor([0.0, 0.1, 0.2]))
    assert float(op.select(slice(2, 3)).noise_std(1)) == pytest.approx(0.4)
    assert float(op.select(slice(0, 1)).noise_std(1)) == 0
