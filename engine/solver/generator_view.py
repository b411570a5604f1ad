"""What the ILO solver reads off a generator, written down as a Protocol.

The solver runs on a torch `StagedGenerator` or on an `EngineGenerator` (the same stages as
exported graphs on a backend). Both implement every member below and the solver touches no
other, so a generator that lacks one is refused when it is handed to `solve` instead of being
probed for it halfway through a round.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from ilo.engine.problems.operators import Operator
from ilo.generators.latent_stats import LatentStats
from ilo.generators.staged import StageSpec, State

# evaluate(state, wplus, noises, y) -> (per-image loss [B], image): one round's stages, image,
# measurement loss and its gradient in one call
FusedEvaluation = Callable[
    [State, torch.Tensor, Sequence[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


@runtime_checkable
class GeneratorView(Protocol):
    """A chain of stages G = g_n ∘ … ∘ g_0 over w+ latents [B, n_latent, style_dim] and noise
    maps, making images [B, 3, resolution, resolution]."""

    @property
    def resolution(self) -> int: ...

    @property
    def n_latent(self) -> int: ...

    @property
    def style_dim(self) -> int: ...

    @property
    def has_mapping(self) -> bool:
        """Whether w comes from a mapping network (then the solver works in its Gaussianised
        latent space) or the latent is already Gaussian."""
        ...

    @property
    def specs(self) -> Sequence[StageSpec]:
        """One per stage, in order: the latent rows and noise maps it reads."""
        ...

    def stored_noises(self) -> list[torch.Tensor]:
        """The checkpoint's noise maps, each [1, 1, H, W]; round 0 starts from them."""
        ...

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, z_dim] -> w [B, style_dim]; starts plain w+ optimisation."""
        ...

    def latent_stats(self) -> LatentStats:
        """Statistics of the Gaussianised latent space (generators with a mapping only)."""
        ...

    def gaussian_to_w(self, z: torch.Tensor, stats: LatentStats) -> torch.Tensor:
        """Gaussianised latent z -> w, with `stats` this generator's latent_stats() on z's device
        (an engine runs a graph that holds the same numbers)."""
        ...

    def run_stages(
        self,
        state: State,
        wplus: torch.Tensor,
        noises: Sequence[torch.Tensor] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> State:
        """Stages start..stop-1 from `state`, the input state of stage `start`."""
        ...

    def image_from_state(self, state: State) -> torch.Tensor:
        """The image in the output state of the last stage."""
        ...

    def synthesize(self, wplus: torch.Tensor, noises: Sequence[torch.Tensor] | None = None) -> torch.Tensor: ...

    def fused_step(self, start: int, op: Operator, batch: int, optimised_noises: int = 0) -> FusedEvaluation | None:
        """Round `start`'s fused evaluation for `op`, with gradients for the state, the latents
        and the noise maps below index `optimised_noises`; None where there is none (a torch
        model, an operator without a loss head): the solver then runs the stages in autograd."""
        ...


def missing_members(gen: object) -> list[str]:
    """The GeneratorView members `gen` lacks, in the order the Protocol lists them."""
    return [name for name in vars(GeneratorView) if not name.startswith("_") and not hasattr(gen, name)]


def check_view(gen: object) -> None:
    missing = missing_members(gen)
    if missing:
        raise TypeError(f"{type(gen).__name__} is not a generator the solver can run: it lacks {', '.join(missing)}")
