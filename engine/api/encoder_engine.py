"""The model's encoder run by the restore's own backend: on onnxruntime (or TensorRT) the graph
`ilo export --encoder` exported beside the model's, found in the cache or exported on first
use; on torch and the CUDA kernels the module itself. `learned_starts` calls it like the module."""

from __future__ import annotations

from functools import partial

import torch

from ilo.engine.runtimes.backends import Backend
from ilo.engine.runtimes.bridge import load_graphs
from ilo.engine.solver.encoder import LatentEncoder, encoder_bundle, encoder_graph


class EngineEncoder:
    """view [B, VIEW_CHANNELS, R, R] -> z, on `backend`."""

    def __init__(self, encoder: LatentEncoder, backend: Backend, progress=None):
        runners = load_graphs(
            backend, partial(encoder_bundle, encoder), lambda: [encoder_graph(encoder)], None, progress
        )
        self._run = runners["encoder.fwd"]

    def __call__(self, view: torch.Tensor) -> torch.Tensor:
        return self._run(view.contiguous())[0]
