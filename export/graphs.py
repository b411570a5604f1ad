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

from ilo.generators import ops
from ilo.generators.frozen_ops import frozen_weights
from ilo.generators.latent_stats import latent_stats
from ilo.generators.staged import StagedGenerator


@dataclass
class GraphFn:
    name: str  # "stage2.fwd"
    fn: Callable[..., tuple[torch.Tensor, ...]]
    inputs: list[tuple[str, tuple[int, ...]]]  # name, per-sample shape
    outputs: list[tuple[str, tuple[int, ...]]]
    stage: int | None = None
    shared: tuple[str, ...] = ()  # inputs without a batch axis, one for the whole batch (a CS matrix)
    symbolic: dict = field(default_factory=dict)  # input name -> {axis: dim name} besides the batch
    # The same function with the generator's layers on a fast implementation (ops.FastLayers),
    # for the graphs that have such layers; None elsewhere. `fn` is always the reference: it is
    # what export traces, and a backend asks for this one explicitly.
    on_fast_layers: Callable[[ops.FastLayers], GraphFn] | None = None

    def example(self, batch: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(
            torch.randn(*(() if name in self.shared else (batch,)), *shape, generator=g, dtype=dtype)
            for name, shape in self.inputs
        )


def vjp_pullback(fn: Callable, *primals: torch.Tensor, has_aux: bool = False, plain_autograd: bool = False):
    """torch.func.vjp's contract. `plain_autograd=False` runs torch.func.vjp (what graph export
    traces); True runs plain autograd, which functions on fast layers need: functorch cannot see
    through the kernels' opaque autograd Functions (it hands their backward wrapped tensors
    without storage)."""
    if not plain_autograd:
        return torch.func.vjp(fn, *primals, has_aux=has_aux)
    leaves = [p.detach().requires_grad_(True) for p in primals]
    with torch.enable_grad():
        result = fn(*leaves)
    out, aux = result if has_aux else (result, None)
    outputs = out if isinstance(out, tuple) else (out,)

    def pullback(cotangents):
        cotangents = cotangents if isinstance(cotangents, tuple) else (cotangents,)
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
        return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))

    detach = lambda t: tuple(x.detach() for x in t) if isinstance(t, tuple) else t.detach()  # noqa: E731
    return (detach(out), pullback, detach(aux)) if has_aux else (detach(out), pullback)


def _vjp_of(
    forward: GraphFn,
    n_primals: int,
    grad_names: list[str],
    n_differentiated: int | None = None,
    plain_autograd: bool = False,
) -> GraphFn:
    """The VJP of `forward` with respect to its first `n_differentiated` inputs (default: all
    primals); the other primals are constants of the pullback (LPIPS target features, masks).
    `plain_autograd`: see vjp_pullback (True where `forward` runs on fast layers)."""
    n_diff = n_primals if n_differentiated is None else n_differentiated

    def vjp(*tensors):
        primals, cotangents = tensors[:n_primals], tensors[n_primals:]
        rest = primals[n_diff:]
        _, pullback = vjp_pullback(
            lambda *diff: forward.fn(*diff, *rest), *primals[:n_diff], plain_autograd=plain_autograd
        )
        return tuple(pullback(tuple(cotangents)))

    name = forward.name.replace(".fwd", ".vjp")
    inputs = forward.inputs + [(f"grad_{n}", s) for n, s in forward.outputs]
    outputs = [(g, s) for g, (_, s) in zip(grad_names, forward.inputs[:n_diff])]
    return GraphFn(name, vjp, inputs, outputs, forward.stage, shared=forward.shared, symbolic=forward.symbolic)


def stage_graphs(gen: StagedGenerator, stages=None, fast: ops.FastLayers | None = None) -> list[GraphFn]:
    """Forward and VJP functions of every stage (of `stages`, default the exporter's stages),
    on the reference layers, or on `fast` where given (never for export)."""
    stages = gen.export_stages() if stages is None else stages
    return [g for stage in stages for g in _stage_pair(gen, stage, fast)]


def _stage_pair(gen: StagedGenerator, stage, fast: ops.FastLayers | None) -> list[GraphFn]:
    reference = stage
    if fast is not None:
        stage = ops.with_fast_layers(stage, fast)
    spec = stage.spec
    noise_shapes = gen.noise_shapes
    n_state, has_w = len(spec.state_in), spec.latent_count > 0

    def fwd(*tensors):
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
    vjp = _vjp_of(forward, len(inputs), [f"grad_{name}" for name, _ in inputs], plain_autograd=fast is not None)
    if fast is None:  # how a backend gets the pair on fast layers
        forward.on_fast_layers = lambda f: _stage_pair(gen, reference, f)[0]
        vjp.on_fast_layers = lambda f: _stage_pair(gen, reference, f)[1]
    return [forward, vjp]


