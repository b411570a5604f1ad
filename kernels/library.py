"""Finding, checking and calling the kernel library through its C ABI (ilo_kernels.h).

ctypes, not a torch extension: the library never links torch, so one build serves every torch
version, and pointers cross as integers (torch's data_ptr) with torch's current stream.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ilo.errors import IloError

ABI_VERSION = 1
LIBRARY_ENV = "ILO_KERNELS_LIB"
LIBRARY_DIR = Path(__file__).resolve().parent / "lib"
CUDA_LIBRARY = "libilo_kernels.so"
EMULATED_LIBRARY = "libilo_kernels_emulated.so"
BUILD_HINT = "build it with: cmake -S . -B build && cmake --build build -j  (from the repository root)"

DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class KernelLibraryError(IloError):
    """The kernel library is missing, unloadable, from another ABI, or refused a call."""


class Epilogue(ctypes.Structure):
    _fields_ = [
        ("scale", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("noise", ctypes.c_void_p),
        ("noise_batch_stride", ctypes.c_int64),
        ("bias", ctypes.c_void_p),
        ("alpha", ctypes.c_float),
        ("gain", ctypes.c_float),
        ("clamp", ctypes.c_float),
        ("reduce_ref", ctypes.c_void_p),
        ("reduce_out", ctypes.c_void_p),
    ]


def _int_fields(*names: str) -> list:
    return [(n, ctypes.c_int32) for n in names]


class ConvArgs(ctypes.Structure):
    _fields_ = [
        *_int_fields("dtype", "n", "ci", "hi", "wi", "co", "ho", "wo", "k", "stride", "pad", "transposed", "math"),
        ("x", ctypes.c_void_p),
        ("in_scale", ctypes.c_void_p),
        ("weight", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("ep", Epilogue),
    ]


class UpfirdnArgs(ctypes.Structure):
    _fields_ = [
        *_int_fields("dtype", "n", "c", "hi", "wi", "ho", "wo", "up", "down", "pad0", "pad1", "fh", "fw", "adjoint"),
        ("filter", ctypes.c_void_p),
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("ep", Epilogue),
    ]


class BiasActArgs(ctypes.Structure):
    _fields_ = [*_int_fields("dtype", "n", "c", "hw"), ("x", ctypes.c_void_p), ("y", ctypes.c_void_p), ("ep", Epilogue)]


class ActGradArgs(ctypes.Structure):
    _fields_ = [
        *_int_fields("dtype", "n", "c", "hw"),
        ("dy", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("alpha", ctypes.c_float),
        ("gain", ctypes.c_float),
        ("clamp", ctypes.c_float),
        ("scale", ctypes.c_void_p),
        ("dx", ctypes.c_void_p),
        ("ref", ctypes.c_void_p),
        ("row_sum", ctypes.c_void_p),
        ("channel_sum", ctypes.c_void_p),
    ]


STRUCTS = {
    "IloEpilogue": Epilogue,
    "IloConvArgs": ConvArgs,
    "IloUpfirdnArgs": UpfirdnArgs,
    "IloBiasActArgs": BiasActArgs,
    "IloActGradArgs": ActGradArgs,
}


@dataclass
class KernelLibrary:
    """A loaded library. `emulated` builds run the kernels on CPU threads and take CPU tensors
    (for checking the kernels without a GPU); CUDA builds take CUDA tensors."""

    path: Path
    handle: ctypes.CDLL
    build_info: str

    @property
    def emulated(self) -> bool:
        return self.build_info.startswith("host-emulation")

    @property
    def device_type(self) -> str:
        return "cpu" if self.emulated else "cuda"

    def supports(self, dtype: torch.dtype) -> bool:
        if dtype not in DTYPES:
            return False
        return dtype == torch.float32 or not self.emulated or "fp16" in self.build_info

    def call(self, name: str, args: ctypes.Structure, device: torch.device) -> None:
        stream = None
        if device.type == "cuda":
            stream = ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)
        code = getattr(self.handle, name)(ctypes.byref(args), stream)
        if code != 0:
            raise KernelLibraryError(f"{name} failed ({code}): {self.handle.ilo_last_error().decode()}")


def library_candidates() -> list[Path]:
    """Where the library is looked for, in order: $ILO_KERNELS_LIB, then kernels/lib/ (CUDA
    build first; the emulated build only where asked for by path)."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return [Path(env)]
    return [LIBRARY_DIR / CUDA_LIBRARY]


def open_library(path: Path) -> KernelLibrary:
    """Load and check one library file: its ABI version and the layout of every argument struct."""
    try:
        handle = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelLibraryError(f"cannot load the kernel library {path}: {e}") from None
    try:
        handle.ilo_abi_version.restype = ctypes.c_int
        handle.ilo_build_info.restype = ctypes.c_char_p
        handle.ilo_last_error.restype = ctypes.c_char_p
        handle.ilo_struct_size.restype = ctypes.c_int64
        handle.ilo_struct_size.argtypes = [ctypes.c_char_p]
        for fn in ("ilo_conv", "ilo_upfirdn2d", "ilo_bias_act", "ilo_act_grad"):
            getattr(handle, fn).restype = ctypes.c_int
            getattr(handle, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    except AttributeError as e:
        raise KernelLibraryError(f"{path} is not an ILO kernel library ({e})") from None
    version = handle.ilo_abi_version()
    if version != ABI_VERSION:
        raise KernelLibraryError(
            f"{path} has ABI version {version}, this package needs {ABI_VERSION}; rebuild it ({BUILD_HINT})"
        )
    for name, struct in STRUCTS.items():
        size = handle.ilo_struct_size(name.encode())
        if size != ctypes.sizeof(struct):
            raise KernelLibraryError(
                f"{path}: {name} is {size} bytes there and {ctypes.sizeof(struct)} here; rebuild it"
            )
    return KernelLibrary(Path(path), handle, handle.ilo_build_info().decode())


@functools.lru_cache(maxsize=None)
def _load(candidates: tuple[Path, ...]) -> KernelLibrary:
    for path in candidates:
        if path.is_file():
            return open_library(path)
    where = ", ".join(str(p) for p in candidates)
    raise KernelLibraryError(f"no kernel library at {where}; {BUILD_HINT}, or point {LIBRARY_ENV} at a built one")


def load_library() -> KernelLibrary:
    """The kernel library, or KernelLibraryError saying where it was looked for and how to build it."""
    return _load(tuple(library_candidates()))


def available_library() -> KernelLibrary | None:
    """The library when one loads, else None (the caller runs the reference path)."""
    try:
        return load_library()
    except KernelLibraryError:
        return None
