"""Forward operators f: what the camera (or the damage) did to the image.

An operator is a small `nn.Module` that owns everything known about its degradation: `A(x)`
and, where linear, `A_adjoint(y)`; the per-image data fit; the observed-pixel mask (if any);
how to take some images of its batch; and the loss head it exports for the fused step graphs.
Its tensors are buffers, so `.to(device)` moves it. A known Gaussian noise level `sigma` rides
along (measurements are `A(x) + sigma * n`). Operators compose with `*` (`Noise(0.1) *
Downsample(4)` = downsample, then noise). Parameters that differ per image (masks, sigmas,
circulant signs) carry a batch axis; images are [B, C, H, W] in the generator's [-1, 1] range,
and sigma is in [0, 1] pixel units (the [-1, 1] noise is 2σ).
"""

from __future__ import annotations

import hashlib
import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ilo.errors import InputError
from ilo.export.graphs import LossHead

# The heads' maths is this module's code: its hash is part of each exported head's identity, so
# an edit here exports the loss and fused step graphs again instead of serving stale ones.
HEADS_REVISION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _head(*args, **kwargs) -> LossHead:
    return LossHead(*args, revision=HEADS_REVISION, **kwargs)


# Heads' losses are module-level functions (bound with partial), not closures: an export worker
# process receives its bundle pickled (export/parallel.py).
def _masked_fit(kind: type[Inpainting], x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return kind(mask).data_fit(x, y)


def _projected_fit(kind: type[DenseGaussianCS], x: torch.Tensor, y: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return (kind.project(x, matrix) - y).square().mean(dim=1)


def _take(t: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
    """Rows `index` (a slice, or row numbers) of a per-image parameter; one shared by the batch
    (size 1) stays as it is."""
    return t if t.ndim == 0 or t.shape[0] == 1 else t[index]


class Operator(nn.Module):
    linear = True
    name = "operator"
    sigma: torch.Tensor  # a buffer (declared for static checkers, which cannot see register_buffer)
    # Why operators of this kind have no fused loss head (their loss then runs in torch).
    why_no_head: str | None = None

    def __init__(self, sigma: float | torch.Tensor = 0.0):
        super().__init__()
        self.register_buffer("sigma", torch.as_tensor(sigma, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    @property
    def observed(self) -> torch.Tensor | None:
        """The [B|1, 1, H, W] mask of the pixels the measurement keeps, or None (all of them)."""
        return None

    def data_fit(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error between A(image) and y, per image ([B])."""
        return (self.A(image) - y).square().reshape(y.shape[0], -1).mean(1)

    def perceptual_target(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What LPIPS compares the (degraded) generation with: the measurement itself."""
        return y

    def select(self, index: slice | torch.Tensor) -> "Operator":
        """The operator of images `index` of the batch, a slice or row numbers (repeats allowed:
        round 0 runs each image once per random start); itself where nothing is per image."""
        return self

    def loss_head(self, resolution: int) -> LossHead | None:
        """The exported per-image data fit of this operator at `resolution`, or None
        (`no_head_reason` says why)."""
        return None

    def no_head_reason(self, resolution: int) -> str | None:
        """Why `loss_head(resolution)` is None; None where there is a head."""
        return None if self.loss_head(resolution) is not None else self.why_no_head

    def head_inputs(self, batch: int) -> list[torch.Tensor]:
        """The loss head's inputs after the image and y (a mask, a matrix), for a batch."""
        return []

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Adjoint of a linear A, derived by autograd; `like` is any image of the input shape.
        Concrete operators override it where a closed form is cheaper."""
        if not self.linear:
            raise TypeError(f"{self.name} is not linear")
        x = torch.zeros_like(like, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.A(x), x, grad_outputs=y)
        return grad

    def noise_std(self, batch: int, device=None) -> torch.Tensor:
        """Per-image noise std in the generator's [-1, 1] units, shape [B, 1, 1, 1]."""
        s = self.sigma.to(device).reshape(-1)
        s = s.expand(batch) if s.numel() == 1 else s
        return (2.0 * s).reshape(batch, 1, 1, 1)

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = A(x) + noise, with the noise drawn from `generator` (for reproducible degradation)."""
        y = self.A(x)
        if float(self.sigma.abs().max()) > 0:
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
            y = y + self.noise_std(y.shape[0], y.device).reshape(-1, *([1] * (y.ndim - 1))) * noise
        return y

    def __mul__(self, inner: "Operator") -> "Operator":
        return Composed(self, inner)

    def _sigma_of(self, index: slice | torch.Tensor) -> torch.Tensor:
        return _take(self.sigma, index)


class Composed(Operator):
    """outer ∘ inner; the noise levels add in quadrature (the outer noise is the one applied last)."""

    why_no_head = "a composition has no single exported head; its data fit runs in torch"

    def __init__(self, outer: Operator, inner: Operator):
        super().__init__(torch.sqrt(outer.sigma**2 + inner.sigma**2))
        self.outer, self.inner = outer, inner
        self.linear = outer.linear and inner.linear
        self.name = f"{outer.name}*{inner.name}"

    def A(self, x):
        return self.outer.A(self.inner.A(x))

    def A_adjoint(self, y, like):
        mid = self.inner.A(like)
        return self.inner.A_adjoint(self.outer.A_adjoint(y, mid), like)

    def select(self, index):
        return Composed(self.outer.select(index), self.inner.select(index))


class Identity(Operator):
    name = "identity"

    def A(self, x):
        return x

    def A_adjoint(self, y, like):
        return y

    def select(self, index):
        return type(self)(self._sigma_of(index))

    def loss_head(self, resolution):
        return denoising_head(resolution)


class Noise(Identity):
    """Additive Gaussian noise of known std sigma (per image allowed), no other degradation."""

    name = "noise"


class Inpainting(Operator):
    """Keep the pixels where mask = 1; mask [B|1, 1, H, W] with values in {0, 1}."""

    name = "inpaint"
    mask: torch.Tensor  # a buffer

    def __init__(self, mask: torch.Tensor, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise InputError(f"a mask must have shape [B, 1, H, W], got {list(mask.shape)}")
        self.register_buffer("mask", (mask > 0.5).float())

    def A(self, x):
        self._check(x)
        return x * self.mask

    def A_adjoint(self, y, like):
        return y * self.mask

    @property
    def observed(self):
        return self.mask

    def data_fit(self, image, y):
        """The mean runs over observed pixels only, so the loss scale does not depend on how
        much is missing."""
        diff = (self.A(image) - y).square().reshape(y.shape[0], -1)
        kept = self.mask.expand(y.shape[0], 1, *y.shape[2:]).reshape(y.shape[0], -1).sum(1) * y.shape[1]
        return diff.sum(1) / kept.clamp_min(1)

    def perceptual_target(self, image, y):
        """Eq. 3: the observed pixels pasted onto the generation, M⊙y + (1−M)⊙G."""
        return self.mask * y + (1 - self.mask) * image

    def select(self, index):
        return Inpainting(_take(self.mask, index), self._sigma_of(index))

    def loss_head(self, resolution):
        image = (3, resolution, resolution)  # a subclass's own data fit, not the base class's
        return _head("inpaint", image, (("mask", (1, resolution, resolution)),), partial(_masked_fit, type(self)))

    def head_inputs(self, batch):
        return [self.mask.expand(batch, -1, -1, -1).contiguous()]

    def _check(self, x):
        if tuple(self.mask.shape[2:]) != tuple(x.shape[2:]):
            raise InputError(
                f"mask is {self.mask.shape[3]}x{self.mask.shape[2]} but images are {x.shape[3]}x{x.shape[2]}"
            )

    @classmethod
    def box(cls, size: int, batch: int, top: int, left: int, height: int, width: int, **kw) -> "Inpainting":
        mask = torch.ones(batch, 1, size, size)
        mask[:, :, top : top + height, left : left + width] = 0
        return cls(mask, **kw)

    @classmethod
    def centre_box(cls, size: int, batch: int = 1, fraction: float = 0.5, **kw) -> "Inpainting":
        side = round(size * fraction)
        start = (size - side) // 2
        return cls.box(size, batch, start, start, side, side, **kw)

    @classmethod
    def random_pixels(
        cls, size: int, batch: int, keep: float, generator: torch.Generator | None = None, **kw
    ) -> "Inpainting":
        if not 0 < keep <= 1:
            raise InputError(f"the keep rate must be in (0, 1], got {keep}")
        return cls((torch.rand(batch, 1, size, size, generator=generator) < keep).float(), **kw)


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def reflect_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """`F.pad(mode="reflect")` along one axis, as slices, flips and a concat: the exported loss
    graphs then hold Slice nodes where torch's own reflect padding would export as GatherND."""
    n = x.shape[dim]
    head = x.narrow(dim, 1, before).flip(dim)
    tail = x.narrow(dim, n - 1 - after, after).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


class Downsample(Operator):
    """Anti-aliased bicubic downsampling by an integer factor (the PULSE / ILO operator): Keys
    a = -0.5 kernel stretched by the factor, reflect padding, separable strided convolution.
    Factor 1 is exactly the identity."""

    name = "sr"

    def __init__(self, factor: int, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if int(factor) != factor or factor < 1:
            raise InputError(f"the super-resolution factor must be a positive integer, got {factor}")
        self.factor = int(factor)
        size = 4 * self.factor
        taps = (torch.arange(size, dtype=torch.float64) - size // 2 + 0.5) / self.factor
        k = keys_cubic(taps)
        self.register_buffer("kernel", (k / k.sum()).float())
        pad = size - self.factor
        self.pad = (pad // 2, pad - pad // 2)

    def select(self, index):
        return Downsample(self.factor, self._sigma_of(index))

    def loss_head(self, resolution):
        if self.factor == 1:
            return denoising_head(resolution)
        side = resolution // self.factor
        if resolution % self.factor or side < 4:  # the graph's reflect padding needs 4 pixels
            return None
        return _head(f"sr{self.factor}", (3, side, side), (), type(self)(self.factor).data_fit)

    def no_head_reason(self, resolution):
        if self.loss_head(resolution) is not None:
            return None
        return f"factor {self.factor} must divide the {resolution}px side and leave at least 4 pixels"

    def A(self, x):
        if self.factor == 1:
            return x
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise InputError(f"image size {x.shape[3]}x{x.shape[2]} is not divisible by the factor {self.factor}")
        if max(self.pad) >= min(x.shape[2:]):
            raise InputError(f"factor {self.factor} is too large for {x.shape[3]}x{x.shape[2]} images")
        c = x.shape[1]
        k = self.kernel.to(x)
        x = reflect_pad(x, *self.pad, dim=2)
        x = F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(self.factor, 1), groups=c)
        x = reflect_pad(x, *self.pad, dim=3)
        return F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, self.factor), groups=c)


# The dense CS head's traced example (see DenseGaussianCS.head_at) holds at most this many
# values (64 MiB in float32), and at least this many rows: 16 rows at 1024², 85 at 256², and the
# usual n / 10 (1229) at 64².
HEAD_EXAMPLE_VALUES = 2**24
HEAD_EXAMPLE_MIN_ROWS = 16


class DenseGaussianCS(Operator):
    """Compressed sensing y = Φ vec(x) with Φ ∈ R^{m×n}, entries N(0, 1/m), shared by the batch."""

    name = "cs"

    def __init__(self, n: int, m: int, seed: int = 0, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if not 0 < m <= n:
            raise InputError(f"compressed sensing needs 0 < m <= n, got m={m}, n={n}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("matrix", torch.randn(m, n, generator=g).div_(math.sqrt(m)))  # in place: one copy, not two
        self.n, self.m = n, m

    @classmethod
    def with_matrix(cls, matrix: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> DenseGaussianCS:
        """The operator of a given m x n matrix (one from elsewhere, e.g. a deepinv physics)."""
        if matrix.ndim != 2:
            raise InputError(f"a compressed-sensing matrix is m x n, got shape {list(matrix.shape)}")
        op = cls.__new__(cls)
        Operator.__init__(op, sigma)
        op.register_buffer("matrix", matrix.float())
        op.m, op.n = matrix.shape
        return op

    @staticmethod
    def project(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ matrix.t()

    def A(self, x):
        return self.project(x, self.matrix)

    def A_adjoint(self, y, like):
        return (y @ self.matrix).reshape(like.shape)

    def select(self, index):
        return DenseGaussianCS.with_matrix(self.matrix, self._sigma_of(index))  # shared by the batch: not copied

    def loss_head(self, resolution):
        return self.head_at(resolution)

    @classmethod
    def head_at(cls, resolution: int) -> LossHead:
        """The matrix is an input shared by the batch and m a dynamic axis: one graph serves
        every ratio. The example traced and checked is small: at n / 10 rows a 256² model's
        example matrix alone is 15.5 GB (31 GB for its float64 check), and m's size changes
        nothing in the graph."""
        n = 3 * resolution * resolution
        m = min(max(1, round(0.1 * n)), max(HEAD_EXAMPLE_MIN_ROWS, HEAD_EXAMPLE_VALUES // n))
        return _head(
            "cs_gaussian",
            (m,),
            (("matrix", (m, n)),),
            partial(_projected_fit, cls),
            shared=("matrix",),
            symbolic={"y": {1: "m"}, "matrix": {0: "m"}},
        )

    def head_inputs(self, batch):
        return [self.matrix]


class PartialCirculantCS(Operator):
    """Fast compressed sensing: random ±1 signs, circular convolution with a Gaussian filter
    (FFT), then a random subset of m outputs, scaled by 1/sqrt(m). Per-image parameters."""

    name = "cs-circulant"
    why_no_head = "its FFT has no TensorRT equivalent, so its data fit stays in torch"

    def __init__(self, n: int, m: int, batch: int = 1, seed: int = 0, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if not 0 < m <= n:
            raise InputError(f"compressed sensing needs 0 < m <= n, got m={m}, n={n}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("signs", torch.randint(0, 2, (batch, n), generator=g).float() * 2 - 1)
        self.register_buffer("filter_fft", torch.fft.rfft(torch.randn(batch, n, generator=g)))
        self.register_buffer("rows", torch.stack([torch.randperm(n, generator=g)[:m] for _ in range(batch)]))
        self.n, self.m = n, m

    def select(self, index):
        chosen = PartialCirculantCS.__new__(PartialCirculantCS)
        Operator.__init__(chosen, self._sigma_of(index))
        for name in ("signs", "filter_fft", "rows"):
            chosen.register_buffer(name, _take(getattr(self, name), index))
        chosen.n, chosen.m = self.n, self.m
        return chosen

    def A(self, x):
        v = x.reshape(x.shape[0], -1) * self.signs
        conv = torch.fft.irfft(torch.fft.rfft(v) * self.filter_fft, n=self.n)
        return torch.gather(conv, 1, self.rows.expand(x.shape[0], -1)) / math.sqrt(self.m)

    def A_adjoint(self, y, like):
        full = torch.zeros(y.shape[0], self.n, dtype=y.dtype, device=y.device)
        full.scatter_(1, self.rows.expand(y.shape[0], -1), y / math.sqrt(self.m))
        corr = torch.fft.irfft(torch.fft.rfft(full) * self.filter_fft.conj(), n=self.n)
        return (corr * self.signs).reshape(like.shape)


def denoising_head(resolution: int) -> LossHead:
    image = (3, resolution, resolution)
    return _head("denoise", image, (), Identity().data_fit)


def every_loss_head(resolution: int, sr_factors=(2, 4, 8)) -> dict[str, LossHead]:
    """The loss head of every operator kind that has one, at `resolution` (what `ilo export`
    writes ahead of a run): inpainting, denoising, super-resolution per factor, dense CS."""
    whole = torch.ones(1, 1, resolution, resolution)
    kinds = [Inpainting(whole), Identity(), *(Downsample(f) for f in sr_factors)]
    heads = [op.loss_head(resolution) for op in kinds] + [DenseGaussianCS.head_at(resolution)]
    return {h.name: h for h in heads if h is not None}
