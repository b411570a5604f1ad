"""ILO Engine: restore images by Intermediate Layer Optimization over a pretrained generator.

The data path reads top to bottom: checkpoint -> staged generator (`ilo.generators`) -> graphs
(`ilo.export`) -> engines (`ilo.engine.runtimes`) -> solver (`ilo.engine.solver`) -> outputs
(`ilo.engine.api`). ARCHITECTURE.md draws the layers. The names re-exported here are the public API.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ilo.errors import CheckpointError, IloError, InputError, UnsafeCheckpointError
from ilo.version import __version__


def __getattr__(name: str):
    # These load torch: import them on first use, so `import ilo` (and the
    # `ilo` command's parser) stays fast.
    if name in ("load_generator", "save_generator"):
        from ilo.generators.checkpoints import files

        return getattr(files, name)
    if name in ("Restorer", "Restored", "RestorerSettings"):
        from ilo.engine.api import restorer

        return getattr(restorer, name)
    if name == "ILOReconstructor":  # needs the deepinv extra
        from ilo.engine.api import deepinv_model

        return deepinv_model.ILOReconstructor
    raise AttributeError(f"module 'ilo' has no attribute '{name}'")


if _TYPE_CHECKING:  # for static tools: the names __getattr__ provides
    from ilo.engine.api.deepinv_model import ILOReconstructor  # noqa: F401
    from ilo.engine.api.restorer import Restored, Restorer, RestorerSettings  # noqa: F401
    from ilo.generators.checkpoints.files import load_generator, save_generator  # noqa: F401

__all__ = [
    "CheckpointError",
    "ILOReconstructor",
    "Restored",
    "Restorer",
    "RestorerSettings",
    "IloError",
    "InputError",
    "UnsafeCheckpointError",
    "load_generator",
    "save_generator",
    "__version__",
]
