"""`ilo.Restorer`: the one object a pipeline holds. Built once (model loaded, graphs exported or
found in the cache, sessions made), then `restore(images, masks)` as often as wanted, from any
thread. `ilo restore`, its Ray Data actors and the Ray Serve replicas all solve through it.

An image's result depends on its name, never on its batch: its random starts are seeded from
(seed, name), as on the command line, where the name is the file's stem. A picture handed over
without a name is named by its content, so it gives the same result on every call.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ilo.choices import DEFAULT_MAX_PIXELS, DEFAULT_METHOD
from ilo.engine.api.batch_solve import SolveJob
from ilo.engine.api.learned_start import find_encoder, settled
from ilo.engine.api.methods import method as method_named
from ilo.engine.api.pictures import Pictures, physics_measurements
from ilo.engine.api.records import described
from ilo.engine.api.results import BatchResult, Restored, restored_images
from ilo.engine.api.warm_up import WarmUp
from ilo.engine.inputs.measurements import InputSpec, Prepared
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.runtimes.memory_budget import MemoryBudget, RowCost
from ilo.engine.solver.ilo_solver import ILOConfig
from ilo.errors import InputError
from ilo.export.artifacts import Bundle
from ilo.generators.staged import StagedGenerator


def method_config(method: str, learned: bool = False, fast: bool = False, **overrides) -> ILOConfig | None:
    """The solver settings of a method, with the caller's overrides (None for the one-pass
    methods). `learned`: the solve starts from an encoder's learned start, which ilo-auto's
    schedule is shortened for; `fast`: ilo-auto's faster schedule (learned starts only)."""
    return method_named(method).config(learned, fast, **overrides)


@dataclass
class RestorerSettings:
    """Everything a `Restorer` is built from; plain data, so a Ray actor on another machine can
    build the same one. `model` is 'default', a checkpoint path or a loaded generator."""

    model: str | Path | StagedGenerator = "default"
    task: TaskSpec = field(default_factory=lambda: TaskSpec("denoise"))
    method: str = DEFAULT_METHOD
    backend: str = "auto"  # 'auto', 'torch', 'onnxruntime', ... (ilo.choices.BACKENDS)
    device: str = "cpu"
    config: ILOConfig | None = None  # None: the method's defaults
    seed: int = 0
    fit: str | None = None  # for pictures of another size: crop, resize, pad or refuse (None)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger pictures are refused before they are decoded
    lpips_net: str = "vgg"  # the LPIPS loss, where config.lpips_weight > 0
    lpips_backbone: str | Path | None = None
    # what a solve may take: 'auto' (a share of the memory available), 'off', '60%' or a size ('12G')
    memory_budget: str = "auto"
    # a trained encoder whose learned start replaces each image's first random start: 'auto'
    # (the model's own, ilo.engine.solver.encoder_cache; refused where there is none), a file,
    # 'none' (random starts only), or None: the method's default, which for ilo-auto is the
    # model's own where it has one (with the shorter schedule a learned start allows) and for
    # the encoder method the model's own; the baselines and plain ILO start at random
    encoder: str | Path | None = None
    # ilo-auto's faster schedule from the learned start (needs the model's encoder)
    fast: bool = False
    # solver settings that replace the method's defaults (e.g. {"steps": [100, 30]}), where
    # `config` is None; the defaults themselves depend on whether there is a learned start
    solver_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        MemoryBudget.parse(self.memory_budget)  # a budget that cannot be read stops here, not at the first solve
        row = method_named(self.method)
        row.check_task(self.task)
        if not row.optimises and not row.is_the_encoder and self.encoder not in (None, "none"):
            raise InputError(f"an encoder gives the generator's search a learned start; {row.label} searches nothing")
        if row.is_the_encoder and self.encoder in (None, "none"):
            if self.encoder == "none":
                raise InputError(f"the {self.method} method is the encoder alone: it cannot run with --encoder none")
            self.encoder = "auto"  # the method is the model's own encoder, unless a file is named
        if self.config is not None and (self.solver_overrides or self.fast):
            raise InputError("give either a whole solver config or the method's overrides and fast setting, not both")
        if self.fast and self.encoder == "none":
            raise InputError("the fast setting starts from the model's encoder: it cannot run with --encoder none")
        if self.config is None:  # bad overrides stop here; the config is made where the encoder is known
            method_config(self.method, learned=True, fast=self.fast, **self.solver_overrides)
        # the task, fit and size limit are said here once, for every way in (files, memory, requests)
        InputSpec.for_settings(self)  # a fit the task cannot take, or a size limit below 1, stops here

    def learned_default(self) -> bool:
        """Whether the method takes the model's own encoder, where it has one, without being asked."""
        return self.encoder is None and method_named(self.method).learned_start_by_default


