"""The identity of the loss heads the operators export: the revision of their maths."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ilo.export.graphs import LossHead

# The heads' maths is the operators' code: its hash is part of each exported head's identity, so
# an edit to any of these modules exports the loss and fused step graphs again instead of serving
# stale ones. A module renamed without this list fails here, at import, rather than going unhashed.
HEAD_SOURCES = ("operator_base.py", "operators.py", "compressed_sensing.py", "resampling.py", "loss_heads.py")
HEADS_REVISION = hashlib.sha256(
    b"".join(Path(__file__).with_name(name).read_bytes() for name in HEAD_SOURCES)
).hexdigest()[:16]


def head(*args, **kwargs) -> LossHead:
    """A `LossHead` stamped with the heads' revision."""
    return LossHead(*args, revision=HEADS_REVISION, **kwargs)
