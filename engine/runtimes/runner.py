"""The interface every backend shares, split as loader and runner.

- loading (`Backend.build`): from a graph function or an exported ONNX file, what runs: the
  function itself, an ONNX Runtime session, a TensorRT engine loader;
- running (`Backend.runner`, a `Runner`): calls what was built on torch tensors and returns
  the outputs as tensors on the backend's device.

`Backend.load` does both, for callers that want a runner from a graph in one call. The types
live here, apart from the backends, so that each backend's module (tensorrt_runner.py,
ort_runner.py) depends on this one and backends.py on them, never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from ilo.errors import IloError
from ilo.export.graphs import GraphFn


class Runner(Protocol):
    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]: ...


class BackendUnavailable(IloError):
    """The backend asked for is not installed or cannot run on this machine."""


class Backend:
    name = ""
    runs_functions = False  # True: runs the graph functions in torch, needs no exported files
    max_rows: int | None = None  # the most rows one call takes (built engines' batch profile), None: any

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def build(self, graph: GraphFn | None, path: Path | None) -> Any:
        """The loader: what this backend runs for `graph` (a function backend) or the ONNX file
        at `path` (a file backend)."""
        raise NotImplementedError

    def runner(self, built: Any) -> Runner:
        """The runner: `built` (from `build`) as a call on tensors."""
        raise NotImplementedError

    def load(self, graph: GraphFn | None, path: Path | None) -> Runner:
        return self.runner(self.build(graph, path))

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