def mapping_graphs(gen: StagedGenerator) -> list[GraphFn]:
    """PULSE's Gaussianised-latent proxy w = leaky_relu(std * z + mean, 0.2), with the statistics
    of ilo.generators.latent_stats."""
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


@dataclass(frozen=True)
class LossHead:
    """A per-image measurement loss on the generated image, `loss(image, y, *extra) -> [B]`,
    as an operator exports it (`Operator.loss_head`): the exporter traces it and knows nothing
    of operators."""

    name: str  # "inpaint", "denoise", "sr4", "cs_gaussian"
    y_shape: tuple[int, ...]
    extra: tuple[tuple[str, tuple[int, ...]], ...]  # further inputs (a mask, a CS matrix)
    loss: Callable[..., torch.Tensor]
    shared: tuple[str, ...] = ()
    symbolic: dict = field(default_factory=dict)
    revision: str = ""  # changes with the code of `loss`: part of the exported graphs' cache key


def loss_head_graphs(heads: list[LossHead], resolution: int, frozen: bool = True) -> list[GraphFn]:
    """Per-image loss of each head (`loss_{head}.fwd`) and its gradient w.r.t. the image."""
    out = []
    for head in heads:

        def fn(x, y, *extra, head=head):
            with _tracing_mode(frozen):
                return (head.loss(x, y, *extra),)

        inputs = [("image", (3, resolution, resolution)), ("y", head.y_shape), *head.extra]
        forward = GraphFn(
            f"loss_{head.name}.fwd", fn, inputs, [("loss", ())], shared=head.shared, symbolic=head.symbolic
        )
        out += [forward, _vjp_of(forward, len(inputs), ["grad_image"], n_differentiated=1)]
    return out


def step_graph(
    gen: StagedGenerator,
    head: LossHead,
    start: int,
    optimised_noises: int,
    stages=None,
    frozen: bool = True,
    fast: ops.FastLayers | None = None,
) -> GraphFn:
    """One optimisation step's model evaluation, fused: stages start.. of the generator, the
    image, the head's per-image loss and its gradient w.r.t. the round's variables, in one
    graph. Chained stage graphs each recompute their forward inside their VJP and pay a call
    per stage; this runs the forward once and is one call per step.

        round{start}_{head}.step(state_in..., w, noise_i..., y, extra...)
            -> loss [B], image, grad_state_in..., grad_w, grad_noise_j...

    `w` is the whole w+ [B, n_latent, D] (rows before the round's stages get zero gradient);
    the noise maps are those the round's stages read, and gradients are computed only for the
    optimised ones (index < `optimised_noises`), as autograd would. The image is an output,
    not a differentiated one: the gradient is that of the loss alone. `fast`: the stages' layers
    on that implementation (never for export).
    """
    stages = gen.export_stages() if stages is None else stages
    chain = stages[start:] if fast is None else [ops.with_fast_layers(s, fast) for s in stages[start:]]
    spec = chain[0].spec
    noise_ids = [i for s in chain for i in s.spec.noise_indices]
    n_diff_noise = sum(i < optimised_noises for i in noise_ids)  # a prefix: ids ascend
    noise_shapes = gen.noise_shapes
    n_state, n_noise = len(spec.state_in), len(noise_ids)
    n_diff = n_state + 1 + n_diff_noise

    def evaluate(*tensors):
        variables, fixed_noises = tensors[:n_diff], tensors[n_diff : n_state + 1 + n_noise]
        rest = tensors[n_state + 1 + n_noise :]

        def loss_and_image(*v):
            state, w = tuple(v[:n_state]), v[n_state]
            noises = dict(zip(noise_ids, (*v[n_state + 1 :], *fixed_noises)))
            for stage in chain:
                s = stage.spec
                state = stage(state, w[:, s.latent_slice], [noises[i] for i in s.noise_indices])
            image = gen.image_from_state(state)
            with _tracing_mode(frozen):
                return head.loss(image, *rest), image

        loss, pullback, image = vjp_pullback(loss_and_image, *variables, has_aux=True, plain_autograd=fast is not None)
        return (loss, image, *pullback(torch.ones_like(loss)))

    res = gen.resolution
    inputs = [(f"state_in_{i}", tuple(s)) for i, s in enumerate(spec.state_in)]
    inputs += [("w", (gen.n_latent, gen.style_dim))] + [(f"noise_{i}", (1, *noise_shapes[i])) for i in noise_ids]
    outputs = [("loss", ()), ("image", (3, res, res))] + [(f"grad_{n}", s) for n, s in inputs[:n_diff]]
    inputs += [("y", head.y_shape), *head.extra]
    graph = GraphFn(
        f"round{start}_{head.name}.step", evaluate, inputs, outputs, start, shared=head.shared, symbolic=head.symbolic
    )
    if fast is None:
        graph.on_fast_layers = lambda f: step_graph(gen, head, start, optimised_noises, stages, frozen, fast=f)
    return graph
