"""Runners for ONNX Runtime sessions (built by ilo.export.ort_session), on the CPU and on CUDA."""

from __future__ import annotations

import numpy as np
import torch


class OrtCpuRunner:
    """Tensors cross as numpy views of the same memory: no copies either way."""

    def __init__(self, session):
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feeds = {n: _as_float32(t).numpy() for n, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(None, feeds)]


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
        self.session.run_with_iobinding(binding)
        return outputs


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()
