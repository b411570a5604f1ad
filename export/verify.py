"""Check exported graphs against torch: ONNX Runtime (CPU) on random inputs at several batch
sizes, against reference functions on plain torch autograd — for the generator the *unfolded*
stages in float64, forward outputs and for VJP graphs `torch.func.vjp` of the stage. One number per graph and batch: the largest, over outputs, of
max|onnx − torch| / max|torch|."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from ilo.export.graphs import GraphFn, mapping_graphs, stage_graphs
from ilo.export.ort_session import ort_session
from ilo.generators.staged import StagedGenerator


def reference_graphs(gen: StagedGenerator) -> dict[str, GraphFn]:
    """The same functions on a float64 copy of the generator as loaded (nothing folded); its
    weights require grad, so every convolution takes torch's own autograd path."""
    double = copy.deepcopy(gen).double().requires_grad_(True)
    graphs = mapping_graphs(gen) + stage_graphs(double, list(double.stages))
    return {g.name: g for g in graphs}


def relative_error(got: list[np.ndarray], want: tuple[torch.Tensor, ...], norm: str = "max") -> float:
    """Worst output's error: max|a - b| / max|b| ("max"), |a - b|_2 / |b|_2 ("l2"), or the
    fraction of elements off by more than OUTLIER_TOLERANCE x max|b| ("outliers")."""
    worst = 0.0
    for a, b in zip(got, want):
        b = b.detach().double()
        diff = torch.from_numpy(np.asarray(a)).double() - b
        if norm == "max":
            err = float(diff.abs().max()) / (float(b.abs().max()) or 1.0)
        elif norm == "outliers":
            err = float((diff.abs() > OUTLIER_TOLERANCE * (float(b.abs().max()) or 1.0)).double().mean())
        else:
            err = float(diff.norm()) / (float(b.norm()) or 1.0)
        worst = max(worst, err)
    return worst


OUTLIER_TOLERANCE = 1e-4
# Every graph is checked at batch 1 and at a second batch that shows its batch axis is really
# dynamic and its images independent; 2 does that as well as 5 did, at 2/5 of the float64
# reference's cost (the bulk of a cold start at 256²).
CHECK_BATCHES = (1, 2)
CHECK_MEMORY_BYTES = 6 * 2**30  # budget of one check: ORT, float32 torch and float64 torch passes
LIVE_TENSORS = 70  # measured: a 256px StyleGAN2 VJP check peaks near 70 float64 copies of its input


def check_batches(graph: GraphFn) -> tuple[int, ...]:
    """Batch sizes to check: 1 and 2, or 1 alone where a check at batch 2 would not fit the
    memory budget (StyleGAN2's 1024px stages). Every graph is checked at batch 1."""
    per_sample = sum(math.prod(shape) for name, shape in graph.inputs if name not in graph.shared)
    cost = per_sample * 8 * LIVE_TENSORS
    return CHECK_BATCHES if cost * max(CHECK_BATCHES) <= CHECK_MEMORY_BYTES else (1,)


def check_graph(path: Path, graph: GraphFn, reference: GraphFn, batches=None, dtype=torch.float64) -> dict[str, dict[str, float]]:
    """Relative errors against the reference, per norm and batch size: of the ONNX graph, and of
    the same function run by torch in float32 ("torch_max"). Piecewise-linear kinks (ReLU,
    leaky ReLU, max-pool) make a float32 gradient differ from the float64 one wherever an
    activation's sign flips under rounding; the torch number shows how much of that is
    float32 itself rather than the graph."""
    session = ort_session(path, memory_arena=False)  # give memory back after each check
    names = [i.name for i in session.get_inputs()]
    errors: dict[str, dict[str, float]] = {"max": {}, "l2": {}, "outliers": {}, "torch_max": {}}
    for batch in batches or check_batches(graph):
        inputs = graph.example(batch, seed=batch)
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}
        got = session.run(None, feeds)
        with torch.no_grad() if graph.name.endswith(".fwd") else torch.enable_grad():
            want = reference.fn(*(t.to(dtype) for t in inputs))
            own = [t.detach().numpy() for t in graph.fn(*inputs)]
        for norm in ("max", "l2", "outliers"):
            errors[norm][f"batch{batch}"] = relative_error(got, want, norm)
        errors["torch_max"][f"batch{batch}"] = relative_error(own, want, "max")
    return errors
