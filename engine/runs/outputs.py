"""Checks on the files and folders the user names for output, made before any work so a long
run does not end in a traceback from its last write."""

from __future__ import annotations

import os
from pathlib import Path

from ilo.atomic import temporary_name_bytes
from ilo.errors import InputError

# What a file name may hold where the file system cannot say (255 bytes on ext4, XFS, APFS, NTFS)
DEFAULT_NAME_MAX = 255
DEFAULT_PATH_MAX = 4096  # Linux's, with its terminating NUL


def check_output_file(path: Path, what: str, example: str = "out.png") -> None:
    """`path` must name a file (not a folder), below a folder or a path where one can be made.
    `example`: a file name of the kind the command writes, for the suggestion."""
    _check_component_lengths(path, what)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name inside it (e.g. {path / example})")
    _check_parents(path, what)
    check_name_length(path, what)


def check_name_length(path: Path, what: str) -> None:
    """`path` can be written: its name, and the longer name of the temporary file it is written
    through, fit the file system's limit. Checked before any work, so a long input name is not
    refused by the file system at the end of a solve."""
    needed = temporary_name_bytes(path)
    limit = _name_max(path.parent)
    if needed > limit:
        over = needed - limit
        raise InputError(
            f"{what} {_short(path.name)} is too long a file name for {path.parent}: writing it needs a name of {needed} "
            f"bytes (with its temporary file's), the file system allows {limit}; shorten it by {over} or more"
        )


def _check_component_lengths(path: Path, what: str) -> None:
    """Every folder of `path` must be a name the file system can hold: asked about a longer one,
    it answers ENAMETOOLONG from the first check (Path.exists), before anything is made."""
    absolute = Path(os.path.abspath(path))
    limit, path_limit = _name_max(absolute.parent), _pathconf(absolute.parent, "PC_PATH_MAX", DEFAULT_PATH_MAX)
    if len(os.fsencode(str(absolute))) >= path_limit:
        raise InputError(
            f"{what} {_short(str(path))}: the path is {len(os.fsencode(str(absolute)))} bytes, the file system "
            f"allows {path_limit - 1}"
        )
    for part in absolute.parts:
        if len(os.fsencode(part)) > limit:
            raise InputError(
                f"{what} {_short(str(path))}: the folder or file name {_short(part)} is {len(os.fsencode(part))} "
                f"bytes, the file system allows {limit}"
            )


def _short(name: str, keep: int = 48) -> str:
    return name if len(name) <= keep else f"{name[:keep]}..."


def _name_max(folder: Path) -> int:
    return _pathconf(folder, "PC_NAME_MAX", DEFAULT_NAME_MAX)


def _pathconf(folder: Path, name: str, default: int) -> int:
    """os.pathconf of the nearest folder that exists (too long a path is not one that exists)."""
    for existing in (folder, *folder.parents):
        try:
            if not existing.is_dir():
                continue
            return os.pathconf(existing, name)
        except (OSError, ValueError, AttributeError):  # not on this platform or file system
            continue
    return default


def check_not_in_the_way(path: Path, what: str) -> None:
    """Nothing that is not a file may sit where `path` will be written: a folder there would
    fail the final rename after the work, and a file where its folder belongs, the write."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; move it away or use another --out")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    f"{what} {path}: {parent} is a file where a folder belongs; move it away or use another --out"
                )
            return


def check_folder_path(path: Path, what: str) -> None:
    """`path` must be a folder, or a path where one can be made (no file in the way)."""
    _check_component_lengths(path, what)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder")
    _check_parents(path, what)


def _check_parents(path: Path, what: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {path}: {parent} is a file, not a folder")
            return


def check_distinct(outputs: list[tuple[Path | None, str]], inputs: list[Path | None]) -> None:
    """No output may be one of the command's inputs, or another of its outputs."""
    read = {file_identity(p): p for p in inputs if p is not None}
    seen: dict[object, str] = {}
    for path, what in outputs:
        if path is None:
            continue
        key = file_identity(path)
        if key in read:
            raise InputError(f"{what} {path} is also an input of this command ({read[key]}); write somewhere else")
        if key in seen:
            raise InputError(f"{what} and {seen[key]} name the same file {path}")
        seen[key] = what


def file_identity(path: Path) -> object:
    """What makes two paths one file: the inode of an existing one (case-insensitive and linked
    file systems included), else the absolute path with letter case folded where the file system
    folds it."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.abspath(path)))
