"""The forward-operator contract every operator keeps, and composition.

An operator is a small `nn.Module` that owns everything known about its degradation: `A(x)`
and, where linear, `A_adjoint(y)`; the per-image data fit; the observed-pixel mask (if any);
how to take some images of its batch; and the loss head it exports for the fused step graphs.
Generic behaviour (the data fit, the autograd adjoint, noise, composition) lives here once; the
concrete operators (`operators`, `compressed_sensing`) say only what is specific to them.
"""

from __future__ import annotations

import torch
from torch import nn

from ilo.export.graphs import LossHead


def take_rows(t: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
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
        return take_rows(self.sigma, index)


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
