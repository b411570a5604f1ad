"""Check exported graphs against torch: ONNX Runtime (CPU) on random inputs at several batch
sizes, against reference functions on plain torch autograd — for the generator the *unfolded*
stages in float64, forward outputs and for VJP graphs `torch.func.vjp` of the stage. One number per graph and batch: the largest, over outputs, of
max|onnx − torch| / max|torch|."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ilo.export.graphs import GraphFn, mapping_graphs, stage_graphs
from ilo.export.staged import StagedGenerator


def reference_graphs(gen: StagedGenerator) -> dict[str, GraphFn]:
    """The same functions on a float64 copy of the generator as loaded (nothing folded); its
    weights require grad, so every convolution takes torch's own autograd path."""
    double = copy.deepcopy(gen).double().requires_grad_(True)
    graphs = mapping_graphs(gen) + stage_graphs(double, list(double.stages))
    return {g.name: g for g in graphs}


def relative_error(got: list[np.ndarray], want: tuple[torch.Tensor, ...], norm: str = "max") -> float:
    """Worst output's error: max|a - b| / max|b| ("max"), or |a - b|_2 / |b|_2 ("l2")."""
    worst = 0.0
    for a, b in zip(got, want):
        b = b.detach().double()
        diff = torch.from_numpy(np.asarray(a)).double() - b
        if norm == "max":
            err = float(diff.abs().max()) / (float(b.abs().max()) or 1.0)
        else:
            err = float(diff.norm()) / (float(b.norm()) or 1.0)
        worst = max(worst, err)
    return worst


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graph(path: Path, graph: GraphFn, reference: GraphFn, batches=(1, 5), dtype=torch.float64) -> dict[str, dict[str, float]]:
    """Relative errors of the ONNX graph against the reference, per batch size and norm."""
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    errors: dict[str, dict[str, float]] = {"max": {}, "l2": {}}
    for batch in batches:
        inputs = graph.example(batch, seed=batch)
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}
        got = session.run(None, feeds)
        with torch.no_grad() if graph.name.endswith(".fwd") else torch.enable_grad():
            want = reference.fn(*(t.to(dtype) for t in inputs))
        for norm in errors:
            errors[norm][f"batch{batch}"] = relative_error(got, want, norm)
    return errors
