"""A pickle reader for NVIDIA stylegan2-ada-pytorch network pickles that never runs their code.

NVIDIA's pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)`
with the whole `networks.py` source inside `meta`; their loader executes that source. Here the
call builds an inert `PersistentRecord` instead, tensors come back through torch's own safe
loader, and any other global is refused before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch._utils

from ilo.errors import CheckpointError, UnsafeCheckpointError


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""

    _ilo_global_ref = ("dnnlib.util", "EasyDict")

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` stood for, kept as data: a class name and the
    module's `__dict__` (`_parameters`, `_buffers`, `_modules`, plain attributes)."""

    class_name: str
    state: dict
    module_src: str = field(default="", repr=False)
    version: int = 6

    @classmethod
    def from_meta(cls, meta: dict) -> "PersistentRecord":
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise CheckpointError("persistent object of an unknown kind (expected type 'class')")
        return cls(
            str(meta.get("class_name")), meta.get("state") or {}, meta.get("module_src") or "", meta.get("version", 6)
        )

    def child(self, name: str) -> "PersistentRecord | None":
        return (self.state.get("_modules") or {}).get(name)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def named_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this record and its children, by dotted name."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    out[prefix + name] = value
        for name, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, PersistentRecord):
                out.update(sub.named_tensors(f"{prefix}{name}."))
        return out


def _reconstruct_persistent_obj(meta: dict) -> PersistentRecord:
    return PersistentRecord.from_meta(meta)


_reconstruct_persistent_obj._ilo_global_ref = ("torch_utils.persistence", "_reconstruct_persistent_obj")


def _load_storage_bytes(data: bytes) -> Any:
    # torch's own `_load_from_bytes` unpickles with no restrictions; this one does not. The bytes
    # are a small torch.save archive of their own, so a bomb can hide in them too.
    from ilo.generators.checkpoints.zip_sizes import check_declared_sizes

    check_declared_sizes(data, "a tensor inside the pickle")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


# NVIDIA's layers keep numpy values in their __dict__ (`weight_gain = lr / np.sqrt(fan_in)`,
# `act_gain = np.sqrt(2)`), so every real pickle holds numpy scalars: `scalar(dtype, raw bytes)`
# and `dtype(name, align, copy)` followed by a BUILD of its byte order. Both are rebuilt here
# from a short list of numeric types and their raw bytes; nothing else of numpy is reachable.
_NUMERIC_DTYPES = frozenset("b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8 c8 c16".split())


class _NumericDtype:
    """Stand-in for `numpy.dtype(name, align, copy)`: accepts numeric type names only; the
    BUILD that follows in the pickle sets the byte order (and nothing else)."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False):
        if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
            raise UnsafeCheckpointError(
                f"refusing to load: the pickle asks for a numpy dtype {name!r}, not a plain number type"
            )
        self.name, self.byte_order = name, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
            self.byte_order = state[1]

    def numpy(self) -> np.dtype:
        order = "" if self.byte_order in ("|", "=") else self.byte_order
        return np.dtype(order + self.name)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for `numpy.core.multiarray.scalar(dtype, raw bytes)`: the number, as numpy
    holds it, read from its bytes."""
    if not isinstance(dtype, _NumericDtype) or not hasattr(dtype, "name"):
        raise UnsafeCheckpointError("refusing to load: a numpy scalar of a non-numeric type")
    kind = dtype.numpy()
    if not isinstance(data, bytes) or len(data) != kind.itemsize:
        raise CheckpointError("corrupt numpy scalar in the pickle (wrong number of bytes)")
    return np.frombuffer(data, dtype=kind, count=1)[0]


_NUMPY_GLOBALS = {
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2 writers
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1 writers: every released 2020-21 pickle
    ("numpy", "dtype"): _NumericDtype,
}

# The only globals a network pickle may name. Each maps to the object the reader calls.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    **_NUMPY_GLOBALS,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
}


class _RestrictedUnpickler(pickle._Unpickler):
    """The Python unpickler (whose opcodes can be overridden), restricted twice: `find_class`
    hands out only the allowed globals, and BUILD (which sets attributes on whatever object is
    on the stack) applies only to the two stand-ins that take state, so a file cannot reach into
    the allowed functions and classes themselves and change them for later loads."""

    def load_build(self) -> None:
        target = self.stack[-2]
        if not isinstance(target, (EasyDict, _NumericDtype)):
            raise UnsafeCheckpointError(
                f"refusing to load: the pickle sets the state of a {type(target).__name__}, "
                "which a network pickle never does (nothing from the file was run)"
            )
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is not None:
            return target
        if module.startswith("dnnlib.tflib"):
            raise CheckpointError(
                "this is a TensorFlow-era StyleGAN2 pickle; convert it to the PyTorch format first "
                "(NVIDIA stylegan2-ada-pytorch: legacy.py --source=FILE.pkl --dest=OUT.pkl)"
            )
        raise UnsafeCheckpointError(
            f"refusing to load: the pickle asks for '{module}.{name}', which is not part of a network pickle "
            "(only tensors, numbers and NVIDIA's persistence records are; nothing from the file was run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("refusing to load: the pickle uses persistent ids")


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle `data` allowing only the globals of a network pickle."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


class _ReferencePickler(pickle._Pickler):
    """Pickles stand-in objects under the module/name they stand for (no import needed)."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        ref = getattr(obj, "_ilo_global_ref", None)
        if ref is None or not (isinstance(obj, type) or callable(obj)):
            return super().save_global(obj, name)
        module, qualname = ref
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    # The base class dispatches functions straight to its own save_global; route them to ours.
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = lambda self, obj: self.save_global(obj)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, PersistentRecord):
            meta = {
                "type": "class",
                "version": obj.version,
                "module_src": obj.module_src,
                "class_name": obj.class_name,
                "state": obj.state,
            }
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented


def dump_pickle(obj: Any) -> bytes:
    """Pickle `obj`, writing PersistentRecord / EasyDict as NVIDIA's classes would be written."""
    buf = io.BytesIO()
    _ReferencePickler(buf, protocol=4).dump(obj)
    return buf.getvalue()
