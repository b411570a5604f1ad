"""Backends: one interface to run an exported graph on torch tensors, batch-dynamic.

    backend = get_backend("onnxruntime")          # a clear error when it is not installed
    run = backend.load(graph_fn, onnx_path)       # graph_fn: the torch function the file was traced from
    outputs = run(*tensors)                       # list of tensors on the backend's device

`load` is `runner(build(...))`: building (a graph function -> a torch callable, an ONNX file ->
an ONNX Runtime session or a TensorRT engine loader) is apart from running (runner.py).

- `torch`: the eager reference: runs the graph function itself, never the file.
- `cuda`: the graph function with StyleGAN2's layers on the fused kernels of ilo.kernels.
- `onnxruntime`: the CPU execution provider on the CPU; the CUDA provider on a CUDA device,
  with IO binding so inputs and outputs stay on the device.
- `onnxruntime-tensorrt`: ONNX Runtime's TensorRT provider (CUDA only), with an engine cache.
- `tensorrt`: native TensorRT engines (engine/runtimes/tensorrt_runner.py).

Callers import Backend, BackendUnavailable and Runner (runner.py) and ort_session
(ilo.export.ort_session) from here too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ilo.choices import BACKENDS  # noqa: F401  (re-exported)
from ilo.engine.runtimes.ort_runner import OrtCpuRunner, OrtCudaRunner
from ilo.engine.runtimes.runner import Backend, BackendUnavailable, Runner
from ilo.errors import IloError
from ilo.export.graphs import GraphFn
from ilo.export.ort_session import ort_session


class TorchBackend(Backend):
    """The graph function itself, eagerly: the reference every other backend is compared to."""

    name = "torch"
    runs_functions = True

    def build(self, graph: GraphFn | None, path: Path | None) -> GraphFn:
        if graph is None:
            raise IloError(f"the {self.name} backend runs graph functions, not ONNX files")
        return graph

    def runner(self, built: GraphFn) -> Runner:
        return function_runner(built)


def function_runner(graph: GraphFn) -> Runner:
    """A graph function as a runner: without autograd for forward graphs, with it for the VJP
    and step graphs (they differentiate inside); outputs detached."""
    forward_only = graph.name.endswith(".fwd")

    def run(*tensors):
        with torch.no_grad() if forward_only else torch.enable_grad():
            return [t.detach() for t in graph.fn(*tensors)]

    return run


class KernelBackend(TorchBackend):
    """The graph functions in torch with StyleGAN2's layers (modulated convs, to-RGB, skip
    upsampling) on the fused kernels of ilo.kernels, forward and VJP. Everything else (mapping
    proxy, loss heads, LPIPS, DCGAN) is the torch reference.

    The kernels are passed explicitly: `build` asks each graph for its version on
    `self.layers` (GraphFn.on_fast_layers); graphs without one run as they are."""

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
            raise BackendUnavailable(
                f"the kernel library {library.path} ({library.build_info}) runs on "
                f"{library.device_type} tensors, not on {self.device}"
            )
        self.library, self.layers = library, KernelOps(library)

    def build(self, graph: GraphFn | None, path: Path | None) -> GraphFn:
        graph = super().build(graph, path)
        return graph.on_fast_layers(self.layers) if graph.on_fast_layers is not None else graph

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
        self.version = ort.__version__  # a measured row cost holds for this version only
        available = ort.get_available_providers()
        if self.provider != "cpu":
            if not on_cuda:
                raise BackendUnavailable(
                    f"{self.name} with the {self.provider} provider needs a CUDA device, not {self.device}"
                )
            wanted = "TensorrtExecutionProvider" if self.provider == "tensorrt" else "CUDAExecutionProvider"
            if wanted not in available:
                raise BackendUnavailable(
                    f"this onnxruntime has no {wanted} (it has {', '.join(available)}); "
                    "install the GPU build: pip uninstall onnxruntime && pip install -e '.[gpu]'"
                )
        elif on_cuda:
            raise BackendUnavailable("the onnxruntime CPU provider runs on the CPU; use --device cpu")

    def build(self, graph: GraphFn | None, path: Path | None):
        """The ONNX Runtime session of the file at `path`."""
        if path is None:
            raise IloError(f"{self.name} runs exported ONNX files; none was given")
        return ort_session(path, self.provider, self.threads, device_index=self.device.index or 0)

    def runner(self, built) -> Runner:
        if self.provider == "cpu":
            return OrtCpuRunner(built)
        return OrtCudaRunner(built, self.device)


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
            raise BackendUnavailable(
                f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
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
