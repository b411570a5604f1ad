"""The autograd bridge: exported stage graphs as torch autograd functions.

Each stage runs its forward graph in `forward` and its VJP graph in `backward`, so the solver
(ordinary torch: Adam, projections) optimises through engines exactly as through the torch
stages. `EngineGenerator` wraps a staged generator and routes `run_stages` through the bridge;
everything else (shapes, latent statistics, stored noise maps) comes from the torch model.

Backend here: ONNX Runtime on the CPU (first of issue #5's backends); inputs and outputs cross
as numpy arrays, so this path is a correctness bridge, not yet a fast one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ilo.export.staged import StagedGenerator, State


class OrtGraph:
    """One exported graph on ONNX Runtime: named float32 tensors in, tensors out."""

    def __init__(self, path: Path):
        from ilo.export.verify import ort_session

        self.session = ort_session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feeds = {n: np.ascontiguousarray(t.detach().cpu().float().numpy()) for n, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(None, feeds)]


class _StageFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graphs, *inputs):
        ctx.graphs = graphs
        ctx.save_for_backward(*inputs)
        return tuple(graphs[0](*inputs))

    @staticmethod
    def backward(ctx, *grads):
        inputs = ctx.saved_tensors
        grads = [torch.zeros_like(g) if g is None else g for g in grads]
        return (None, *ctx.graphs[1](*inputs, *grads))


class EngineGenerator:
    """A staged generator whose stages run as exported graphs (forward + VJP)."""

    def __init__(self, gen: StagedGenerator, folder: Path):
        import json

        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        files = {g["name"]: Path(folder) / g["file"] for g in manifest["graphs"]}
        self.torch_generator = gen
        self.graphs = [(OrtGraph(files[f"stage{k}.fwd"]), OrtGraph(files[f"stage{k}.vjp"])) for k in range(len(gen.stages))]

    def __getattr__(self, name):  # shapes, specs, noise maps, statistics: the torch model's
        return getattr(self.torch_generator, name)

    def run_stages(self, state: State, wplus: torch.Tensor, noises: Sequence[torch.Tensor] | None = None,
                   start: int = 0, stop: int | None = None) -> State:  # fmt: skip
        gen = self.torch_generator
        stop = len(gen.stages) if stop is None else stop
        noises = gen.stored_noises() if noises is None else list(noises)
        batch = wplus.shape[0]
        for k in range(start, stop):
            spec = gen.stages[k].spec
            inputs = list(state)
            if spec.latent_count:
                inputs.append(wplus[:, spec.latent_slice])
            inputs += [noises[i].expand(batch, -1, -1, -1) for i in spec.noise_indices]
            state = _StageFunction.apply(self.graphs[k], *inputs)
        return state

    def synthesize(self, wplus: torch.Tensor, noises: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.image_from_state(self.run_stages((), wplus, noises))
