"""DeepInverse physics in, this project's operators out, and back (`pip install -e ".[deepinv]"`).

Conventions differ in one place: deepinv images lie in [0, 1], the generator's in [-1, 1]. For a
linear A the operator itself is the same either way, and measurements convert exactly:
A(2u - 1) = 2 A(u) - A(1), with the noise doubling as the pixel scale does (our sigma is already
in [0, 1] pixel units, as deepinv's is). `generator_measurements` does that conversion.

The physics this project has an operator of are mapped onto it, so they keep the exported loss
heads (and give the same results as the native operator): `Inpainting` with the same mask on
every channel, `Denoising`, dense `CompressedSensing`, and bicubic `Downsampling` with reflect
padding at factor 2. At other factors deepinv samples the filtered image at k·f, where ours (and
PIL / MATLAB) take the block centre k·f + (f - 1)/2, so they are different operators; those and
any other linear physics run as `PhysicsOperator`, in torch, through deepinv's own A and adjoint.
"""

from __future__ import annotations

import torch

from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Inpainting, Noise, Operator
from ilo.errors import InputError

try:
    import deepinv
    import deepinv.physics.functional
    from deepinv.physics import LinearPhysics
except ImportError as e:  # an optional extra: say how to get it rather than fail on a bare name
    raise InputError(f'DeepInverse is not installed ({e}): pip install -e ".[deepinv]"') from e

ImageShape = tuple[int, int, int]


def gaussian_sigma(physics) -> float:
    """The known Gaussian noise std of a physics (0 without noise); any other noise model is
    refused: ILO's objective and its noise handling assume Gaussian measurements."""
    noise = getattr(physics, "noise_model", None)
    if noise is None or isinstance(noise, deepinv.physics.ZeroNoise):
        return 0.0
    if isinstance(noise, deepinv.physics.GaussianNoise):
        sigma = noise.sigma.detach().cpu().reshape(-1)
        if sigma.numel() > 1 and not torch.all(sigma == sigma[0]):
            raise InputError("a GaussianNoise with a different sigma per image is not supported: give one sigma")
        return float(sigma[0])
    raise InputError(f"ILO assumes Gaussian (or no) measurement noise; this physics has {type(noise).__name__}")


def operator_from_physics(physics, image_shape: ImageShape) -> Operator:
    """The operator of a deepinv physics for images of `image_shape` (C, H, W): a native one where
    the two agree (module docstring), else a `PhysicsOperator`."""
    if isinstance(physics, Operator):
        return physics
    if not isinstance(physics, deepinv.physics.Physics):
        raise InputError(f"expected an ilo Operator or a deepinv Physics, got a {type(physics).__name__}")
    sigma = gaussian_sigma(physics)
    kind = type(physics)
    if kind is deepinv.physics.Denoising:
        return Noise(sigma)
    physics_mask: torch.Tensor | None = getattr(physics, "mask", None)  # typed: nn.Module's getattr says Module
    if kind is deepinv.physics.Inpainting and physics_mask is not None:
        mask = physics_mask.detach().cpu().float()
        mask = mask if mask.ndim == 4 else mask[None]
        if mask.shape[1] == 1 or torch.all(mask == mask[:, :1]):
            if tuple(mask.shape[2:]) != tuple(image_shape[1:]):
                raise InputError(
                    f"the physics' mask is {mask.shape[-1]}x{mask.shape[-2]} but the generator makes "
                    f"{image_shape[2]}x{image_shape[1]} images"
                )
            return Inpainting(mask[:, :1], sigma=sigma)
    matrix: torch.Tensor | None = getattr(physics, "_A", None)
    if (
        kind is deepinv.physics.CompressedSensing
        and matrix is not None
        and not physics.channelwise
        and not matrix.is_complex()
    ):
        if matrix.shape[1] != _numel(image_shape):
            raise InputError(
                f"the physics measures vectors of {matrix.shape[1]} values but the generator's "
                f"images have {_numel(image_shape)}"
            )
        return DenseGaussianCS.with_matrix(matrix.detach().cpu().float(), sigma=sigma)
    if kind is deepinv.physics.Downsampling and _is_bicubic_reflect(physics, factor=2):
        return Downsample(2, sigma=sigma)
    return PhysicsOperator(physics, image_shape, sigma)


