"""Atomic file writes: a finished output is never left half-written or overwritten by a partial
one; and an exclusive lock, so that processes sharing a folder make an expensive file once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# tempfile.mkstemp's random part of a name (its _RandomNameSequence draws 8 characters)
_RANDOM_CHARS = 8


def _temporary_affixes(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".partial" + path.suffix


def temporary_name_bytes(path: str | os.PathLike) -> int:
    """The length in bytes of the name of the temporary file `path` is written through: longer
    than `path`'s own, so the longest name a write needs is this one."""
    prefix, suffix = _temporary_affixes(Path(path))
    return len(os.fsencode(prefix + suffix)) + _RANDOM_CHARS


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_affixes(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an advisory lock on `path` (made if missing) for the block; `on_wait()` is called
    first when another process holds it. The kernel drops the lock when its holder exits, so a
    killed holder never leaves the others waiting. Where there is no `fcntl` (Windows), no lock:
    what the lock guards must stay correct without it (atomic renames), only slower."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # read-only: flock needs no write access, so a cache shared by several users works even
    # where the lock file was made by another one with the usual 0644
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor drops the lock
