"""Where ilo keeps its embedded files and its derived artefacts (latent statistics, exported graphs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$ILO_CACHE_DIR, else $XDG_CACHE_HOME/ilo, else ~/.cache/ilo."""
    explicit = os.environ.get("ILO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ilo"


def assets_dir() -> Path:
    """The files shipped inside the `ilo` package (the embedded default model)."""
    return Path(__file__).resolve().parent / "assets"
