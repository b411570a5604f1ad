"""What `ilo sample` holds at once: every image it renders stays in memory until the grid and the
array are written, so a large --n is refused before the first latent is drawn, with the numbers,
rather than killed (or failing an allocation) partway."""

from __future__ import annotations

import math

from ilo.errors import InputError
from ilo.generators.staged import StagedGenerator
from ilo.host_memory import available_host_memory

GiB = 1024**3


def sample_bytes(n: int, gen: StagedGenerator, columns: int | None, grid: bool, array: bool) -> int:
    """Bytes held at the peak: the latents, the float images twice (the batches and their
    concatenation), a float32 copy for the array, the 8-bit images and the grid for the PNG."""
    side = gen.resolution
    image = 3 * side * side
    total = n * 4 * gen.z_dim + 2 * n * 4 * image
    if array:
        total += n * 4 * image
    if grid:
        cols = columns or math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        total += n * image + 3 * (rows * (side + 2) + 2) * (cols * (side + 2) + 2)
    return total


def check_sample_fits(n: int, gen: StagedGenerator, columns: int | None, grid: bool, array: bool, flag: str) -> None:
    need = sample_bytes(n, gen, columns, grid, array)
    available = available_host_memory()
    if available is None:
        return
    free, where = available
    if need > free:
        raise InputError(
            f"{flag} {n:,} samples of {gen.resolution}px hold {need / GiB:,.1f} GiB at once (images, grid and array), "
            f"more than the {free / GiB:.1f} GiB {where}; sample fewer at a time"
        )
