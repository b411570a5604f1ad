"""Forward operators f: what the camera (or the damage) did to the image.

Each operator is a small object with `A(x)` and, where linear, `A_adjoint(y)`; a known
Gaussian noise level `sigma` rides along (measurements are `A(x) + sigma * n`). Operators
compose with `*` (`Noise(0.1) * Downsample(4)` = downsample, then noise). Parameters that
differ per image (masks, sigmas, circulant signs) carry a batch axis; images are [B, C, H, W]
in the generator's [-1, 1] range, and sigma is in [0, 1] pixel units (the [-1, 1] noise is 2σ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ilo.errors import InputError


class Operator:
    linear = True
    name = "operator"

    def __init__(self, sigma: float | torch.Tensor = 0.0):
        self.sigma = torch.as_tensor(sigma, dtype=torch.float32)

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

    def to(self, device) -> "Operator":
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, key, value.to(device))
        return self


class Composed(Operator):
    """outer ∘ inner; the noise levels add in quadrature (the outer noise is the one applied last)."""

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

    def to(self, device):
        self.outer.to(device), self.inner.to(device)
        self.sigma = self.sigma.to(device)
        return self


class Identity(Operator):
    name = "identity"

    def A(self, x):
        return x

    def A_adjoint(self, y, like):
        return y


class Noise(Identity):
    """Additive Gaussian noise of known std sigma (per image allowed), no other degradation."""

    name = "noise"


class Inpainting(Operator):
    """Keep the pixels where mask = 1; mask [B|1, 1, H, W] with values in {0, 1}."""

    name = "inpaint"

    def __init__(self, mask: torch.Tensor, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise InputError(f"a mask must have shape [B, 1, H, W], got {list(mask.shape)}")
        self.mask = (mask > 0.5).float()

    def A(self, x):
        self._check(x)
        return x * self.mask

    def A_adjoint(self, y, like):
        return y * self.mask

    def _check(self, x):
        if tuple(self.mask.shape[2:]) != tuple(x.shape[2:]):
            raise InputError(f"mask is {self.mask.shape[3]}x{self.mask.shape[2]} but images are {x.shape[3]}x{x.shape[2]}")

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
    def random_pixels(cls, size: int, batch: int, keep: float, generator: torch.Generator | None = None, **kw) -> "Inpainting":
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
        self.kernel = (k / k.sum()).float()
        pad = size - self.factor
        self.pad = (pad // 2, pad - pad // 2)

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


class DenseGaussianCS(Operator):
    """Compressed sensing y = Φ vec(x) with Φ ∈ R^{m×n}, entries N(0, 1/m), shared by the batch."""

    name = "cs"

    def __init__(self, n: int, m: int, seed: int = 0, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if not 0 < m <= n:
            raise InputError(f"compressed sensing needs 0 < m <= n, got m={m}, n={n}")
        g = torch.Generator().manual_seed(seed)
        self.matrix = torch.randn(m, n, generator=g) / math.sqrt(m)
        self.n, self.m = n, m

    def A(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.t()

    def A_adjoint(self, y, like):
        return (y @ self.matrix).reshape(like.shape)


class PartialCirculantCS(Operator):
    """Fast compressed sensing: random ±1 signs, circular convolution with a Gaussian filter
    (FFT), then a random subset of m outputs, scaled by 1/sqrt(m). Per-image parameters."""

    name = "cs-circulant"

    def __init__(self, n: int, m: int, batch: int = 1, seed: int = 0, sigma: float | torch.Tensor = 0.0):
        super().__init__(sigma)
        if not 0 < m <= n:
            raise InputError(f"compressed sensing needs 0 < m <= n, got m={m}, n={n}")
        g = torch.Generator().manual_seed(seed)
        self.signs = torch.randint(0, 2, (batch, n), generator=g).float() * 2 - 1
        self.filter_fft = torch.fft.rfft(torch.randn(batch, n, generator=g))
        self.rows = torch.stack([torch.randperm(n, generator=g)[:m] for _ in range(batch)])
        self.n, self.m = n, m

    def A(self, x):
        v = x.reshape(x.shape[0], -1) * self.signs
        conv = torch.fft.irfft(torch.fft.rfft(v) * self.filter_fft, n=self.n)
        return torch.gather(conv, 1, self.rows.expand(x.shape[0], -1)) / math.sqrt(self.m)

    def A_adjoint(self, y, like):
        full = torch.zeros(y.shape[0], self.n, dtype=y.dtype, device=y.device)
        full.scatter_(1, self.rows.expand(y.shape[0], -1), y / math.sqrt(self.m))
        corr = torch.fft.irfft(torch.fft.rfft(full) * self.filter_fft.conj(), n=self.n)
        return (corr * self.signs).reshape(like.shape)
