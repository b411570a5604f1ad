"""Checks on the files and folders the user names for output, made before any work so a long
run does not end in a traceback from its last write."""

from __future__ import annotations

import os
from pathlib import Path

from ilo.errors import InputError


def check_output_file(path: Path, what: str, example: str = "out.png") -> None:
    """`path` must name a file (not a folder), below a folder or a path where one can be made.
    `example`: a file name of the kind the command writes, for the suggestion."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name inside it (e.g. {path / example})")
    _check_parents(path, what)


def check_folder_path(path: Path, what: str) -> None:
    """`path` must be a folder, or a path where one can be made (no file in the way)."""
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
