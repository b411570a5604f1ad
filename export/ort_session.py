"""An ONNX Runtime session for an exported graph, on any of its providers.

Here rather than in ilo.engine.runtimes because both export (verify runs every graph it writes)
and the engine's onnxruntime backends open sessions, and export sits below the engine.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ilo.paths import cache_dir


def ort_session(
    path: Path, provider: str = "cpu", threads: int | None = None, memory_arena: bool = True, device_index: int = 0
):
    """An ONNX Runtime session. `threads` defaults to torch's thread count, so both backends
    get the same cores; the memory arena is on for runs (it is what makes repeated calls
    cheap) and off for one-off checks (which should give memory back)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = memory_arena
    if memory_arena:  # one arena for every session: memory is the largest run's, not the sum over graphs
        _shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads must not spin: between runs torch does the solver's work (Adam, the
    # projections) on the same cores, and spinning threads would take them from it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if provider == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        stream = str(torch.cuda.current_stream(device_index).cuda_stream)  # run where torch queues its work
        cuda = ("CUDAExecutionProvider", {"device_id": device_index, "user_compute_stream": stream})
        providers = [cuda]
        if provider == "tensorrt":
            trt_cache = cache_dir() / "ort-tensorrt"
            trt_cache.mkdir(parents=True, exist_ok=True)
            providers.insert(
                0,
                (
                    "TensorrtExecutionProvider",
                    {
                        "device_id": device_index,
                        "user_compute_stream": stream,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(trt_cache),
                    },
                ),
            )
    return ort.InferenceSession(str(path), options, providers=providers)


_ARENA_REGISTERED = False


def _shared_cpu_arena() -> None:
    """Register one CPU arena with ONNX Runtime's environment, once per process. Without it
    each session keeps its own arena at its own peak, and a model's many VJP sessions together
    hold far more than one shared arena does."""
    global _ARENA_REGISTERED
    if _ARENA_REGISTERED:
        return
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # The arena grows by what a run asks for (kSameAsRequested), not to the next power of two:
    # doubling can overshoot a large model's step by gigabytes, well past what torch needs for it.
    same_as_requested = 1
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
    _ARENA_REGISTERED = True
