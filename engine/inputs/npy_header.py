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


def check_npy_holds(data: bytes, name: str) -> None:
    """Refuse an .npy whose header declares more values than the file has bytes for: numpy
    allocates the declared array before it finds the data missing."""
    found = npy_shape(data)
    if found is None:
        return
    shape, dtype = found
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if declared > len(data):
        raise InputError(
            f"{name}: its header declares shape {list(shape)} of {dtype} ({declared:,} bytes) but the file "
            f"holds {len(data):,} bytes: truncated, or not an array"
        )


def check_npz_members(data: bytes, name: str) -> None:
    """`check_npy_holds` for every array of an .npz archive, from each member's first bytes."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    head = member.read(1 << 16)
                found = npy_shape(head)
                if found is None:
                    continue
                shape, dtype = found
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
                if declared > info.file_size:
                    raise InputError(
                        f"{name}: its member {info.filename} declares shape {list(shape)} of {dtype} "
                        f"({declared:,} bytes) but holds {info.file_size:,} bytes: truncated, or not an array"
                    )
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return  # numpy's reader says what is wrong with it
