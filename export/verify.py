"""Check exported graphs against torch: ONNX Runtime (CPU) on random inputs at batch 1 and 2,
against reference functions on plain torch autograd — for the generator the *unfolded* stages
in float64, forward outputs and for VJP graphs `torch.func.vjp` of the stage. One number per
graph and check: the largest, over outputs, of max|onnx − torch| / max|torch|."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from ilo.export.graphs import GraphFn, mapping_graphs, stage_graphs
from ilo.errors import IloError
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
# The float64 reference runs once, at batch 1: at 256² it is most of a graph's check (and of a
# cold start). A second ONNX run at batch 2 whose first image is that same input shows that the
# batch axis is really dynamic (2 is not the trace batch either) and that images do not mix:
# its first row is held to the reference, its second to the graph's own run of that image alone.
CHECK_MEMORY_BYTES = 6 * 2**30  # budget of one batch-2 run: ORT's own memory, far below the float64 pass
LIVE_TENSORS = 70  # measured: a 256px StyleGAN2 VJP check peaks near 70 float64 copies of its input


def check_batches(graph: GraphFn) -> tuple[int, ...]:
    """Batch sizes to run: 1 and 2, or 1 alone where batch 2 would not fit the memory budget
    (StyleGAN2's 1024px stages)."""
    per_sample = sum(math.prod(shape) for name, shape in graph.inputs if name not in graph.shared)
    return (1, 2) if per_sample * 8 * LIVE_TENSORS * 2 <= CHECK_MEMORY_BYTES else (1,)


def check_graph(
    path: Path, graph: GraphFn, reference: GraphFn, batches=None, dtype=torch.float64
) -> dict[str, dict[str, float]]:
    """Relative errors against the reference, per norm: of the ONNX graph at batch 1 ("batch1")
    and of the first image of a batch of 2 ("batch2", see above; its second image must equal
    the graph's run of it alone within the same bound), and of the same function run by torch
    in float32 ("torch_max"). Piecewise-linear kinks (ReLU, leaky ReLU, max-pool) make a float32
    gradient differ from the float64 one wherever an activation's sign flips under rounding; the
    torch number shows how much of that is float32 itself rather than the graph."""
    session = ort_session(path, memory_arena=False)  # give memory back after each check
    names = [i.name for i in session.get_inputs()]
    errors: dict[str, dict[str, float]] = {"max": {}, "l2": {}, "outliers": {}, "torch_max": {}}

    def run(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        return [np.asarray(out) for out in session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})]

    first = graph.example(1, seed=1)
    with torch.no_grad() if graph.name.endswith(".fwd") else torch.enable_grad():
        want = reference.fn(*(t.to(dtype) for t in first))
        own = [t.detach().numpy() for t in graph.fn(*first)]
    results = {1: run(first)}
    if 2 in (batches or check_batches(graph)):
        # the second image's own inputs; inputs shared by the batch (a CS matrix) stay the first's
        second = tuple(
            a if n in graph.shared else b for (n, _), a, b in zip(graph.inputs, first, graph.example(1, seed=2))
        )
        pair = tuple(a if n in graph.shared else torch.cat([a, b]) for (n, _), a, b in zip(graph.inputs, first, second))
        together = run(pair)
        if any(np.shape(out)[0] != 2 for out in together):
            raise IloError(f"{graph.name}: an output has no batch axis, so its images cannot be checked apart")
        results[2] = [out[:1] for out in together]
        alone = tuple(torch.from_numpy(np.asarray(out)) for out in run(second))
        for norm in ("max", "l2"):
            errors[norm]["batch2_second_vs_alone"] = relative_error([out[1:] for out in together], alone, norm)
    for batch, got in results.items():
        for norm in ("max", "l2", "outliers"):
            errors[norm][f"batch{batch}"] = relative_error(got, want, norm)
    errors["torch_max"]["batch1"] = relative_error(own, want, "max")
    return errors
