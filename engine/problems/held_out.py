"""Held-out measurements: fit an image to most of its measurements and judge its iterates by the
rest. Out of the generator's range the deepest, freest fit also fits the noise (or, for
inpainting and super-resolution, invents what is not there); the loss on measurements the
optimiser never saw stops falling where that starts, so it picks, per image and without the
ground truth, how far to go. With independent noise per measurement, the held-out
loss is the error on those measurements plus the noise variance, a constant: its minimum is
where the restoration is best there.

`split_measurements(op, y, share, seeds)` -> (the operator to fit, the one to judge by).
"""

from __future__ import annotations

import torch

from ilo.engine.problems.operators import Composed, Downsample, Identity, Inpainting, Noise, Operator, _take


class HeldOut(Operator):
    """`op` restricted to the measurements where `keep` is 1 (`keep` broadcasts against y's
    shape: [B|1, 1, h, w] for image-shaped measurements, [B|1, m] for vectors)."""

    why_no_head = "a restriction of an operator other than inpainting or denoising runs its data fit in torch"
    keep: torch.Tensor  # a buffer
    op: Operator

    def __init__(self, op: Operator, keep: torch.Tensor):
        super().__init__(op.sigma)
        self.op, self.linear, self.name = op, op.linear, f"held-out {op.name}"
        self.register_buffer("keep", keep.float())

    def A(self, x):
        y = self.op.A(x)
        return y * self.keep

    def A_adjoint(self, y, like):
        return self.op.A_adjoint(y * self.keep, like)

    @property
    def observed(self):
        return self.op.observed

    def data_fit(self, image, y):
        """Mean over the kept measurements only, per image."""
        diff = (self.op.A(image) - y).square() * self.keep
        kept = self.keep.expand_as(diff).reshape(diff.shape[0], -1).sum(1)
        return diff.reshape(diff.shape[0], -1).sum(1) / kept.clamp_min(1)

    def select(self, index) -> HeldOut:
        return HeldOut(self.op.select(index), _take(self.keep, index))

    def empty(self, batch: int) -> torch.Tensor:
        """[B] True for images with no measurement kept here (their loss here says nothing)."""
        return self.keep.expand(batch, *self.keep.shape[1:]).reshape(batch, -1).sum(1) == 0


def holds_out(op: Operator) -> bool:
    """Whether held-out selection applies. Not to super-resolution: each low-res pixel is the only
    constraint on its whole block, so holding one out leaves that block free, and intermediate
    layers fill it with anything (benchmarks/results/held_out_selection.md measures the loss).
    A composition holds out where every part would."""
    if isinstance(op, Composed):
        return holds_out(op.outer) and holds_out(op.inner)
    return not isinstance(op, Downsample)


def _draw(shape: tuple[int, ...], share: float, seed: int) -> torch.Tensor:
    """One image's held-out entries (1 = held out), from its own seed (batch independence)."""
    g = torch.Generator().manual_seed(seed * 104_729 + 7)
    return (torch.rand(shape, generator=g) < share).float()


def split_measurements(
    op: Operator, y: torch.Tensor, share: float, seeds: list[int]
) -> tuple[Operator, torch.Tensor, HeldOut]:
    """(fit operator, its measurements, judge): `op` restricted to the measurements left after
    holding out a random `share` of each image's, and `op` restricted to those held out (judged
    against the full y). Image-shaped measurements hold out whole pixels (every channel);
    inpainting draws them among the observed pixels. Inpainting and denoising are fitted as
    inpainting with a smaller mask, so they keep their exported loss head."""
    image_shaped = y.ndim == 4
    per_image = (1, *y.shape[2:]) if image_shaped else tuple(y.shape[1:])
    held = torch.stack([_draw(per_image, share, s) for s in seeds]).to(y.device)
    if type(op) is Inpainting:  # (a subclass may fit differently: it takes the general path)
        held = held * op.mask.expand(y.shape[0], -1, -1, -1)
        fit = Inpainting(op.mask * (1 - held), op.sigma)
        return fit, y * fit.mask, HeldOut(op, held)
    if type(op) in (Identity, Noise):
        fit = Inpainting(1 - held, op.sigma)
        return fit, y * fit.mask, HeldOut(op, held)
    return HeldOut(op, 1 - held), y, HeldOut(op, held)
