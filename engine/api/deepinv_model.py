"""ILO as a DeepInverse reconstructor: `x_hat = model(y, physics)`, so it drops into deepinv's
evaluation loops (`deepinv.test`, its Trainer) beside its other models.

    >>> import deepinv as dinv, ilo
    >>> model = ilo.ILOReconstructor(task="inpaint")          # the embedded 64px face DCGAN
    >>> physics = dinv.physics.Inpainting((3, 64, 64), mask=0.3)
    >>> x_hat = model(physics(x), physics)                    # x, x_hat: [B, 3, 64, 64] in [0, 1]
"""

from __future__ import annotations

import torch

from ilo.engine.api.restorer import Restorer
from ilo.engine.problems.deepinv_physics import deepinv  # where it is missing: an InputError naming the extra

Reconstructor = deepinv.models.Reconstructor


class ILOReconstructor(Reconstructor):
    """A deepinv `Reconstructor` over an `ilo.Restorer` (given, or built from `restorer_kwargs`:
    model, method, backend, config, seed, memory_budget, ...). Images are named, and so seeded,
    by their measurements: the same y gives the same x_hat in any batch."""

    def __init__(self, restorer: Restorer | None = None, **restorer_kwargs):
        super().__init__()
        if restorer is not None and restorer_kwargs:
            raise TypeError(f"give a Restorer or its settings ({', '.join(restorer_kwargs)}), not both")
        # the learned start only where asked for: a deepinv physics (a blur, say) is not a task the
        # encoder was trained on, and its guess would start the search somewhere arbitrary
        restorer_kwargs.setdefault("encoder", "none")
        self.restorer = restorer if restorer is not None else Restorer(**restorer_kwargs)

    def forward(self, y: torch.Tensor, physics, **kwargs) -> torch.Tensor:
        # deepinv's loops pass extras (update_parameters, x_gt, ...): ILO uses none of them
        return self.restorer.reconstruct(y, physics)
