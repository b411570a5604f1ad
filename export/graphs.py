"""The functions the exporter turns into graphs: per stage a forward and a VJP, and the same for
the latent mapping proxy, LPIPS and the measurement loss heads. Each is a pure function of flat, named tensors with a leading batch
axis; the VJP is derived by `torch.func.vjp` from the forward, never written by hand.

    stage{k}.fwd(state_in..., w, noise...)                 -> state_out...
    stage{k}.vjp(state_in..., w, noise..., grad_state_out...) -> grad_state_in..., grad_w, grad_noise...
    mapping.fwd(z) -> w          mapping.vjp(z, grad_w) -> grad_z      (generators with a mapping)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from ilo.export.frozen_ops import frozen_weights
from ilo.export.latent_stats import latent_stats
from ilo.export.staged import StagedGenerator


@dataclass
class GraphFn:
    name: str  # "stage2.fwd"
    fn: Callable[..., tuple[torch.Tensor, ...]]
    inputs: list[tuple[str, tuple[int, ...]]]  # name, per-sample shape
    outputs: list[tuple[str, tuple[int, ...]]]
    stage: int | None = None
    shared: tuple[str, ...] = ()  # inputs without a batch axis, one for the whole batch (a CS matrix)
    symbolic: dict = field(default_factory=dict)  # input name -> {axis: dim name} besides the batch

    def example(self, batch: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*(() if name in self.shared else (batch,)), *shape, generator=g, dtype=dtype)
                     for name, shape in self.inputs)  # fmt: skip


def _vjp_of(forward: GraphFn, n_primals: int, grad_names: list[str], n_differentiated: int | None = None) -> GraphFn:
    """The VJP of `forward` with respect to its first `n_differentiated` inputs (default: all
    primals); the other primals are constants of the pullback (LPIPS target features, masks).
    `frozen=False` builds the same functions on plain torch autograd: the references."""
    n_diff = n_primals if n_differentiated is None else n_differentiated

    def vjp(*tensors):
        primals, cotangents = tensors[:n_primals], tensors[n_primals:]
        rest = primals[n_diff:]
        _, pullback = torch.func.vjp(lambda *diff: forward.fn(*diff, *rest), *primals[:n_diff])
        return tuple(pullback(tuple(cotangents)))

    name = forward.name.replace(".fwd", ".vjp")
    inputs = forward.inputs + [(f"grad_{n}", s) for n, s in forward.outputs]
    outputs = [(g, s) for g, (_, s) in zip(grad_names, forward.inputs[:n_diff])]
    return GraphFn(name, vjp, inputs, outputs, forward.stage, shared=forward.shared, symbolic=forward.symbolic)


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


def _tracing_mode(frozen: bool):
    return frozen_weights() if frozen else contextlib.nullcontext()


def lpips_graphs(lpips, resolution: int, frozen: bool = True) -> list[GraphFn]:
    """LPIPS against a fixed target: `lpips.features(target) -> feat...` runs once per
    measurement; `lpips.fwd(image, feat...) -> distance` and its VJP w.r.t. the image only."""
    image = (3, resolution, resolution)
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in lpips.target_features(torch.zeros(1, *image))]
    feats = [(f"feat_{i}", s) for i, s in enumerate(shapes)]

    def features(target):
        with _tracing_mode(frozen):
            return lpips.target_features(target)

    def distance(x, *target_features):
        with _tracing_mode(frozen):
            return (lpips.distance_to_features(x, target_features),)

    forward = GraphFn("lpips.fwd", distance, [("image", image), *feats], [("distance", ())])
    vjp = _vjp_of(forward, 1 + len(feats), ["grad_image"], n_differentiated=1)
    return [GraphFn("lpips_features.fwd", features, [("target", image)], feats), forward, vjp]


def loss_head_graphs(resolution: int, sr_factors=(2, 4, 8), frozen: bool = True) -> list[GraphFn]:
    """Per-image measurement MSE of each image-space operator and its gradient w.r.t. the image:
    inpainting (the mask an input), denoising (identity) and super-resolution per factor."""
    from ilo.engine.losses import measurement_mse
    from ilo.engine.operators import Downsample, Identity, Inpainting

    image = (3, resolution, resolution)
    mask = ("mask", (1, resolution, resolution))
    heads = [("loss_inpaint", None, image, [mask]), ("loss_denoise", Identity(), image, [])]
    for f in sr_factors:
        if resolution % f == 0 and resolution // f >= 4:
            heads.append((f"loss_sr{f}", Downsample(f), (3, resolution // f, resolution // f), []))
    out = []
    for name, op, y_shape, extra in heads:
        def fn(x, y, *mask_, op=op):
            with _tracing_mode(frozen):
                return (measurement_mse(op if op is not None else Inpainting(mask_[0]), x, y),)

        forward = GraphFn(f"{name}.fwd", fn, [("image", image), ("y", y_shape), *extra], [("loss", ())])
        out += [forward, _vjp_of(forward, len(forward.inputs), ["grad_image"], n_differentiated=1)]
    return out + _cs_gaussian_head(resolution)


def _cs_gaussian_head(resolution: int) -> list[GraphFn]:
    """Dense Gaussian compressed sensing: the matrix [m, n] is an input shared by the batch (it
    is the measurement's, not the model's), with m a dynamic axis. The partial-circulant
    operator has no head: its FFT has no TensorRT equivalent, so its loss stays in torch."""
    n = 3 * resolution * resolution
    m = max(1, round(0.1 * n))  # the traced example; m is symbolic in the graph

    def fn(x, y, matrix):
        measured = x.reshape(x.shape[0], n) @ matrix.t()
        return ((measured - y).square().mean(dim=1),)

    forward = GraphFn("loss_cs_gaussian.fwd", fn, [("image", (3, resolution, resolution)), ("y", (m,)), ("matrix", (m, n))],
                      [("loss", ())], shared=("matrix",), symbolic={"y": {1: "m"}, "matrix": {0: "m"}})  # fmt: skip
    return [forward, _vjp_of(forward, 3, ["grad_image"], n_differentiated=1)]
