"""Checks on the files and folders the user names for output, made before any work so a long
run does not end in a traceback from its last write."""

from __future__ import annotations

from pathlib import Path

from ilo.errors import InputError


def check_output_file(path: Path, what: str) -> None:
    """`path` must name a file (not a folder), below a folder or a path where one can be made."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name inside it (e.g. {path / 'out.png'})")
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
