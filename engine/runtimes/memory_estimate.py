"""What one step of a solve will hold, estimated from the generator's shapes before anything is
exported or run: so that a model too big for this machine is refused in one line at once, not
after minutes of export.

The measured row cost (memory_budget.py) stays what sizes the batches; this estimate only decides
whether to start at all. Both the part that grows with the rows and the fixed part of a measured
step follow what the stages write (the sum of their output states, `state_bytes`). The factors
below are fitted to the probe's measurements of StyleGAN2 config-f at 256² and 1024²
(benchmarks/results/real_resolutions.md, which a test holds the estimate to) and rounded down, so
the estimate errs low: it refuses only what clearly cannot fit, and the probe decides the rest.
"""

from __future__ import annotations

import torch

from ilo.engine.runtimes.memory_budget import GiB, MemoryBudget, MemoryBudgetError, RowCost, available_memory
from ilo.errors import IloError
from ilo.generators.staged import StagedGenerator

PER_ROW_PER_STATE_BYTE = 10
FIXED_PER_STATE_BYTE = 4


def estimated_row_cost(gen: StagedGenerator) -> RowCost:
    """A step's memory at one row and per further row, from the shapes alone."""
    states = gen.state_bytes()
    return RowCost(FIXED_PER_STATE_BYTE * states, PER_ROW_PER_STATE_BYTE * states, {})


# What a solve holds for all of an image's rows at once, whatever its micro-batches: each ensemble
# member's measurements, per-image operator parameters and restored image (three images of
# float32, at the least), and each random start's latents (w+: n_latent x style_dim float32).
HELD_IMAGES_PER_MEMBER = 3


def held_bytes(gen: StagedGenerator, members: int, restarts: int) -> int:
    """A lower bound on what one image's ensemble members and random starts hold at once."""
    image = 4 * 3 * gen.resolution * gen.resolution
    start = 4 * gen.n_latent * gen.style_dim
    return members * (HELD_IMAGES_PER_MEMBER * image + restarts * start)


def check_step_fits(gen: StagedGenerator, budget: MemoryBudget, device: torch.device) -> RowCost:
    """The estimated cost of one image's step, or a MemoryBudgetError where the shapes already
    say it cannot fit in `budget` on `device`."""
    cost = estimated_row_cost(gen)
    where = f"{gen.family} {gen.resolution}² (estimated from its shapes, before exporting anything)"
    budget.rows(cost, device, where, estimated=True)
    return cost


def check_held_fits(gen: StagedGenerator, members: int, restarts: int, device: torch.device) -> None:
    """Every ensemble member and random start of an image is held to the end (a budget's
    micro-batches do not shrink that): --ensemble or --restarts of 10^8 is refused here, before
    it allocates or runs for days."""
    if members * restarts <= 1:
        return
    try:
        free, what = available_memory(device)
    except IloError:  # the platform cannot tell: nothing to check against
        return
    held = held_bytes(gen, members, restarts)
    if held > free:
        flags = " with ".join(f"--{name} {n}" for name, n in (("ensemble", members), ("restarts", restarts)) if n > 1)
        raise MemoryBudgetError(
            f"{flags} holds at least {held / GiB:,.1f} GiB per image (its members' measurements and "
            f"results, its starts' latents), more than the {free / GiB:.1f} GiB {what}"
        )
