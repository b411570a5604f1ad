"""The autograd bridge: exported graphs as torch autograd functions, on any backend.

Two ways a step's model evaluation reaches the engines, both invisible to the solver (ordinary
torch: Adam, projections):

- chained (general): every stage, the mapping proxy, LPIPS and the loss heads are
  `GraphFunction`s — forward graph in `forward`, VJP graph in `backward` — and compose like any
  torch functions;
- fused (fast): one graph per (round, loss head) computes the round's stages, the image, the
  per-image loss and its gradient in one call (`FusedStep`); its backward only scales the
  stored gradient. Chained stage graphs recompute each forward inside its VJP and pay one call
  per stage and direction; that overhead is what the fused graph removes.

`EngineGenerator` wraps a staged generator: `run_stages` chains stage engines, `fused_step`
returns the fused evaluation for a round and operator when the operator exports a loss head.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch

from ilo.engine.problems.operators import Operator
from ilo.engine.runtimes.backends import Backend, Runner, get_backend
from ilo.export.artifacts import export_bundle, generator_bundle, lpips_bundle, step_bundle
from ilo.export.graphs import GraphFn, LossHead, mapping_graphs, stage_graphs, step_graph
from ilo.export.parallel import export_bundles
from ilo.generators.latent_stats import LatentStats
from ilo.generators.staged import StagedGenerator, StageSpec, State


class GraphPair:
    """A forward runner and its VJP runner. The VJP returns gradients for the first inputs;
    the inputs after those (LPIPS target features, masks) are constants of the pullback."""

    def __init__(self, forward: Runner, vjp: Runner):
        self.forward, self.vjp = forward, vjp

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return GraphFunction.apply(self, *inputs)


class GraphFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pair: GraphPair, *inputs):
        ctx.pair = pair
        ctx.save_for_backward(*inputs)
        return tuple(pair.forward(*inputs))

    @staticmethod
    def backward(ctx, *grads):
        inputs = ctx.saved_tensors
        grads = [torch.zeros_like(g) if g is None else g for g in grads]  # outputs that did not reach the loss
        grad_inputs = list(ctx.pair.vjp(*inputs, *grads))
        return (None, *grad_inputs, *[None] * (len(inputs) - len(grad_inputs)))


class FusedStep(torch.autograd.Function):
    """(loss [B], image) from a fused step graph; the graph already computed d loss_b / d v for
    every variable v with a cotangent of one per image, so backward scales it by the incoming
    per-image gradient. The image is not differentiable: its gradient is not in the graph."""

    @staticmethod
    def forward(ctx, runner: Runner, *inputs):
        loss, image, *grads = runner(*inputs)
        ctx.n_rest = len(inputs) - len(grads)  # the graph's gradients are for its first inputs
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(image)
        return loss, image

    @staticmethod
    def backward(ctx, grad_loss, _grad_image):
        scaled = [g * grad_loss.reshape(-1, *[1] * (g.ndim - 1)) for g in ctx.saved_tensors]
        return (None, *scaled, *[None] * ctx.n_rest)


def load_graphs(
    backend: Backend,
    make_bundle: Callable,
    functions: Callable[[], list[GraphFn]],
    cache: Path | None = None,
    progress: Callable | None = None,
) -> dict[str, Runner]:
    """Graph name -> runner for a bundle of graphs. File backends export the bundle on a cache
    miss (verified, then cached) and load the files; the torch and cuda backends run the
    graph functions themselves and need no files."""
    if backend.runs_functions:
        return {g.name: backend.load(g, None) for g in functions()}
    result = export_bundle(make_bundle(), cache, progress=progress)
    return {g["name"]: LazyRunner(backend, result.folder / g["file"]) for g in result.manifest["graphs"]}


def frozen(gen: StagedGenerator) -> StagedGenerator:
    """The generator with no trainable weight: itself, or a frozen copy. A module fresh from its
    constructor is trainable, and traced as it is its graphs would need weight gradients that
    ONNX cannot express; the graphs hold the weights as constants, and the caller's module is
    left as it is."""
    if any(p.requires_grad for p in gen.parameters()):
        return copy.deepcopy(gen).requires_grad_(False)
    return gen


def export_ahead(
    gen: StagedGenerator,
    backend: Backend,
    steps: Sequence[tuple[int, LossHead, int]],
    lpips=None,
    cache: Path | None = None,
    jobs: int | None = None,
    progress: Callable | None = None,
    chained: bool = False,
    extra: Sequence[Callable] = (),
) -> None:
    """Export, side by side (export/parallel.py), the bundles a solve will load: the
    generator's forward graphs, the fused step graph of each (round, loss head, optimised noise
    maps) in `steps`, and where a step runs `chained` (an operator without a loss head) or with
    `lpips` the stage VJPs (and LPIPS). The engine then finds them in the cache; anything not
    named here is still exported when first used. `extra`: more bundle makers (the encoder's)."""
    if backend.runs_functions:
        return
    export_bundles(ahead_makers(gen, steps, lpips, chained, extra), cache, jobs, gen, progress)


def ahead_makers(
    gen: StagedGenerator,
    steps: Sequence[tuple[int, LossHead, int]],
    lpips=None,
    chained: bool = False,
    extra: Sequence[Callable] = (),
) -> list[Callable]:
    """What `export_ahead` exports, as bundle makers (a bundle made is only named; its graphs
    are built when it is exported)."""
    gen = frozen(gen)
    noise_maps = len(gen.noise_shapes)
    makers = [partial(generator_bundle, gen, "forward")]
    makers += [partial(step_bundle, gen, head, k, min(n, noise_maps)) for k, head, n in steps]
    if chained or lpips is not None:
        makers.append(partial(generator_bundle, gen, "vjp"))
    if lpips is not None:
        makers.append(partial(lpips_bundle, lpips, gen.resolution))
    return makers + list(extra)


class LazyRunner:
    """Loads its graph on first call: a solve on the fused graphs never calls the per-stage
    VJPs, and an unused session would hold its weights for nothing."""

    def __init__(self, backend: Backend, path: Path):
        self.backend, self.path, self.runner = backend, path, None

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.runner is None:
            self.runner = self.backend.load(None, self.path)
        return self.runner(*tensors)


class LazyBundle:
    """A bundle exported (or found in the cache) when one of its graphs is first called."""

    def __init__(self, backend: Backend, make_bundle: Callable, cache: Path | None, progress: Callable | None):
        self.backend, self.make_bundle, self.cache, self.progress = backend, make_bundle, cache, progress
        self.runners: dict[str, Runner] | None = None

    def runner(self, name: str) -> Runner:
        def run(*tensors: torch.Tensor) -> list[torch.Tensor]:
            if self.runners is None:
                self.runners = load_graphs(self.backend, self.make_bundle, list, self.cache, self.progress)
            return self.runners[name](*tensors)

        return run


class EngineGenerator:
    """A staged generator whose stages run as exported graphs on a backend.

    Graphs are exported (and verified) on first use and taken from the cache after. Shapes,
    latent statistics and stored noise maps come from the torch model."""

    def __init__(
        self,
        gen: StagedGenerator,
        backend: Backend | str = "onnxruntime",
        cache: Path | None = None,
        progress: Callable | None = None,
    ):
        gen = frozen(gen)
        self.torch_generator = gen
        if isinstance(backend, str):  # on the device the generator is on
            backend = get_backend(backend, next(iter(gen.state_dict().values())).device)
        self.backend = backend
        self.cache, self.progress = cache, progress
        functions = lambda: mapping_graphs(gen) + stage_graphs(gen)
        runners = load_graphs(self.backend, lambda: generator_bundle(gen, "forward"), functions, cache, progress)
        if not self.backend.runs_functions:  # exported when a chained step first needs one
            vjps = LazyBundle(self.backend, lambda: generator_bundle(gen, "vjp"), cache, progress)
            runners.update({f"stage{k}.vjp": vjps.runner(f"stage{k}.vjp") for k in range(len(gen.stages))})
        self.stage_pairs = [
            GraphPair(runners[f"stage{k}.fwd"], runners[f"stage{k}.vjp"]) for k in range(len(gen.stages))
        ]
        self.mapping_pair = (
            GraphPair(runners["mapping.fwd"], runners["mapping.vjp"]) if "mapping.fwd" in runners else None
        )
        self._steps: dict[tuple[int, str, int], Runner] = {}

    # --- the torch model's: shapes, specs, noise maps, the mapping and its statistics ----------
    # Spelled out member by member (no attribute pass-through), so the engine offers the
    # solver's generator view and nothing else; callers that need more use `torch_generator`.
    @property
    def resolution(self) -> int:
        return self.torch_generator.resolution

    @property
    def n_latent(self) -> int:
        return self.torch_generator.n_latent

    @property
    def style_dim(self) -> int:
        return self.torch_generator.style_dim

    @property
    def has_mapping(self) -> bool:
        return self.torch_generator.has_mapping

    @property
    def specs(self) -> list[StageSpec]:
        return self.torch_generator.specs

    def stored_noises(self) -> list[torch.Tensor]:
        return self.torch_generator.stored_noises()

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """The mapping network in torch: the solver calls it once, without gradients, to start
        plain w+ optimisation (the Gaussianised proxy below is what runs every step)."""
        return self.torch_generator.mapping(z)

    def latent_stats(self) -> LatentStats:
        return self.torch_generator.latent_stats()

    def image_from_state(self, state: State) -> torch.Tensor:
        """A selection from the last state (no weights), so torch's own."""
        return self.torch_generator.image_from_state(state)

    # --- chained ----------------------------------------------------------------------------
    def run_stages(
        self,
        state: State,
        wplus: torch.Tensor,
        noises: Sequence[torch.Tensor] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> State:
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
            state = self.stage_pairs[k](*inputs)
        return state

    def synthesize(self, wplus: torch.Tensor, noises: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.image_from_state(self.run_stages((), wplus, noises))

    def gaussian_to_w(self, z: torch.Tensor, stats: LatentStats) -> torch.Tensor:
        """The latent proxy w = leaky_relu(std·z + mean) through its graphs. The graphs were
        exported with the torch model's `latent_stats()`, the numbers the solver passes as
        `stats`, so they are not read here."""
        return self.mapping_pair(z)[0]

    # --- fused --------------------------------------------------------------------------------
    def fused_step(self, start: int, op: Operator, batch: int, optimised_noises: int = 0) -> Callable | None:
        """evaluate(state, wplus, noises, y) -> (per-image loss, image) for round `start`, with
        gradients for the state, the latents and the noise maps below index `optimised_noises`,
        or None when `op` exports no loss head (its `no_head_reason(resolution)` says why). Exports the
        round's graph on first use."""
        gen = self.torch_generator
        head = op.loss_head(gen.resolution)
        if head is None:
            return None
        extra = op.head_inputs(batch)
        optimised_noises = min(optimised_noises, len(gen.noise_shapes))  # one graph for every count >= all of them
        key = (start, head.name, optimised_noises)
        if key not in self._steps:
            runners = load_graphs(
                self.backend,
                lambda: step_bundle(gen, head, start, optimised_noises),
                lambda: [step_graph(gen, head, start, optimised_noises)],
                self.cache,
                self.progress,
            )
            (self._steps[key],) = runners.values()
        runner = self._steps[key]
        chain = self.torch_generator.specs[start:]
        noise_ids = [i for spec in chain for i in spec.noise_indices]

        def evaluate(state: State, wplus: torch.Tensor, noises: Sequence[torch.Tensor], y: torch.Tensor):
            variables = [*state, wplus, *(noises[i].expand(batch, -1, -1, -1) for i in noise_ids)]
            return FusedStep.apply(runner, *variables, y, *extra)

        return evaluate


class EngineLPIPS(torch.nn.Module):
    """LPIPS through its graphs: the target's features once per call (no gradient), then the
    distance with its VJP w.r.t. the image only (the target is a constant of each step)."""

    def __init__(
        self,
        lpips,
        resolution: int,
        backend: Backend | str = "onnxruntime",
        cache: Path | None = None,
        progress: Callable | None = None,
    ):
        super().__init__()
        from ilo.export.graphs import lpips_graphs

        backend = get_backend(backend) if isinstance(backend, str) else backend
        runners = load_graphs(
            backend, lambda: lpips_bundle(lpips, resolution), lambda: lpips_graphs(lpips, resolution), cache, progress
        )
        self.features = runners["lpips_features.fwd"]
        self.distance = GraphPair(runners["lpips.fwd"], runners["lpips.vjp"])

    def forward(self, target: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.features(target.detach())
        return self.distance(image, *features)[0]
