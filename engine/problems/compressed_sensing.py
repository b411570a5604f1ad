"""Compressed-sensing operators: a dense Gaussian matrix shared by the batch (with an exported
loss head), and a fast partial circulant one with per-image parameters (whose FFT stays in torch)."""

from __future__ import annotations

import math
from functools import partial

import torch

from ilo.engine.problems.loss_heads import head
from ilo.engine.problems.operator_base import Operator, take_rows
from ilo.errors import InputError
from ilo.export.graphs import LossHead


# A head's loss is a module-level function (bound with partial), not a closure: an export worker
# process receives its bundle pickled.
def _projected_fit(kind: type[DenseGaussianCS], x: torch.Tensor, y: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return (kind.project(x, matrix) - y).square().mean(dim=1)


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
        return head(
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
            chosen.register_buffer(name, take_rows(getattr(self, name), index))
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
