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
import io
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ilo.choices import DEFAULT_MAX_PIXELS, DEFAULT_METHOD
from ilo.engine.inputs.in_memory import picture_pixels, vector_digest
from ilo.engine.inputs.measurements import InputSpec, MeasurementReader, Prepared
from ilo.engine.runtimes.memory_budget import (
    GiB,
    MemoryBudget,
    MemoryBudgetError,
    RowCost,
    available_memory,
    cached_row_cost,
    measure_row_cost,
)
from ilo.engine.api.methods import method as method_named
from ilo.engine.runtimes.memory_estimate import estimated_row_cost, held_bytes
from ilo.engine.problems.losses import LPIPS
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec, name_seed
from ilo.engine.solver.encoder import learned_starts
from ilo.engine.solver.generator_view import GeneratorView
from ilo.engine.solver.ilo_solver import (
    ILOConfig,
    fused_rounds,
    last_round,
    solve,
)
from ilo.errors import IloError, InputError
from ilo.export.artifacts import Bundle
from ilo.export.graphs import LossHead
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


@dataclass
class BatchResult:
    """One solve of a batch: images [B, 3, H, W] in [-1, 1] on the CPU, and per image the
    measurement fit, the round its result came from and its loss curves (per round, the total
    loss at each step; None where nothing was optimised, as for BM3D)."""

    images: torch.Tensor
    measurement_mse: list[float]
    best_round: list[int | None]
    seconds: float  # the whole batch's solve
    loss_curves: list[list[list[float]]] | None = None  # [image][round][step]
    # with config.hold_out: the returned iterate's loss on the held-out measurements (an
    # ensemble's: the mean of its members', each on its own held-out share)
    held_out_loss: list[float] | None = None
    # an ensemble (config.ensemble > 1), per image: each member's best round and (with
    # hold_out) held-out loss; best_round, the l1 radius and the loss curves are member 0's
    member_rounds: list[list[int]] | None = None
    member_held_out_loss: list[list[float]] | None = None


