"""Errors a user can act on.

Everything the command line reports as a one-line message derives from `IloError`; anything
else is a bug and keeps its traceback.
"""


class IloError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class CheckpointError(IloError):
    """A checkpoint is missing, unreadable, of an unknown format, or has the wrong tensors."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for code the safe loader does not allow; nothing from it was run."""


class InputError(IloError):
    """Latents, noise maps, images or options of the wrong shape or kind."""
