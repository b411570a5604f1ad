"""What a solve gives back: a batch's images and what the solver knows of each (`BatchResult`),
and one `Restored` per image for callers that want pictures."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from ilo.engine.inputs.measurements import Prepared


@dataclass
class BatchResult:
    """One solve of a batch: images [B, 3, H, W] in [-1, 1] on the CPU, and per image the
    measurement fit, the round its result came from and its loss curves (per round, the total
    loss at each step; None where nothing was optimised, as for BM3D)."""

    images: torch.Tensor
    measurement_mse: list[float]
    best_round: list[int | None]
    seconds: float  # the whole batch's solve
    loss_curves: list[list[list[float]]] | None = None  # [image][round][step]
    # with config.hold_out: the returned iterate's loss on the held-out measurements (an
    # ensemble's: the mean of its members', each on its own held-out share)
    held_out_loss: list[float] | None = None
    # an ensemble (config.ensemble > 1), per image: each member's best round and (with
    # hold_out) held-out loss; best_round, the l1 radius and the loss curves are member 0's
    member_rounds: list[list[int]] | None = None
    member_held_out_loss: list[list[float]] | None = None
    # the choose method, per image: the candidate it returned, and each candidate's estimated error
    # (measurement units: an MSE of [-1, 1] images on the held-out share, ilo.engine.solver.error_estimates);
    # best_round, held_out_loss and the loss curves stay ilo-auto's, whichever candidate is returned
    chosen: list[str] | None = None
    estimated_error: list[dict[str, float | None]] | None = None  # None: not a finite number
    choice_note: str | None = None  # why there are no estimates, where there are none


@dataclass(frozen=True)
class Restored:
    """One restored image and what the solve knows about it."""

    name: str
    tensor: torch.Tensor  # [3, H, W] float32 in [0, 1]
    measurement_mse: float
    best_round: int | None
    seconds: float  # this image's share of its batch's solve
    batch_size: int
    held_out_loss: float | None = None  # with config.hold_out: what chose this iterate (an ensemble: the members' mean)
    member_rounds: list[int] | None = None  # an ensemble: each member's round (best_round is member 0's)
    member_held_out_loss: list[float] | None = None  # an ensemble with config.hold_out: each member's
    chosen: str | None = None  # the choose method: the candidate returned
    estimated_error: dict[str, float | None] | None = None  # the choose method: each candidate's (see BatchResult)
    choice_note: str | None = None  # the choose method: why nothing was estimated, where nothing was

    def to_numpy(self) -> np.ndarray:
        """[H, W, 3] uint8."""
        return (self.tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def to_pil(self):
        from PIL import Image

        return Image.fromarray(self.to_numpy())

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.to_pil().save(buffer, format="PNG")
        return buffer.getvalue()

    def metrics(self) -> dict:
        optional = {
            "held_out_loss": self.held_out_loss,
            "member_rounds": self.member_rounds,
            "member_held_out_loss": self.member_held_out_loss,
            "chosen": self.chosen,
            "estimated_error": self.estimated_error,
            "choice_note": self.choice_note,
        }
        return {
            "name": self.name,
            "measurement_mse": self.measurement_mse,
            "best_round": self.best_round,
            "seconds": self.seconds,
            "batch_size": self.batch_size,
            **{k: v for k, v in optional.items() if v is not None},
        }


def restored_images(prepared: list[Prepared], result: BatchResult) -> list[Restored]:
    """A solved batch as one `Restored` per image, pixels in [0, 1]."""
    n = len(prepared)

    def of(values: list | None, i: int):
        return None if values is None else values[i]

    return [
        Restored(
            p.stem,
            (result.images[i].clamp(-1, 1) + 1) / 2,
            result.measurement_mse[i],
            result.best_round[i],
            result.seconds / n,
            n,
            of(result.held_out_loss, i),
            of(result.member_rounds, i),
            of(result.member_held_out_loss, i),
            of(result.chosen, i),
            of(result.estimated_error, i),
            result.choice_note,
        )
        for i, p in enumerate(prepared)
    ]
