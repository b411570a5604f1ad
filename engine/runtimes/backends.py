"""Backends: one interface to run an exported graph on torch tensors, batch-dynamic.

    backend = get_backend("onnxruntime")          # a clear error when it is not installed
    run = backend.load(graph_fn, onnx_path)       # graph_fn: the torch function the file was traced from
    outputs = run(*tensors)                       # list of tensors on the backend's device

- `torch`: the eager reference: runs the graph function itself, never the file.
- `onnxruntime`: the CPU execution provider on the CPU; the CUDA provider on a CUDA device,
  with IO binding so inputs and outputs stay on the device.
- `onnxruntime-tensorrt`: ONNX Runtime's TensorRT provider (CUDA only), with an engine cache.
- `tensorrt`: native TensorRT engines (engine/runtimes/tensorrt_runner.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ilo.choices import BACKENDS  # noqa: F401  (re-exported)
from ilo.errors import IloError
from ilo.export.graphs import GraphFn
from ilo.export.ort_session import ort_session  # noqa: F401  (also imported from here by callers)

Runner = Callable[..., list[torch.Tensor]]


class BackendUnavailable(IloError):
    """The backend asked for is not installed or cannot run on this machine."""


class Backend:
    name = ""
    runs_functions = False  # True: runs the graph functions in torch, needs no exported files

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def load(self, graph: GraphFn | None, path: Path | None) -> Runner:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


class TorchBackend(Backend):
    """The graph function itself, eagerly: the reference every other backend is compared to."""

    name = "torch"
    runs_functions = True

    def load(self, graph: GraphFn | None, path: Path | None) -> Runner:
        if graph is None:
            raise IloError("the torch backend runs graph functions, not ONNX files")
        forward_only = graph.name.endswith(".fwd")

        def run(*tensors):
            with torch.no_grad() if forward_only else torch.enable_grad():
                return [t.detach() for t in graph.fn(*tensors)]

        return run


class KernelBackend(TorchBackend):
    """The graph functions in torch with StyleGAN2's layers (modulated convs, to-RGB, skip
    upsampling) on the fused kernels of ilo.kernels, forward and VJP. Everything else (mapping
    proxy, loss heads, LPIPS, DCGAN) is the torch reference."""

    name = "cuda"

    def __init__(self, device: torch.device | str = "cuda", library=None):
        super().__init__(device)
        from ilo.kernels.fast_path import KernelOps
        from ilo.kernels.library import KernelLibraryError, load_library

        try:
            library = library or load_library()
        except KernelLibraryError as e:
            raise BackendUnavailable(str(e)) from None
        if library.device_type != self.device.type:
            raise BackendUnavailable(f"the kernel library {library.path} ({library.build_info}) runs on "
                                     f"{library.device_type} tensors, not on {self.device}")  # fmt: skip
        self.library, self.layers = library, KernelOps(library)

    def load(self, graph: GraphFn | None, path: Path | None) -> Runner:
        # The kernels are passed explicitly: each graph is asked for its version on them.
        if graph is not None and graph.on_fast_layers is not None:
            graph = graph.on_fast_layers(self.layers)
        return super().load(graph, path)

    def describe(self) -> str:
        return f"cuda kernels ({self.library.build_info}) on {self.device}"


def auto_backend_name(device: torch.device | str, family: str) -> str:
    """What `--backend auto` runs: the fused kernels for a StyleGAN2 on a GPU when the library
    is built, else the exported graphs on onnxruntime."""
    if torch.device(device).type == "cuda" and family == "stylegan2":
        from ilo.kernels.library import available_library

        library = available_library()
        if library is not None and library.device_type == "cuda":
            return "cuda"
    return "onnxruntime"


class OnnxRuntimeBackend(Backend):
    def __init__(self, device: torch.device | str = "cpu", provider: str | None = None, threads: int | None = None):
        super().__init__(device)
        import onnxruntime as ort

        on_cuda = self.device.type == "cuda"
        self.provider = provider or ("cuda" if on_cuda else "cpu")
        self.name = "onnxruntime-tensorrt" if self.provider == "tensorrt" else "onnxruntime"
        self.threads = threads
        available = ort.get_available_providers()
        if self.provider != "cpu":
            if not on_cuda:
                raise BackendUnavailable(f"{self.name} with the {self.provider} provider needs a CUDA device, not {self.device}")
            wanted = "TensorrtExecutionProvider" if self.provider == "tensorrt" else "CUDAExecutionProvider"
            if wanted not in available:
                raise BackendUnavailable(f"this onnxruntime has no {wanted} (it has {', '.join(available)}); "
                                         "install the GPU build: pip uninstall onnxruntime && pip install -e '.[gpu]'")  # fmt: skip
        elif on_cuda:
            raise BackendUnavailable("the onnxruntime CPU provider runs on the CPU; use --device cpu")

    def load(self, graph: GraphFn | None, path: Path | None) -> Runner:
        if path is None:
            raise IloError(f"{self.name} runs exported ONNX files; none was given")
        session = ort_session(path, self.provider, self.threads, device_index=self.device.index or 0)
        if self.provider == "cpu":
            return _CpuRunner(session)
        return _CudaRunner(session, self.device)


class _CpuRunner:
    """Tensors cross as numpy views of the same memory: no copies either way."""

    def __init__(self, session):
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feeds = {n: _as_float32(t).numpy() for n, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(None, feeds)]


class _CudaRunner:
    """IO binding: inputs are read from, and outputs written to, torch CUDA memory in place."""

    def __init__(self, session, device: torch.device):
        self.session, self.device = session, device
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [(o.name, o.shape) for o in session.get_outputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        index = self.device.index or 0
        tensors = [_as_float32(t.to(self.device)) for t in tensors]
        for name, t in zip(self.inputs, tensors):
            binding.bind_input(name, "cuda", index, np.float32, tuple(t.shape), t.data_ptr())
        batch = tensors[0].shape[0]
        outputs = []
        for name, shape in self.outputs:  # symbolic output dims are the batch axis
            out = torch.empty([batch if not isinstance(d, int) else d for d in shape], device=self.device)
            binding.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
            outputs.append(out)
        self.session.run_with_iobinding(binding)
        return outputs


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


def check_device(device: torch.device | str) -> torch.device:
    """`device` as a torch device that exists here, or a one-line error saying why not."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise IloError(f"unknown device '{device}' (use cpu or cuda[:N])") from None
    if device.type not in ("cpu", "cuda"):
        raise IloError(f"unsupported device '{device}' (use cpu or cuda[:N])")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device is available to torch here; use --device cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise BackendUnavailable(f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def get_backend(name: str, device: torch.device | str = "cpu", threads: int | None = None) -> Backend:
    """The backend called `name` on `device`, or BackendUnavailable saying what is missing."""
    device = check_device(device)
    if name == "torch":
        return TorchBackend(device)
    if name == "cuda":
        return KernelBackend(device)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(device, threads=threads)
    if name == "onnxruntime-tensorrt":
        return OnnxRuntimeBackend(device, provider="tensorrt")
    if name == "tensorrt":
        from ilo.engine.runtimes.tensorrt_runner import TensorRTBackend

        return TensorRTBackend(device)
    raise IloError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