def _is_bicubic_reflect(physics, factor: int) -> bool:
    """deepinv's own bicubic filter at `factor` (per image or channel allowed), reflect padding."""
    if physics.padding != "reflect" or physics.filter is None or int(physics.factor) != factor:
        return False
    reference = deepinv.physics.functional.bicubic_filter(factor).to(physics.filter)
    if physics.filter.shape[-2:] != reference.shape[-2:]:
        return False
    return bool(torch.allclose(physics.filter, reference.expand_as(physics.filter), atol=1e-7))


def _numel(shape: ImageShape) -> int:
    return shape[0] * shape[1] * shape[2]


class PhysicsOperator(Operator):
    """Any linear deepinv physics as an operator: A and its adjoint are deepinv's, the data fit
    is the plain mean squared error, and it runs in torch (there is no exported head for it).
    Its parameters are shared by the batch: a physics with per-image parameters is refused."""

    why_no_head = "a deepinv physics outside the mapped kinds runs in torch through its own A"

    def __init__(self, physics, image_shape: ImageShape, sigma: float = 0.0):
        super().__init__(sigma)
        if not isinstance(physics, LinearPhysics):
            raise InputError(
                f"ILO needs a linear physics (a deepinv LinearPhysics, with A_adjoint); a "
                f"{type(physics).__name__} is not linear"
            )
        for name, t in list(physics.named_buffers()) + list(physics.named_parameters()):
            if t.ndim >= 4 and t.shape[0] > 1:  # [B, C, H, W]-like: one per image
                raise InputError(
                    f"the physics has per-image parameters ({name}: {list(t.shape)}); hand the images "
                    "over one at a time, or use a physics shared by the batch"
                )
        self.physics = physics  # a submodule: .to(device) moves it with the operator
        self.image_shape = image_shape
        self.name = f"deepinv-{type(physics).__name__}"

    def A(self, x):
        return self.physics.A(x)

    def A_adjoint(self, y, like):
        return self.physics.A_adjoint(y)

    def select(self, index):
        return self


def generator_measurements(y_unit: torch.Tensor, op: Operator, image_shape: ImageShape) -> torch.Tensor:
    """Measurements of [0, 1] images (deepinv's convention) as the solver's, of [-1, 1] images:
    y = 2 y_unit - A(1), exact for a linear A (the noise scales with the pixels)."""
    if not op.linear:
        raise InputError(f"{op.name} is not linear: its measurements cannot be moved to the generator's range")
    ones = torch.ones(1, *image_shape, dtype=y_unit.dtype, device=y_unit.device)
    with torch.no_grad():
        a_ones = op.A(ones)
    if tuple(a_ones.shape[1:]) != tuple(y_unit.shape[1:]):
        raise InputError(
            f"measurements of shape {list(y_unit.shape[1:])} do not match what the physics makes of a "
            f"{image_shape[2]}x{image_shape[1]} image ({list(a_ones.shape[1:])})"
        )
    return 2 * y_unit - a_ones


class OperatorPhysics(LinearPhysics):
    """One of this project's linear operators as a deepinv `LinearPhysics` on images of
    `image_shape`, noise included (a `GaussianNoise` with the operator's sigma)."""

    def __init__(self, op: Operator, image_shape: ImageShape, **kwargs):
        if not op.linear:
            raise InputError(f"{op.name} is not linear: it has no deepinv LinearPhysics")
        sigma: torch.Tensor = torch.as_tensor(op.sigma).reshape(-1)
        if sigma.numel() > 1 and not torch.all(sigma == sigma[0]):
            raise InputError("the operator has a different sigma per image; deepinv's GaussianNoise takes one here")
        noise: deepinv.physics.NoiseModel = (
            deepinv.physics.GaussianNoise(float(sigma[0])) if float(sigma[0]) > 0 else deepinv.physics.ZeroNoise()
        )
        # deepinv annotates noise_model by its default (ZeroNoise); any NoiseModel is accepted
        super().__init__(img_size=image_shape, noise_model=noise, **kwargs)  # pyright: ignore[reportArgumentType]
        self.op = op
        self.image_shape = image_shape

    def A(self, x, **kwargs):
        return self.op.A(x)

    def A_adjoint(self, y, **kwargs):
        like = torch.zeros(y.shape[0], *self.image_shape, dtype=y.dtype, device=y.device)
        return self.op.A_adjoint(y, like)
