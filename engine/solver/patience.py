"""Plateau switching: when an image's round has stopped paying."""

from __future__ import annotations

import torch


class Patience:
    """An image has stopped when its best held-out loss has not improved by a share `tol` for
    `window` steps. The best so far, not the latest value: a step that went up (round 0 starts at
    a high learning rate) does not stop an image that is still improving."""

    def __init__(self, window: int, tol: float):
        self.window, self.tol = window, tol
        self.best: torch.Tensor | None = None
        self.stale: torch.Tensor | None = None

    def update(self, score: torch.Tensor) -> torch.Tensor:
        """Take a step's scores; which images have stopped."""
        if self.best is None or self.stale is None:
            self.best, self.stale = score.clone(), torch.zeros_like(score, dtype=torch.long)
        else:
            improved = score < self.best - self.tol * self.best.abs()
            self.best = torch.where(improved, score, self.best)
            self.stale = torch.where(improved, torch.zeros_like(self.stale), self.stale + 1)
        return self.stale >= self.window

    def take(self, rows: torch.Tensor) -> None:
        if self.best is not None and self.stale is not None:
            self.best, self.stale = self.best[rows], self.stale[rows]
