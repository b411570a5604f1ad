"""The sizes a zip archive (torch.save's format) declares, read from its central directory before
torch reads a record: a few megabytes of deflated zeros can declare gigabytes, and torch
allocates each record at its declared size. torch.save stores records uncompressed, so a
genuine file's records add up to about the file's own size."""

from __future__ import annotations

import io
import zipfile

from ilo.errors import CheckpointError

# Room over the file's own size for what a re-zipped or differently written archive may add;
# a compression bomb declares hundreds of times its size.
SLACK_FACTOR = 2
SLACK_BYTES = 16 << 20


def check_declared_sizes(data: bytes, origin: str, expected: int = 0) -> None:
    """Refuse an archive whose records would unpack to far more than the file holds, or than
    `expected` bytes where the reader knows what it needs (an .npz is deflated legitimately)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return  # torch's reader says what is wrong with it
    limit = max(SLACK_FACTOR * len(data), expected) + SLACK_BYTES
    if declared > limit:
        raise CheckpointError(
            f"{origin}: refusing to load: its records declare {declared / 2**20:,.0f} MiB unpacked from a "
            f"{len(data) / 2**20:,.1f} MiB file, far more than it can hold: a compression bomb (nothing was unpacked)"
        )