@dataclass(frozen=True)
class Restored:
    """One restored image and what the solve knows about it."""

    name: str
    tensor: torch.Tensor  # [3, H, W] float32 in [0, 1]
    measurement_mse: float
    best_round: int | None
    seconds: float  # this image's share of its batch's solve
    batch_size: int
    held_out_loss: float | None = None  # with config.hold_out: what chose this iterate (an ensemble: the members' mean)
    member_rounds: list[int] | None = None  # an ensemble: each member's round (best_round is member 0's)
    member_held_out_loss: list[float] | None = None  # an ensemble with config.hold_out: each member's

    def to_numpy(self) -> np.ndarray:
        """[H, W, 3] uint8."""
        return (self.tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def to_pil(self):
        from PIL import Image

        return Image.fromarray(self.to_numpy())

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.to_pil().save(buffer, format="PNG")
        return buffer.getvalue()

    def metrics(self) -> dict:
        optional = {
            "held_out_loss": self.held_out_loss,
            "member_rounds": self.member_rounds,
            "member_held_out_loss": self.member_held_out_loss,
        }
        return {
            "name": self.name,
            "measurement_mse": self.measurement_mse,
            "best_round": self.best_round,
            "seconds": self.seconds,
            "batch_size": self.batch_size,
            **{k: v for k, v in optional.items() if v is not None},
        }


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
        if settings is None:
            spec = task if isinstance(task, TaskSpec) else TaskSpec(task, **task_params)
            if isinstance(task, TaskSpec) and task_params:
                raise InputError(f"give task parameters ({', '.join(task_params)}) in the TaskSpec, not beside it")
            settings = RestorerSettings(
                model,
                spec,
                method,
                backend,
                device,
                config,
                seed,
                fit,
                max_pixels,
                lpips_net,
                lpips_backbone,
                memory_budget,
                encoder,
                fast,
            )
        from ilo.generators.checkpoints.files import load_generator

        self.settings, self.quiet = settings, quiet
        self.method = method_named(settings.method)
        self.task: TaskSpec = settings.task
        self.model = settings.model if isinstance(settings.model, StagedGenerator) else load_generator(settings.model)
        self.resolution = self.model.resolution
        # pictures handed to restore(): the task's own size, or fitted as the settings say
        self._reader = MeasurementReader(
            InputSpec(self.task, fit=settings.fit, max_pixels=settings.max_pixels), self.resolution
        )
        self._lock = threading.Lock()  # one solve at a time: the engine's sessions and buffers are shared
        self._solver: tuple[GeneratorView, LPIPS | None] | None = None
        self.backend_name = "not loaded"
        self._fingerprint: str | None = None
        self.memory_budget = MemoryBudget.parse(settings.memory_budget)
        self._encoder = self._find_encoder(settings)
        self._start_encoder: Callable | None = None  # what computes the starts: the engine's graph, or the module
        if settings.config is None:  # the method's schedule, from the learned start where there is one
            learned = self._encoder is not None
            config = method_config(settings.method, learned=learned, fast=settings.fast, **settings.solver_overrides)
            settings = dataclasses.replace(settings, config=config, solver_overrides={}, fast=False)
        if settings.encoder is None:  # decided here, once: a Ray actor or Serve replica built from these
            # settings uses this encoder (or refuses where its machine lacks it), never its own choice
            settings = dataclasses.replace(settings, encoder="none" if self._encoder is None else "auto")
        self.settings = settings
        self._row_costs: dict[str, RowCost] = {}
        self._probed_now = False
        if warm:
            self.warm()

    def _find_encoder(self, settings: RestorerSettings):
        """The encoder the settings name (see RestorerSettings.encoder), or None."""
        from ilo.engine.solver.encoder_cache import model_encoder

        if settings.encoder == "none" or (settings.encoder is None and not settings.learned_default()):
            return None
        if settings.encoder is None or settings.encoder == "auto":  # cached by `ilo export --encoder`, or shipped
            encoder = model_encoder(self.model, self.fingerprint())
            if encoder is None and settings.encoder == "auto":
                raise InputError(
                    "this model has no encoder yet: train one with `ilo export --model MODEL --encoder` "
                    "(cached for later runs), or leave out --encoder"
                )
            if encoder is None and not self.quiet and not settings.fast:  # once a run (--fast is refused instead)
                print(
                    "ilo: note: this model has no encoder, so round 0 searches from random starts (slower than "
                    "from a learned start): `ilo export --model MODEL --encoder` trains one, once (cached for "
                    "later runs)",
                    file=sys.stderr,
                )
            return encoder
        from ilo.engine.solver.encoder_files import load_encoder  # refused here, by name, where not this model's

        return load_encoder(Path(settings.encoder), self.fingerprint())

    # --- building ---------------------------------------------------------------------------

    def warm(self, progress: Callable[[int, int, str], None] | None = None, trial: bool = True) -> Restorer:
        """Build what the solver runs (export graphs on first use, or load them from the cache)
        and, with `trial`, run one step of each round on a blank input, so every graph a solve
        uses is exported and its session made before the first real request."""
        with self._lock:
            if self._solver is not None:
                return self
            self._solver = self._build(progress)
        s = self.settings
        if s.config is None:  # a single pass: no rounds to probe
            return self
        with self._lock:  # the row cost: measured here (trial steps of every round) or found in the cache
            self._max_rows(s.config, 1)
            probed = self._probed_now
        if trial and not probed:
            self.solve([self._blank()], config=self._trial_config(s.config))
        return self

    @staticmethod
    def _trial_config(config: ILOConfig) -> ILOConfig:
        return dataclasses.replace(config, steps=1, restarts=1, prune_starts_at=[], ensemble=1)

    def _max_rows(self, config: ILOConfig, images: int) -> int | None:
        """The most rows (images x ensemble members x batched starts) one generator call may
        take within the memory budget and the backend's own limit (TensorRT's batch profile),
        or None where the whole batch fits. Not even one row fitting the budget is refused
        here, with the numbers, before anything runs."""
        self._probed_now = False
        if not self.method.optimises:
            return None
        backend = getattr(self._solver[0], "backend", None) if self._solver is not None else None
        limit: int | None = getattr(backend, "max_rows", None)
        if not self.memory_budget.off:
            device = torch.device(self.settings.device)
            rows = self.memory_budget.rows(self._row_cost(config, device), device, self.backend_name)
            limit = rows if limit is None else min(limit, rows)
        return None if limit is None or limit >= images * config.ensemble * config.restarts else limit

    def _row_cost(self, config: ILOConfig, device: torch.device) -> RowCost:
        """What a row costs for this model, engine, task and round structure (cached on disk)."""
        import onnxruntime

        key = {
            "model": self.fingerprint(),
            "backend": self.backend_name,
            "device": str(device),
            # the operator's kind, not its mask or noise level: those do not change what a step holds
            "task": self.task.task,
            "factor": self.task.factor if self.task.task == "sr" else None,
            "end_stage": config.end_stage,
            "noise_maps": config.noise_maps,
            "lpips": bool(config.lpips_weight),
            "latent_space": config.latent_space,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        }
        name = str(sorted(key.items()))
        if name not in self._row_costs:
            trial = self._trial_config(config)

            def run(rows: int) -> None:
                self._solve_locked([self._blank(f"memory-probe-{i}") for i in range(rows)], None, trial, None)
                self._probed_now = True

            estimate = estimated_row_cost(self.model)
            self._row_costs[name] = cached_row_cost(key, lambda: measure_row_cost(run, device, estimate))
        return self._row_costs[name]

    def export_plan(self) -> list[Bundle]:
        """The bundles a solve loads from the cache (named, nothing built or exported), in the
        order a warm-up exports them: [] where the backend runs the graph functions itself."""
        from ilo.engine.runtimes.backends import auto_backend_name, get_backend
        from ilo.engine.runtimes.bridge import ahead_makers

        s = self.settings
        if s.config is None or s.backend == "torch":
            return []
        name = auto_backend_name(s.device, self.model.family) if s.backend == "auto" else s.backend
        if get_backend(name, s.device).runs_functions:
            return []
        lpips = LPIPS(s.lpips_net, s.lpips_backbone) if s.config.lpips_weight else None
        steps = self._fused_steps(s.config)
        chained = self._chained(s.config, steps)
        return [make() for make in ahead_makers(self.model, steps, lpips, chained, self._encoder_makers())]

    def _encoder_makers(self) -> list[Callable]:
        """The encoder's bundle, where the solve starts from one (exported with the rest)."""
        from functools import partial

        from ilo.engine.solver.encoder import encoder_bundle

        return [] if self._encoder is None else [partial(encoder_bundle, self._encoder)]

    def _fused_steps(self, config: ILOConfig) -> list[tuple[int, LossHead, int]]:
        """(round, loss head, optimised noise maps) of the fused step graphs a solve of this
        task with `config` runs."""
        blank = self._blank()
        op = (
            self.task.operator(self.resolution, blank.mask)
            if blank.mask is not None
            else self._reader.shared_operator()
        )
        plan = fused_rounds(op, blank.y, len(self.model.stages), len(self.model.noise_shapes), config)
        heads = [(k, fit.loss_head(self.resolution), n) for k, fit, n in plan]
        return [(k, head, n) for k, head, n in heads if head is not None]

    def _chained(self, config: ILOConfig, steps: list) -> bool:
        """Whether some round runs the chained stage graphs: its operator has no loss head."""
        return not config.lpips_weight and len(steps) < last_round(config, len(self.model.stages)) + 1

    def _blank(self, name: str = "warm-up") -> Prepared:
        """A measurement of the task's shape (all observed) for the warm-up solve."""
        if self.task.kind.vector_measurements:
            return Prepared(name, torch.zeros(1, self.task.measurement_count(self.resolution)), None, None)
        size = self.task.measurement_size(self.resolution)
        mask = torch.ones(1, 1, self.resolution, self.resolution) if self.task.kind.takes_masks else None
        return Prepared(name, torch.zeros(1, 3, size, size), mask, None)

    def fingerprint(self) -> str:
        """The model's identity, hashed once: /healthz asks for it on every probe."""
        if self._fingerprint is None:
            self._fingerprint = self.model.fingerprint()
        return self._fingerprint

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

    def _build(self, progress) -> tuple[GeneratorView, LPIPS | None]:
        """The generator (and LPIPS loss) the solver runs: exported graphs on a backend, or torch.
        `auto` takes the kernels (StyleGAN2 on a GPU, library built) or onnxruntime and falls back
        to torch, with a note, where the graphs cannot be exported or run; a backend named
        explicitly must work or this fails."""
        from ilo.engine.runtimes.backends import auto_backend_name, check_device, get_backend
        from ilo.engine.runtimes.bridge import EngineGenerator, EngineLPIPS, export_ahead, frozen

        s = self.settings
        check_device(s.device)  # here, where it is used: a Ray driver may build one for GPUs it does not have
        self.preflight()
        gen = self.model.to(s.device)
        lpips = None
        if s.config is not None and s.config.lpips_weight:
            lpips = LPIPS(s.lpips_net, s.lpips_backbone).to(s.device)
        if self._encoder is not None:  # the module, on the device; an engine replaces it below
            self._start_encoder = self._encoder.to(s.device)
        if not self.method.optimises or s.backend == "torch":  # a single pass: nothing to export
            self.backend_name = "torch"
            return gen, lpips
        if progress is None and not self.quiet:

            def progress(i, n, name):
                print(f"export (first use, cached after): {i + 1}/{n} {name}", file=sys.stderr, flush=True)

        try:
            name = auto_backend_name(s.device, gen.family) if s.backend == "auto" else s.backend
            backend = get_backend(name, s.device)
            gen = frozen(gen)  # once: export_ahead and the engine would each copy a trainable model
            if s.config is not None:  # what the solve loads, exported side by side on a cold cache
                steps = self._fused_steps(s.config)
                export_ahead(
                    gen,
                    backend,
                    steps,
                    lpips,
                    progress=progress,
                    chained=self._chained(s.config, steps),
                    extra=self._encoder_makers(),
                )
            engine = EngineGenerator(gen, backend, progress=progress)
            if self._encoder is not None:
                from ilo.engine.api.encoder_engine import EngineEncoder

                self._start_encoder = EngineEncoder(self._encoder, backend, progress)
            engine_lpips = lpips if lpips is None else EngineLPIPS(lpips, gen.resolution, backend, progress=progress)
        except IloError as e:
            if s.backend != "auto":
                raise
            print(f"ilo: note: running on torch: the engine is unavailable ({e})", file=sys.stderr)
            self.backend_name = "torch"
            if self._encoder is not None:  # the learned start on torch too, like everything else
                self._start_encoder = self._encoder.to(s.device)
            return gen, lpips
        self.backend_name = engine.backend.describe()
        return engine, engine_lpips

    def preflight(self) -> RowCost | None:
        """Refuse at once, before minutes of export, a dense CS matrix or one image's step that
        the shapes already say cannot fit in the memory there is; else the step's estimated
        cost (None where nothing is optimised or the budget is off)."""
        from ilo.engine.runtimes.backends import check_device

        check_device(self.settings.device)
        device = torch.device(self.settings.device)
        self._check_held_rows(device)
        if not self.method.optimises or self.memory_budget.off:
            return None
        cost = estimated_row_cost(self.model)
        where = f"{self.model.family} {self.resolution}² (estimated from its shapes, before exporting anything)"
        self.memory_budget.rows(cost, device, where, estimated=True)
        return cost

    def _check_held_rows(self, device: torch.device) -> None:
        """Every ensemble member and random start of an image is held to the end (a budget's
        micro-batches do not shrink that): --ensemble or --restarts of 10^8 is refused here,
        before it allocates or runs for days."""
        config = self.settings.config
        members, restarts = getattr(config, "ensemble", 1), getattr(config, "restarts", 1)
        if members * restarts <= 1:
            return
        try:
            free, what = available_memory(device)
        except IloError:  # the platform cannot tell: nothing to check against
            return
        held = held_bytes(self.model, members, restarts)
        if held > free:
            flags = " with ".join(
                f"--{name} {n}" for name, n in (("ensemble", members), ("restarts", restarts)) if n > 1
            )
            raise MemoryBudgetError(
                f"{flags} holds at least {held / GiB:,.1f} GiB per image (its members' measurements and "
                f"results, its starts' latents), more than the {free / GiB:.1f} GiB {what}"
            )

    # --- restoring --------------------------------------------------------------------------

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
        images = _as_list(images)
        if self.task.kind.vector_measurements and len(images) == 1 and np.ndim(images[0]) == 2:
            images = list(images[0])  # [B, m]: B vectors of measurements
        masks = _as_list(masks) if masks is not None else [None] * len(images)
        if not images:
            raise InputError("no images to restore")
        if len(masks) != len(images):
            raise InputError(f"{len(masks)} masks for {len(images)} images")
        if names is not None and len(names) != len(images):
            raise InputError(f"{len(names)} names for {len(images)} images")
        if any(m is not None for m in masks) and not self.task.kind.takes_masks:
            raise InputError(f"masks belong to the inpaint task, not {self.task.task}")
        reader, prepared = self._reader, []
        for i, (image, mask) in enumerate(zip(images, masks)):
            label = labels[i] if labels is not None else names[i] if names is not None else f"image {i}"
            if reader.task.kind.vector_measurements:
                if not isinstance(image, (np.ndarray, torch.Tensor, list, tuple)):
                    raise InputError(
                        f"{label}: compressed sensing takes a vector of measurements (array or tensor), "
                        f"not a {type(image).__name__}"
                    )
                digest = vector_digest(image)
                name = names[i] if names is not None else f"image-{digest[:16]}"
                prepared.append(reader.from_vector(name, image, label, digest))
                continue
            pixels, digest = picture_pixels(
                image, label, max_pixels=self.settings.max_pixels, fit=(self.settings.fit, reader.input_size())
            )
            mask_pixels = None
            if mask is not None:
                mask_pixels, _ = picture_pixels(
                    mask,
                    f"the mask of {label}",
                    mask=True,
                    max_pixels=self.settings.max_pixels,
                    fit=(self.settings.fit, self.resolution) if self.settings.fit else None,
                )
            name = names[i] if names is not None else f"image-{digest[:16]}"
            prepared.append(reader.from_pixels(name, pixels, mask_pixels, digests={"input": digest}))
        return prepared

    def solve(self, batch: list[Prepared], progress=None, config: ILOConfig | None = None) -> BatchResult:
        """Solve prepared measurements as one batch (what every caller ends in)."""
        config = config or self.settings.config
        with self._lock:
            if self._solver is None:
                self._solver = self._build(None)
            max_rows = None if config is None else self._max_rows(config, len(batch))
            return self._solve_locked(batch, progress, config, max_rows)

    def _solve_locked(
        self,
        batch: list[Prepared],
        progress,
        config: ILOConfig | None,
        max_rows: int | None,
        op: Operator | None = None,
    ) -> BatchResult:
        """`op`: the operator to solve with (a deepinv physics' one); None: the task's."""
        s = self.settings
        y = torch.cat([b.y for b in batch])
        masks = [b.mask for b in batch]
        seeds = [name_seed(s.seed, b.stem) for b in batch]
        if op is None and masks[0] is not None:
            op = self.task.operator(self.resolution, torch.cat(masks))  # type: ignore[arg-type]
        elif op is None:
            op = self._reader.shared_operator()
        assert self._solver is not None, "built by solve() or warm()"
        gen, lpips = self._solver
        if self.method.one_pass is not None:
            encoder = None if self._encoder is None else self._encoder.to(s.device)
            try:  # the operator may be the shared one: it goes back to the CPU whatever happens
                images, seconds = self.method.one_pass(encoder, op.to(s.device), y.to(s.device), self.model, self.task)
            finally:
                op.cpu()
            best_round: list[int | None] = [None] * len(batch)
            curves = held_out = member_rounds = member_held_out = None
        else:
            try:  # the operator may be the shared one: it goes back to the CPU whatever happens
                t0 = time.perf_counter()
                y_here = y.to(s.device)  # y itself stays on the CPU, with the operator after the solve
                op.to(s.device)
                starts = None
                if self._start_encoder is not None:
                    starts = learned_starts(self._start_encoder, op, y_here, self.model)
                result = solve(
                    y_here,
                    op,
                    gen,
                    config,
                    image_seeds=seeds,
                    lpips=lpips,
                    progress=progress,
                    max_rows=max_rows,
                    starts=starts,
                )
                seconds = time.perf_counter() - t0
            finally:
                op.cpu()
            images, best_round = result.images.cpu(), [int(r) for r in result.best_round]
            rounds = [c.cpu() for c in result.loss_curves]  # [steps, B] each
            curves = [[c[:, i].tolist() for c in rounds] for i in range(len(batch))]
            held_out = [float(v) for v in result.best_loss] if result.held_out else None
            member_rounds = None if result.member_rounds is None else result.member_rounds.tolist()
            member_held_out = (
                result.member_loss.tolist() if result.member_loss is not None and result.held_out else None
            )
        with torch.no_grad():
            fit = op.data_fit(images, y)
        return BatchResult(
            images, [float(v) for v in fit], best_round, seconds, curves, held_out, member_rounds, member_held_out
        )

    def shared_operator(self) -> Operator:
        return self._reader.shared_operator()

    def reconstruct(self, y: torch.Tensor, physics, names: Sequence[str] | None = None) -> torch.Tensor:
        """Restore from measurements y of a deepinv physics (or one of this project's linear
        operators), in deepinv's convention: y = A(x) + noise for images x in [0, 1]. Returns
        [B, 3, H, W] in [0, 1]. The physics replaces the Restorer's task for this call; each
        image is named (and so seeded) by its measurements, as in `restore`."""
        from ilo.engine.problems.deepinv_physics import generator_measurements, operator_from_physics

        if not self.method.takes_physics:
            raise InputError(
                f"{self.method.label} takes no physics here: use deepinv.models.BM3D, or method 'ilo', "
                "'csgm' or 'pulse'"
            )
        if not isinstance(y, torch.Tensor) or y.ndim < 2:
            raise InputError(f"y must be a batch of measurements, a tensor [B, ...], got {type(y).__name__}")
        if not torch.isfinite(y).all():
            raise InputError("the measurements contain NaN or inf values")
        shape = (3, self.resolution, self.resolution)
        op = operator_from_physics(physics, shape)
        # the solve moves the operator (and so a wrapped physics, the caller's) to the solver's
        # device and back to the CPU: it goes home afterwards
        home = next((t.device for t in op.buffers()), torch.device("cpu"))
        y_gen = generator_measurements(y.detach().float().to(home), op, shape).cpu()
        if names is None:
            names = [f"image-{vector_digest(row)[:16]}" for row in y_gen]
        elif len(names) != len(y_gen):
            raise InputError(f"{len(names)} names for {len(y_gen)} measurements")
        batch = [Prepared(name, row[None], None, None) for name, row in zip(names, y_gen)]
        config = self.settings.config
        with self._lock:
            if self._solver is None:
                self._solver = self._build(None)
            # the row cost measured for the Restorer's task: the generator dominates what a step holds
            max_rows = None if config is None else self._max_rows(config, len(batch))
            try:
                result = self._solve_locked(batch, None, config, max_rows, op=op)
            finally:
                op.to(home)
        return ((result.images.clamp(-1, 1) + 1) / 2).to(y.device)


def restored_images(prepared: list[Prepared], result: BatchResult) -> list[Restored]:
    """A solved batch as one `Restored` per image, pixels in [0, 1]."""
    n = len(prepared)

    def of(values: list | None, i: int):
        return None if values is None else values[i]

    return [
        Restored(
            p.stem,
            (result.images[i].clamp(-1, 1) + 1) / 2,
            result.measurement_mse[i],
            result.best_round[i],
            result.seconds / n,
            n,
            of(result.held_out_loss, i),
            of(result.member_rounds, i),
            of(result.member_held_out_loss, i),
        )
        for i, p in enumerate(prepared)
    ]


def _as_list(items) -> list:
    """One picture or several: a batched tensor or array ([B, ...] beyond a picture's rank)
    counts as B pictures."""
    if isinstance(items, torch.Tensor) and items.dim() == 4:
        return list(items)
    if isinstance(items, np.ndarray) and items.ndim == 4:
        return list(items)
    if isinstance(items, (list, tuple)):
        return list(items)
    return [items]
