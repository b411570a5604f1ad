"""The functions the exporter turns into graphs: per stage a forward and a VJP, and the same for
the latent mapping proxy. Each is a pure function of flat, named tensors with a leading batch
axis; the VJP is derived by `torch.func.vjp` from the forward, never written by hand.

    stage{k}.fwd(state_in..., w, noise...)                 -> state_out...
    stage{k}.vjp(state_in..., w, noise..., grad_state_out...) -> grad_state_in..., grad_w, grad_noise...
    mapping.fwd(z) -> w          mapping.vjp(z, grad_w) -> grad_z      (generators with a mapping)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ilo.export.latent_stats import latent_stats
from ilo.export.staged import StagedGenerator


@dataclass
class GraphFn:
    name: str  # "stage2.fwd"
    fn: Callable[..., tuple[torch.Tensor, ...]]
    inputs: list[tuple[str, tuple[int, ...]]]  # name, per-sample shape
    outputs: list[tuple[str, tuple[int, ...]]]
    stage: int | None = None

    def example(self, batch: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(batch, *shape, generator=g, dtype=dtype) for _, shape in self.inputs)


def _vjp_of(forward: GraphFn, n_primals: int, grad_names: list[str]) -> GraphFn:
    def vjp(*tensors):
        primals, cotangents = tensors[:n_primals], tensors[n_primals:]
        _, pullback = torch.func.vjp(forward.fn, *primals)
        return tuple(pullback(tuple(cotangents)))

    name = forward.name.replace(".fwd", ".vjp")
    inputs = forward.inputs + [(f"grad_{n}", s) for n, s in forward.outputs]
    outputs = [(g, s) for g, (_, s) in zip(grad_names, forward.inputs)]
    return GraphFn(name, vjp, inputs, outputs, forward.stage)


def stage_graphs(gen: StagedGenerator, stages=None) -> list[GraphFn]:
    """Forward and VJP functions of every stage (of `stages`, default the exporter's stages)."""
    stages = gen.export_stages() if stages is None else stages
    noise_shapes = gen.noise_shapes
    out = []
    for stage in stages:
        spec = stage.spec
        n_state, has_w = len(spec.state_in), spec.latent_count > 0

        def fwd(*tensors, stage=stage, n_state=n_state, has_w=has_w):
            state = tuple(tensors[:n_state])
            latents = tensors[n_state] if has_w else None  # stages that read no latent get none
            noises = list(tensors[n_state + has_w :])
            return tuple(stage(state, latents, noises))

        inputs = [(f"state_in_{i}", tuple(s)) for i, s in enumerate(spec.state_in)]
        if has_w:
            inputs.append(("w", (spec.latent_count, gen.style_dim)))
        inputs += [(f"noise_{i}", (1, *noise_shapes[i])) for i in spec.noise_indices]
        outputs = [(f"state_out_{i}", tuple(s)) for i, s in enumerate(spec.state_out)]
        forward = GraphFn(f"stage{spec.index}.fwd", fwd, inputs, outputs, spec.index)
        out += [forward, _vjp_of(forward, len(inputs), [f"grad_{name}" for name, _ in inputs])]
    return out


def mapping_graphs(gen: StagedGenerator) -> list[GraphFn]:
    """The Gaussianised-latent proxy w = leaky_relu(std * z + mean, 0.2) (DESIGN §2)."""
    if not gen.has_mapping:
        return []
    stats = latent_stats(gen)

    def fwd(z):
        return (stats.to_w(z),)

    shape = (gen.n_latent, gen.style_dim)
    forward = GraphFn("mapping.fwd", fwd, [("z", shape)], [("w", shape)])
    return [forward, _vjp_of(forward, 1, ["grad_z"])]


def generator_graphs(gen: StagedGenerator) -> list[GraphFn]:
    return mapping_graphs(gen) + stage_graphs(gen)
