"""Native TensorRT: engines built from the exported ONNX files, run on torch CUDA tensors.

An engine is built on first use with one optimisation profile over batch sizes 1..MAX_BATCH
(optimised for OPT_BATCH); other dynamic axes (a CS matrix's m) are fixed at their first-use
size. The serialized plan is cached under $ILO_CACHE_DIR/tensorrt, keyed by the ONNX file's
hash, the GPU, its compute capability and the TensorRT version, because a plan is only valid
for the GPU and library that built it. Runs bind torch memory with `set_tensor_address` and
enqueue with `execute_async_v3` on a stream of our own, ordered after torch's current stream.

Loading and running are apart: `TensorRTEngineLoader` turns the ONNX file into an engine for
given input shapes (parse, build or take the cached plan, deserialize); `TensorRTRunner` calls
it on first use, because the profile's fixed axes are the first call's shapes, and then only
binds memory and enqueues.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ilo.atomic import atomic_path
from ilo.engine.runtimes.runner import Backend, BackendUnavailable, Runner
from ilo.errors import IloError
from ilo.export.graphs import GraphFn
from ilo.paths import cache_dir

MAX_BATCH = 64
OPT_BATCH = 8
WORKSPACE_BYTES = 4 << 30


class TensorRTBackend(Backend):
    name = "tensorrt"
    max_rows = MAX_BATCH

    def __init__(self, device: torch.device | str = "cuda"):
        super().__init__(device)
        if self.device.type != "cuda":
            raise BackendUnavailable("the tensorrt backend runs on a CUDA device; use --device cuda")
        try:
            import tensorrt  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(
                "the tensorrt backend needs the TensorRT Python package: pip install -e '.[gpu]'"
            ) from e

    def build(self, graph: GraphFn | None, path: Path | None) -> TensorRTEngineLoader:
        if path is None:
            raise IloError("tensorrt builds engines from exported ONNX files; none was given")
        return TensorRTEngineLoader(Path(path), self.device)

    def runner(self, built: TensorRTEngineLoader) -> Runner:
        return TensorRTRunner(built)


def _plan_key(onnx_path: Path, fixed: dict, device: torch.device) -> str:
    import tensorrt as trt

    props = torch.cuda.get_device_properties(device)
    payload = json.dumps(
        {
            "onnx": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "fixed": fixed,
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "tensorrt": trt.__version__,
            "max_batch": MAX_BATCH,
            "opt_batch": OPT_BATCH,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class TensorRTEngineLoader:
    """The ONNX file at `onnx_path` as a TensorRT engine, for the shapes of the first inputs."""

    def __init__(self, onnx_path: Path, device: torch.device):
        import tensorrt as trt

        self.trt, self.onnx_path, self.device = trt, onnx_path, device
        self.logger = trt.Logger(trt.Logger.WARNING)

    def __call__(self, tensors: list[torch.Tensor]):
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise IloError(f"TensorRT cannot parse {self.onnx_path.name}: {errors}")
        profile = builder.create_optimization_profile()
        fixed = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = list(tensor.shape)
            actual = list(tensors[i].shape)
            batched = shape and shape[0] == -1
            for axis, dim in enumerate(shape):
                if dim == -1 and not (batched and axis == 0):
                    fixed[f"{tensor.name}:{axis}"] = actual[axis]
            lo, opt, hi = ([*actual] for _ in range(3))
            if batched:
                lo[0], opt[0], hi[0] = 1, OPT_BATCH, MAX_BATCH
            profile.set_shape(tensor.name, lo, opt, hi)
        key = _plan_key(self.onnx_path, fixed, self.device)
        plan_file = cache_dir() / "tensorrt" / f"{self.onnx_path.stem}-{key}.plan"
        if not plan_file.is_file():
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
            config.add_optimization_profile(profile)
            plan = builder.build_serialized_network(network, config)
            if plan is None:
                raise IloError(f"TensorRT failed to build an engine for {self.onnx_path.name} (see the log above)")
            plan_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(plan_file) as tmp:
                Path(tmp).write_bytes(bytes(plan))
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan_file.read_bytes())
        if engine is None:
            raise IloError(f"{plan_file} is not a TensorRT plan this library and GPU can load; delete it to rebuild")
        return engine


class TensorRTRunner:
    def __init__(self, loader: TensorRTEngineLoader):
        self.loader, self.device, self.name = loader, loader.device, loader.onnx_path.name
        self.engine = None
        self.context = None
        self.stream = torch.cuda.Stream(
            self.device
        )  # non-default: TensorRT warns on (and serialises) the default stream

    def _activate(self, tensors: list[torch.Tensor]) -> None:
        trt = self.loader.trt
        self.engine = self.loader(tensors)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.engine.get_tensor_mode
        self.inputs = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        tensors = [t.detach().to(self.device, torch.float32).contiguous() for t in tensors]
        if self.engine is None:
            self._activate(tensors)
        batch = tensors[0].shape[0]
        if batch > MAX_BATCH:
            raise IloError(f"the tensorrt backend's engines take batches up to {MAX_BATCH}, got {batch}")
        for name, t in zip(self.inputs, tensors):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = []
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)  # inputs written by torch are ready
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise IloError(f"TensorRT failed to run {self.name}")
        current.wait_stream(self.stream)  # torch reads outputs only after TensorRT wrote them
        for t in (*tensors, *outputs):  # keep the memory alive until the stream is done with it
            t.record_stream(self.stream)
        return outputs