class Restorer:
    """Restore images by ILO (or CSGM, PULSE-style, BM3D, TV, wavelet) over one generator, for one task.

    >>> r = ilo.Restorer(task="inpaint", centre_box=0.5)        # the embedded 64px face DCGAN
    >>> [out] = r.restore([holed_picture])                      # PIL, numpy, tensor, bytes, path
    >>> out.to_pil().save("restored.png"); out.measurement_mse

    `task_params` are the task's parameters (factor, sigma, ratio, cs_matrix, centre_box, box, keep, op_seed).
    `encoder` (None: the method's default; 'auto', 'none' or a file) and `fast` choose the learned start and its
    schedule, `solver_overrides` replace the method's solver defaults (see RestorerSettings). `warm=False` defers loading the engine to the first solve (or `warm()`).
    """

    def __init__(
        self,
        model: str | Path | StagedGenerator = "default",
        task: str | TaskSpec = "denoise",
        method: str = DEFAULT_METHOD,
        backend: str = "auto",
        device: str = "cpu",
        *,
        config: ILOConfig | None = None,
        seed: int = 0,
        fit: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        lpips_net: str = "vgg",
        lpips_backbone: str | Path | None = None,
        memory_budget: str = "auto",
        encoder: str | Path | None = None,
        fast: bool = False,
        solver_overrides: dict | None = None,
        warm: bool = True,
        quiet: bool = True,
        settings: RestorerSettings | None = None,
        **task_params,
    ):
        s = settings if settings is not None else _settings_from(locals())
        from ilo.generators.checkpoints.files import load_generator

        self.quiet, self.method, self.task = quiet, method_named(s.method), s.task
        self.model = s.model if isinstance(s.model, StagedGenerator) else load_generator(s.model)
        self.resolution = self.model.resolution
        self._pictures = Pictures(InputSpec.for_settings(s), self.resolution)
        self._lock = threading.Lock()  # one solve at a time: the engine's sessions and buffers are shared
        self._fingerprint = functools.cache(self.model.fingerprint)
        self._encoder = find_encoder(s, self.model, self.fingerprint, quiet)
        self.settings = settled(s, self._encoder)
        parts = (self.model, self._pictures, self.settings, self._encoder, quiet)
        self._warm_up = warm_up = WarmUp(*parts, self.fingerprint, self._run)
        self.memory_budget, self._row_costs = warm_up.budget, warm_up.costs.known  # the costs: for benchmarks
        self._fused_steps = warm_up.fused_steps  # what tests compare the exported graphs with
        if warm:
            self.warm()

    def warm(self, progress: Callable[[int, int, str], None] | None = None, trial: bool = True) -> Restorer:
        """Build what the solver runs (export graphs on first use, or load them from the cache)
        and, with `trial`, run one step of each round on a blank input, so every graph a solve
        uses is exported and its session made before the first real request."""
        with self._lock:
            self._warm_up.warm(progress, trial)
        return self

    def export_plan(self) -> list[Bundle]:
        """The bundles a solve loads from the cache (named, nothing built or exported), in the
        order a warm-up exports them: [] where the backend runs the graph functions itself."""
        return self._warm_up.export_plan()

    def preflight(self) -> RowCost | None:
        """Refuse at once, before minutes of export, a dense CS matrix or one image's step that the shapes already
        say cannot fit in the memory there is; else the step's estimated cost (None: nothing optimised, budget off)."""
        return self._warm_up.preflight()

    def restore(self, images, masks=None, names: Sequence[str] | None = None) -> list[Restored]:
        """Restore degraded pictures: what the camera gave for this task (the holed image, the low-resolution
        one, the noisy one; for `cs`, a vector of m measurements each). One picture or a sequence (a [B, 3, H, W]
        tensor counts as B). `masks` (inpainting; 1 or white = observed) pair with the images; without them the
        task's built-in mask is used. All of them are solved as one batch."""
        prepared = self.prepare(images, masks, names)
        return restored_images(prepared, self.solve(prepared))

    def prepare(
        self, images, masks=None, names: Sequence[str] | None = None, labels: Sequence[str] | None = None
    ) -> list[Prepared]:
        """Pictures (and masks) as checked measurements; each bad one is a one-line InputError
        that starts with its label (default: its name, or 'image i')."""
        return self._pictures.prepare(images, masks, names, labels)

    def solve(
        self, batch: list[Prepared], progress=None, config: ILOConfig | None = None, *, on_round=None, note=None
    ) -> BatchResult:
        """Solve prepared measurements as one batch (what every caller ends in). `on_round(k, first,
        images)`: the solver's report after each round (a search's; a single pass has no rounds);
        `note(text)`: a line of progress for work outside the search (the choose method's candidates)."""
        return self._solve(batch, progress, config or self.settings.config, on_round=on_round, note=note)

    def reconstruct(self, y: torch.Tensor, physics, names: Sequence[str] | None = None) -> torch.Tensor:
        """Restore from measurements y of a deepinv physics (or one of this project's linear operators), in
        deepinv's convention: y = A(x) + noise for images x in [0, 1]. Returns [B, 3, H, W] in [0, 1]. The physics
        replaces the Restorer's task for this call; each image is named (and so seeded) by its measurements."""
        self.method.check_physics()
        with physics_measurements(y, physics, self.resolution, names) as (batch, op):
            # the row cost measured for the Restorer's task: the generator dominates what a step holds
            result = self._solve(batch, None, self.settings.config, op)
        return ((result.images.clamp(-1, 1) + 1) / 2).to(y.device)

    def _solve(
        self,
        batch: list[Prepared],
        progress,
        config: ILOConfig | None,
        op: Operator | None = None,
        on_round=None,
        note=None,
    ):
        """The one path of every solve: under the lock, the engine opened on first use, the batch
        split to fit the memory budget, solved by the method; `op`: a physics' in place of the task's."""
        config = config if self.method.optimises else None
        with self._lock:
            max_rows = None if config is None else self._warm_up.max_rows(config, len(batch))
            return self._run(batch, config, progress, max_rows, op, on_round, note)

    def _run(
        self,
        batch,
        config,
        progress=None,
        max_rows: int | None = None,
        op: Operator | None = None,
        on_round=None,
        note=None,
    ):
        """`batch` solved under the lock already held (the probe's trial steps come here too)."""
        s, engine = self.settings, self._warm_up.opened()
        op = op if op is not None else self._pictures.operator(batch)
        job = SolveJob(
            prepared=batch,
            op=op,
            task=self.task,
            model=self.model,
            engine=engine,
            device=s.device,
            seed=s.seed,
            config=config,
            encoder=self._encoder,
            progress=progress,
            max_rows=max_rows,
            on_round=on_round,
            note=note,
        )
        return self.method.solve(job)

    def shared_operator(self) -> Operator:
        return self._pictures.shared_operator()

    def fingerprint(self) -> str:
        """The model's identity, hashed once: /healthz asks for it on every probe."""
        return self._fingerprint()

    @property
    def backend_name(self) -> str:
        engine = self._warm_up.engine
        return "not loaded" if engine is None else engine.description

    def describe(self) -> dict:
        s = self.settings
        fingerprint, engine = self.fingerprint(), self.backend_name
        return described(self.task, s.method, s.config, s.seed, fingerprint, engine, s.device, self._encoder)

    # what tests read of the engine: its generator and loss, and the learned start it runs
    @property
    def _solver(self) -> tuple | None:
        engine = self._warm_up.engine
        return None if engine is None else (engine.generator, engine.lpips)

    @property
    def _start_encoder(self) -> Callable | None:
        return None if self._warm_up.engine is None else self._warm_up.engine.encoder


def _settings_from(arguments: dict) -> RestorerSettings:
    """The settings a Restorer's arguments give: each argument named as a settings field is that
    field; the task is a TaskSpec, or a task's name with its parameters beside it."""
    task, params = arguments["task"], arguments["task_params"]
    if isinstance(task, TaskSpec) and params:
        raise InputError(f"give task parameters ({', '.join(params)}) in the TaskSpec, not beside it")
    given = {f.name: arguments[f.name] for f in dataclasses.fields(RestorerSettings) if f.name in arguments}
    given["solver_overrides"] = dict(given.get("solver_overrides") or {})
    return RestorerSettings(**{**given, "task": task if isinstance(task, TaskSpec) else TaskSpec(task, **params)})
