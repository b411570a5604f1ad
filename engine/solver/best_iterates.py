"""Each image's best iterate so far, over every round and step: what a solve returns."""

from __future__ import annotations

import torch


class BestIterates:
    """Per image: the best score seen (the held-out loss, or the data fit), the image that made
    it and its round. Rows of a batch are slots x images, slot-major (row = slot * images + image)."""

    def __init__(self, images: int, resolution: int, device: torch.device):
        self.images = images
        self.loss = torch.full((images,), float("inf"), device=device)
        self.image = torch.zeros(images, 3, resolution, resolution, device=device)
        self.round = torch.zeros(images, dtype=torch.long, device=device)

    def track(self, measured: torch.Tensor, image: torch.Tensor, k: int, live: torch.Tensor | None = None) -> None:
        """Keep each image's best iterate so far (over its slots: the first of equals).
        `measured` is in the round's layout, `image` has the batch's rows: `live` of the layout
        (None: all of it). A row that left the batch never improves (its value was seen)."""
        value, slot = measured.reshape(-1, self.images).min(0)
        improved = value < self.loss
        if image.shape[0] != self.images or live is not None:
            rows = slot * self.images + torch.arange(self.images, device=slot.device)
            if live is not None:
                rows = torch.searchsorted(live, rows).clamp_max(live.numel() - 1)
            image = image[rows]
        self.loss = torch.where(improved, value, self.loss)
        self.image[improved] = image.detach()[improved]
        self.round[improved] = k

    def absorb(self, other: BestIterates) -> None:
        """Take another batch's best iterates of the same images where they are better (strictly)."""
        better = other.loss < self.loss
        self.loss = torch.where(better, other.loss, self.loss)
        self.image[better] = other.image[better]
        self.round[better] = other.round[better]
