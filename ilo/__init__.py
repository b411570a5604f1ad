"""ILO Engine: restore images by Intermediate Layer Optimization over a pretrained generator.

The data path reads top to bottom: checkpoint -> staged generator (`ilo.export`) -> graphs ->
engines -> solver (`ilo.engine`). The names re-exported here are the public API.
"""

import os as _os
from typing import TYPE_CHECKING as _TYPE_CHECKING

# In a source checkout `ilo.engine` and `ilo.export` live in the top-level engine/ and export/
# folders (the repository's layout); an installed copy has them under ilo/. Make both work.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (
    _os.path.isfile(_os.path.join(_root, "pyproject.toml"))
    and _os.path.isfile(_os.path.join(_root, "export", "__init__.py"))
    and _root not in __path__
):
    __path__.append(_root)

__version__ = "0.1.0"

from ilo.errors import CheckpointError, IloError, InputError, UnsafeCheckpointError  # noqa: E402


def __getattr__(name: str):
    # The checkpoint functions load torch: import them on first use, so `import ilo` (and the
    # `ilo` command's parser) stays fast.
    if name in ("load_generator", "save_generator"):
        from ilo.export.checkpoints import files

        return getattr(files, name)
    raise AttributeError(f"module 'ilo' has no attribute '{name}'")


if _TYPE_CHECKING:  # for static tools: the names __getattr__ provides
    from ilo.export.checkpoints.files import load_generator, save_generator  # noqa: F401

__all__ = [
    "CheckpointError",
    "IloError",
    "InputError",
    "UnsafeCheckpointError",
    "load_generator",
    "save_generator",
    "__version__",
]
