"""Check exported graphs against torch: ONNX Runtime (CPU) on random inputs at several batch
sizes, against the *unfolded* torch stages in float64 — forward outputs, and for VJP graphs
`torch.func.vjp` of the stage. One number per graph and batch: the largest, over outputs, of
max|onnx − torch| / max|torch|."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ilo.export.graphs import GraphFn, mapping_graphs, stage_graphs
from ilo.export.staged import StagedGenerator


def reference_graphs(gen: StagedGenerator) -> dict[str, GraphFn]:
    """The same functions on a float64 copy of the generator as loaded (nothing folded)."""
    double = copy.deepcopy(gen).double()
    graphs = mapping_graphs(gen) + stage_graphs(double, list(double.stages))
    return {g.name: g for g in graphs}


def relative_error(got: list[np.ndarray], want: tuple[torch.Tensor, ...]) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        b = b.detach().double()
        scale = float(b.abs().max()) or 1.0
        worst = max(worst, float((torch.from_numpy(np.asarray(a)).double() - b).abs().max()) / scale)
    return worst


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graph(path: Path, graph: GraphFn, reference: GraphFn, batches=(1, 5)) -> dict[str, float]:
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    errors = {}
    for batch in batches:
        inputs = graph.example(batch, seed=batch)
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}
        got = session.run(None, feeds)
        with torch.no_grad() if graph.name.endswith(".fwd") else torch.enable_grad():
            want = reference.fn(*(t.double() for t in inputs))
        errors[f"batch{batch}"] = relative_error(got, want)
    return errors
