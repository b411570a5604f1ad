"""Which batch sizes `ilo bench` may time within the memory budget a solve honours: a benchmark
runs each batch whole (timing it in micro-batches would time something else), so a batch whose
step cannot fit is refused before any export or timing, with the numbers, rather than killed by
the kernel after minutes with every result lost."""

from __future__ import annotations

import torch

from ilo.engine.runtimes.memory_budget import ONE_ROW_SHARE, GiB, MemoryBudget, MemoryBudgetError
from ilo.engine.runtimes.memory_estimate import estimated_row_cost
from ilo.generators.staged import StagedGenerator


def check_batches_fit(
    gen: StagedGenerator, batches: tuple[int, ...], budget: MemoryBudget, device: torch.device
) -> None:
    """Refuse every batch whose estimated step is over the budget (one row per image: the
    benchmark's solve has one start). Estimates err low, so what is refused cannot fit."""
    if budget.off:
        return
    if budget.default:  # restore's default share keeps its micro-batches polite; a benchmark's batch is whole
        budget = MemoryBudget(share=ONE_ROW_SHARE[device.type])
    cost = estimated_row_cost(gen)
    where = f"{gen.family} {gen.resolution}² (estimated from its shapes, before exporting anything)"
    rows = budget.rows(cost, device, where, estimated=True)  # not even one image: its own message
    over = [b for b in batches if b > rows]
    if over:
        limit, how = budget.resolve(device)
        raise MemoryBudgetError(
            f"--batch {','.join(map(str, over))} cannot fit: a step of {over[0]} image(s) needs an estimated "
            f"{_size(cost.peak(over[0]))} ({_size(cost.fixed)} fixed + {_size(cost.per_row)} per image) "
            f"on {where}, the memory budget is {_size(limit)} ({how}); batches up to {rows} fit. "
            "Give smaller --batch sizes, or raise --memory-budget"
        )


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"
