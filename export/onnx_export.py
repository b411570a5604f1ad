"""Trace one graph function into an ONNX file with a dynamic batch axis.

`make_fx` (symbolic shapes, core-ATen decompositions) traces the function — for a VJP that
means tracing through `torch.func.vjp` — and the dynamo ONNX exporter translates the traced
graph. Weights are captured as constants, so they become initializers, never runtime inputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from pathlib import Path

import torch

from ilo.errors import IloError
from ilo.export.graphs import GraphFn

OPSET = 18
TRACE_BATCH = 2  # not 1, which the tracer would specialise as a constant


def trace(graph: GraphFn) -> torch.fx.GraphModule:
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    from ilo.generators.frozen_ops import graph_forms

    with torch.no_grad() if graph.name.endswith(".fwd") else contextlib.nullcontext(), graph_forms():
        return make_fx(
            graph.fn,
            tracing_mode="symbolic",
            decomposition_table=core_aten_decompositions(),
            _allow_non_fake_inputs=True,
        )(*graph.example(TRACE_BATCH))


def export_onnx(graph: GraphFn, path: Path) -> float:
    """Write `graph` to `path` (the caller makes it atomic); returns the seconds it took."""
    t0 = time.perf_counter()
    module = trace(graph)
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    dynamic = []
    for name, _ in graph.inputs:
        axes = {} if name in graph.shared else {0: dims["batch"]}
        for axis, dim in graph.symbolic.get(name, {}).items():
            dims.setdefault(dim, torch.export.Dim(dim, min=1))
            axes[axis] = dims[dim]
        dynamic.append(axes or None)
    dynamic = tuple(dynamic)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                graph.example(TRACE_BATCH),
                dynamo=True,
                opset_version=OPSET,
                dynamic_shapes=dynamic,
                input_names=[n for n, _ in graph.inputs],
                output_names=[n for n, _ in graph.outputs],
                optimize=True,
                verbose=False,
            )
        except Exception as e:  # the exporter's own errors are long; keep the first line
            raise IloError(f"exporting {graph.name} failed: {str(e).splitlines()[0]}") from e
    program.save(str(path))
    return time.perf_counter() - t0


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress lines ('[torch.onnx] ...') on stdout; keep ours clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
