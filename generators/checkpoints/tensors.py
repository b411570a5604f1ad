"""Moving named tensors between a checkpoint's layout and a generator's, with clear errors.

Each format is described once, as a table of (generator name, checkpoint name, checkpoint
shape) rows; loading and saving both read the same table, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from ilo.errors import CheckpointError


@dataclass(frozen=True)
class TensorRow:
    ours: str  # name in the generator's state_dict
    theirs: str  # name in the checkpoint
    shape: tuple[int, ...]  # shape in the checkpoint (ours is a reshape of it)


class TensorSource:
    """Read-only view of a checkpoint's tensors that names the file in every error."""

    def __init__(self, tensors: Mapping[str, object], origin: str):
        self.tensors = tensors
        self.origin = origin

    def has(self, key: str) -> bool:
        return key in self.tensors

    def get(self, key: str, ndim: int | None = None) -> torch.Tensor:
        if key not in self.tensors:
            raise CheckpointError(f"{self.origin}: missing tensor '{key}'")
        value = self.tensors[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{self.origin}: '{key}' is a {type(value).__name__}, not a tensor")
        if ndim is not None and value.ndim != ndim:
            raise CheckpointError(f"{self.origin}: '{key}' has shape {list(value.shape)}, expected {ndim} dimensions")
        return value

    def count(self, pattern: str, start: int = 0) -> int:
        """How many consecutive keys pattern.format(i) exist from i = start."""
        n = 0
        while pattern.format(start + n) in self.tensors:
            n += 1
        return n


def load_rows(
    module: nn.Module, source: TensorSource, rows: Iterable[TensorRow], set_elsewhere: Iterable[str] = ()
) -> None:
    """Copy every row's tensor into `module`; every persistent entry must be covered."""
    targets = module.state_dict()
    covered = set()
    for row in rows:
        value = source.get(row.theirs)
        if tuple(value.shape) != row.shape:
            raise CheckpointError(
                f"{source.origin}: '{row.theirs}' has shape {list(value.shape)}, expected {list(row.shape)}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{source.origin}: '{row.theirs}' contains NaN or infinite values")
        if row.ours.endswith("running_var") and bool((value < 0).any()):
            # a variance cannot be negative: BatchNorm would take the square root of one and every
            # image would be NaN, which an optimiser downstream reports as a diverged learning rate
            raise CheckpointError(
                f"{source.origin}: '{row.theirs}' holds negative variances (min {float(value.min()):.3g}); "
                "the checkpoint is damaged"
            )
        target = targets[row.ours]
        with torch.no_grad():
            target.copy_(value.detach().reshape(target.shape).to(target.dtype))
        covered.add(row.ours)
    missing = sorted(set(targets) - covered - set(set_elsewhere))
    if missing:  # a bug in a format table, not in the user's file
        raise AssertionError(f"format table leaves {missing[:5]} unset")


def save_rows(module: nn.Module, rows: Iterable[TensorRow]) -> dict[str, torch.Tensor]:
    """The checkpoint-layout tensors of `module`, keyed by checkpoint name."""
    ours = module.state_dict()
    return {row.theirs: ours[row.ours].detach().clone().reshape(row.shape) for row in rows}
