"""`ilo.Restorer`: the one object a pipeline holds. Built once (model loaded, graphs exported or
found in the cache, sessions made), then `restore(images, masks)` as often as wanted, from any
thread. `ilo restore`, its Ray Data actors and the Ray Serve replicas all solve through it.

An image's result depends on its name, never on its batch: each image's random starts are
seeded from (seed, name), as on the command line, where the name is the file's stem. Images
handed over without a name are named by their content, so the same picture gives the same
result on every call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from ilo.choices import DEFAULT_MAX_PIXELS, DEFAULT_METHOD
from ilo.engine.api.batch_solve import Batch
from ilo.engine.api.learned_start import find_encoder, settled
from ilo.engine.api.methods import method as method_named
from ilo.engine.api.pictures import Pictures, physics_measurements
from ilo.engine.api.results import BatchResult, Restored, restored_images
from ilo.engine.api.warm_up import WarmUp, trial_config
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.losses import LPIPS
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.runtimes.backends import check_device
from ilo.engine.runtimes.engine import Engine
from ilo.engine.runtimes.memory_budget import MemoryBudget, RowCost
from ilo.engine.runtimes.memory_estimate import check_held_fits, check_step_fits
from ilo.engine.solver.ilo_solver import ILOConfig
from ilo.errors import InputError
from ilo.export.artifacts import Bundle
from ilo.generators.staged import StagedGenerator, state_fingerprint

ADDED_LATER = {"ensemble": 1}  # solver settings newer than run folders in use, at their neutral values


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
    fit: str | None = None  # for pictures handed over in memory: crop, resize, pad or refuse (None)
    max_pixels: int = DEFAULT_MAX_PIXELS
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

    def learned_default(self) -> bool:
        """Whether the method takes the model's own encoder, where it has one, without being asked."""
        return self.encoder is None and method_named(self.method).learned_start_by_default


