"""What an `.npy` file says it holds, read from its header alone: a file whose header promises
more numbers than the reader wants is refused before numpy allocates them (a few bytes can
declare a shape of 10^11)."""

from __future__ import annotations

import numpy as np
from numpy.lib import format as npy_format

from ilo.errors import InputError


def npy_shape(data: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype an .npy's header declares; None if `data` is not an .npy (an .npz
    archive, say: its own reader says what is wrong with it)."""
    import io

    stream = io.BytesIO(data[: 1 << 16])  # the header is at most 64 KiB (format 2 allows 4 GiB; we do not)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = npy_format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError):
        return None
    return tuple(int(s) for s in shape), dtype


def check_npy_count(data: bytes, name: str, expected: int, what: str) -> None:
    """Refuse an .npy whose header declares another number of values than `expected`, before
    anything is allocated for them."""
    found = npy_shape(data)
    if found is None:
        return
    shape, _ = found
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count != expected:
        raise InputError(
            f"{name}: its header declares shape {list(shape)} ({count} values) but {what} are {expected} values"
        )
