"""Runners for ONNX Runtime sessions (built by ilo.export.ort_session), on the CPU and on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

# Run options every runner passes (None: ONNX Runtime's defaults). Set only while memory is
# being measured, when the arena must give back what a run took (see arena_released_after_runs).
_RUN_OPTIONS = None


@contextlib.contextmanager
def arena_released_after_runs(device: torch.device) -> Iterator[None]:
    """While inside, every session run gives its arena's free regions back to the system when
    it ends, so the memory of one run can be measured apart from the runs before it. (Runs
    outside keep what they took: reusing it is what makes repeated calls cheap.)"""
    global _RUN_OPTIONS
    import onnxruntime as ort

    options = ort.RunOptions()
    arena = "cpu:0" if device.type == "cpu" else f"gpu:{device.index or 0}"
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arena)
    previous, _RUN_OPTIONS = _RUN_OPTIONS, options
    try:
        yield
    finally:
        _RUN_OPTIONS = previous


class OrtCpuRunner:
    """Tensors cross as numpy views of the same memory: no copies either way."""

    def __init__(self, session):
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feeds = {n: _as_float32(t).numpy() for n, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(None, feeds, _RUN_OPTIONS)]


class OrtCudaRunner:
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
        self.session.run_with_iobinding(binding, _RUN_OPTIONS)
        return outputs


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()