class Restorer:
    """Restore images by ILO (or CSGM, PULSE-style, BM3D) over one generator, for one task.

    >>> r = ilo.Restorer(task="inpaint", centre_box=0.5)        # the embedded 64px face DCGAN
    >>> [out] = r.restore([holed_picture])                      # PIL, numpy, tensor, bytes, path
    >>> out.to_pil().save("restored.png"); out.measurement_mse

    `task_params` are the task's parameters (factor, sigma, ratio, cs_matrix, centre_box, box,
    keep, op_seed). `encoder` (None: the method's default; 'auto', 'none' or a file) and `fast`
    choose the learned start and its schedule (see RestorerSettings). `warm=False` defers
    loading the engine to the first solve (or `warm()`).
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
        warm: bool = True,
        quiet: bool = True,
        settings: RestorerSettings | None = None,
        **task_params,
    ):
        settings = settings if settings is not None else _settings_from(locals())
        from ilo.generators.checkpoints.files import load_generator

        self.quiet, self.method, self.task = quiet, method_named(settings.method), settings.task
        self.model = settings.model if isinstance(settings.model, StagedGenerator) else load_generator(settings.model)
        self.resolution = self.model.resolution
        self._pictures = Pictures(self.task, self.resolution, settings.fit, settings.max_pixels)
        self._lock = threading.Lock()  # one solve at a time: the engine's sessions and buffers are shared
        self._engine: Engine | None = None
        self._fingerprint: str | None = None
        self.memory_budget = MemoryBudget.parse(settings.memory_budget)
        self._encoder = find_encoder(settings, self.model, self.fingerprint, quiet)
        self.settings = settled(settings, self._encoder)
        lpips = partial(LPIPS, settings.lpips_net, settings.lpips_backbone)
        self._warm_up = WarmUp(self.model, self._pictures, settings.device, lpips, self._encoder, self.memory_budget)
        self._row_costs = self._warm_up.costs.known  # by key: what benchmarks/memory.py reports
        if warm:
            self.warm()

    def warm(self, progress: Callable[[int, int, str], None] | None = None, trial: bool = True) -> Restorer:
        """Build what the solver runs (export graphs on first use, or load them from the cache)
        and, with `trial`, run one step of each round on a blank input, so every graph a solve
        uses is exported and its session made before the first real request."""
        with self._lock:
            if self._engine is not None:
                return self
            self._open(progress)
        config = self.settings.config
        if config is None:  # a single pass: no rounds to probe
            return self
        with self._lock:  # the row cost: measured here (trial steps of every round) or found in the cache
            self._max_rows(config, 1)
            probed = self._warm_up.costs.probed
        if trial and not probed:
            self.solve([self._pictures.blank()], config=trial_config(config))
        return self

    def export_plan(self) -> list[Bundle]:
        """The bundles a solve loads from the cache (named, nothing built or exported), in the
        order a warm-up exports them: [] where the backend runs the graph functions itself."""
        return self._warm_up.export_plan(self.settings.backend, self.settings.config)

    def preflight(self) -> RowCost | None:
        """Refuse at once, before minutes of export, a dense CS matrix or one image's step that
        the shapes already say cannot fit in the memory there is; else the step's estimated
        cost (None where nothing is optimised or the budget is off)."""
        device = check_device(self.settings.device)
        config = self.settings.config
        check_held_fits(
            self.model, 1 if config is None else config.ensemble, 1 if config is None else config.restarts, device
        )
        if not self.method.optimises or self.memory_budget.off:
            return None
        return check_step_fits(self.model, self.memory_budget, device)

    def restore(self, images, masks=None, names: Sequence[str] | None = None) -> list[Restored]:
        """Restore degraded pictures: what the camera gave for this task (the holed image, the
        low-resolution one, the noisy one; for `cs`, a vector of m measurements each). One
        picture or a sequence (a [B, 3, H, W] tensor counts as B). `masks` (inpainting; 1 or
        white = observed) pair with the images; without them the task's built-in mask is used.
        All of them are solved as one batch."""
        prepared = self.prepare(images, masks, names)
        return restored_images(prepared, self.solve(prepared))

    def prepare(
        self, images, masks=None, names: Sequence[str] | None = None, labels: Sequence[str] | None = None
    ) -> list[Prepared]:
        """Pictures (and masks) as checked measurements; each bad one is a one-line InputError
        that starts with its label (default: its name, or 'image i')."""
        return self._pictures.prepare(images, masks, names, labels)

    def solve(self, batch: list[Prepared], progress=None, config: ILOConfig | None = None) -> BatchResult:
        """Solve prepared measurements as one batch (what every caller ends in)."""
        return self._solve(batch, progress, config or self.settings.config)

    def reconstruct(self, y: torch.Tensor, physics, names: Sequence[str] | None = None) -> torch.Tensor:
        """Restore from measurements y of a deepinv physics (or one of this project's linear
        operators), in deepinv's convention: y = A(x) + noise for images x in [0, 1]. Returns
        [B, 3, H, W] in [0, 1]. The physics replaces the Restorer's task for this call; each
        image is named (and so seeded) by its measurements, as in `restore`."""
        if not self.method.takes_physics:
            raise InputError(
                f"{self.method.label} takes no physics here: use deepinv.models.BM3D, or method 'ilo', "
                "'csgm' or 'pulse'"
            )
        batch, op, home = physics_measurements(y, physics, self.resolution, names)
        try:  # the row cost measured for the Restorer's task: the generator dominates what a step holds
            result = self._solve(batch, None, self.settings.config, op)
        finally:
            op.to(home)
        return ((result.images.clamp(-1, 1) + 1) / 2).to(y.device)

    def _solve(self, batch: list[Prepared], progress, config: ILOConfig | None, op: Operator | None = None):
        """The one path every solve takes: under the lock, the engine opened if it is not yet,
        the batch split to fit the memory budget, solved by the method. `op`: a physics'
        operator in place of the task's."""
        with self._lock:
            if self._engine is None:
                self._open(None)
            max_rows = None if config is None else self._max_rows(config, len(batch))
            return self._run(batch, progress, config, max_rows, op)

    def _run(self, batch, progress, config, max_rows: int | None = None, op: Operator | None = None) -> BatchResult:
        assert self._engine is not None, "opened by solve() or warm()"
        s = self.settings
        op = op if op is not None else self._pictures.operator(batch)
        args = (batch, op, self.task, self.model, self._engine, s.device, s.seed, config, self._encoder, progress)
        return self.method.solve(Batch(*args, max_rows))

    def _open(self, progress) -> None:
        self.preflight()
        self._engine = self._warm_up.open(self.settings.backend, self.settings.config, progress, self.quiet)

    def _max_rows(self, config: ILOConfig, images: int) -> int | None:
        assert self._engine is not None, "opened by solve() or warm()"

        def trial(blanks: list[Prepared], trial_config: ILOConfig) -> None:
            self._run(blanks, None, trial_config)

        return self._warm_up.max_rows(config, images, self._engine, self.fingerprint(), trial)

    def shared_operator(self) -> Operator:
        return self._pictures.shared_operator()

    def fingerprint(self) -> str:
        """The model's identity, hashed once: /healthz asks for it on every probe."""
        if self._fingerprint is None:
            self._fingerprint = self.model.fingerprint()
        return self._fingerprint

    @property
    def backend_name(self) -> str:
        return "not loaded" if self._engine is None else self._engine.description

    def describe(self) -> dict:
        s = self.settings
        solver = None
        if s.config is not None:  # a setting added later is left out at its neutral value, so a run
            # folder written before it existed resumes (its recorded settings still match)
            solver = {k: v for k, v in dataclasses.asdict(s.config).items() if ADDED_LATER.get(k, object()) != v}
        described = {
            "task": self.task.describe(),
            "method": s.method,
            "solver": solver,
            "seed": s.seed,
            "model": self.fingerprint(),
            "backend": self.backend_name,
            "device": s.device,
        }
        if self._encoder is not None:  # only where there is one: run folders from before learned starts still resume
            described["encoder"] = state_fingerprint(self._encoder, "encoder")
        return described

    # what tests read of the engine: its generator and loss, its learned start, its step graphs
    @property
    def _solver(self) -> tuple | None:
        return None if self._engine is None else (self._engine.generator, self._engine.lpips)

    @property
    def _start_encoder(self) -> Callable | None:
        engine = self._engine
        return self._encoder if engine is None or engine.encoder is None else engine.encoder

    def _fused_steps(self, config: ILOConfig) -> list:
        return self._warm_up.fused_steps(config)


def _settings_from(arguments: dict) -> RestorerSettings:
    """The settings a Restorer's arguments give: each argument named as a settings field is that
    field; the task is a TaskSpec, or a task's name with its parameters beside it."""
    task, params = arguments["task"], arguments["task_params"]
    if isinstance(task, TaskSpec) and params:
        raise InputError(f"give task parameters ({', '.join(params)}) in the TaskSpec, not beside it")
    spec = task if isinstance(task, TaskSpec) else TaskSpec(task, **params)
    fields = {f.name for f in dataclasses.fields(RestorerSettings)}
    return RestorerSettings(**{**{k: v for k, v in arguments.items() if k in fields}, "task": spec})
