"""Round 0's candidates: per image, the variables one random start ended with, and how the
intermediate rounds' starting point is chosen among them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A later start must beat the one chosen by this relative margin: near-ties (common in denoising,
# where the noise floor dominates the loss) would otherwise flip on float rounding that differs
# with the batch size, and an image's result would depend on its batch.
PICK_MARGIN = 1e-4


@dataclass
class Candidate:
    """Per image, round 0's final latents and noise maps from one start, and how well the image
    they make fits the measurements ([images] each)."""

    z: torch.Tensor
    noises: list[torch.Tensor]
    final_loss: torch.Tensor

    def slot(self, rows: slice) -> Candidate:
        """The candidate of some of the rows."""
        return Candidate(z=self.z[rows], noises=[n[rows] for n in self.noises], final_loss=self.final_loss[rows])


def pick(candidate: Candidate, chosen: Candidate) -> Candidate:
    """Per image, keep the start whose final iterate fits the measurements better: `chosen`
    unless the later `candidate` wins by PICK_MARGIN."""
    better = candidate.final_loss < chosen.final_loss * (1 - PICK_MARGIN)

    def mix(new, old):
        return torch.where(better.reshape(-1, *[1] * (new.ndim - 1)), new, old)

    return Candidate(
        z=mix(candidate.z, chosen.z),
        noises=[mix(a, b) for a, b in zip(candidate.noises, chosen.noises)],
        final_loss=torch.minimum(candidate.final_loss, chosen.final_loss),
    )


def best_start(candidates: list[Candidate]) -> Candidate:
    """Per image, the candidate `pick` keeps, taking them in start order (ties stay with the
    earlier start)."""
    chosen = candidates[0]
    for candidate in candidates[1:]:
        chosen = pick(candidate, chosen)
    return chosen
