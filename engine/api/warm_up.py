"""What a Restorer readies before its first solve, where that needs the solver's plan: the graphs
its rounds load (exported ahead when the engine opens, and listed by `ilo export --dry-run`), the
trial steps that probe what a row costs, and from that cost how many rows one call may take."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

import torch

from ilo.engine.api.encoder_engine import EngineEncoder
from ilo.engine.api.pictures import Pictures
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.losses import LPIPS
from ilo.engine.runtimes.backends import check_device
from ilo.engine.runtimes.bridge import ahead_makers
from ilo.engine.runtimes.engine import Engine, exports_graphs, open_engine
from ilo.engine.runtimes.memory_budget import MemoryBudget, RowCost, RowCosts, row_cost_key
from ilo.engine.runtimes.memory_estimate import check_held_fits, check_step_fits, estimated_row_cost
from ilo.engine.solver.encoder import LatentEncoder, encoder_bundle
from ilo.engine.solver.ilo_solver import ILOConfig, fused_rounds, last_round
from ilo.export.artifacts import Bundle
from ilo.export.graphs import LossHead
from ilo.generators.staged import StagedGenerator

# runs trial steps: (a batch of blank measurements, the trial config) -> None
TrialRun = Callable[[list[Prepared], ILOConfig], None]


def trial_config(config: ILOConfig) -> ILOConfig:
    """One step of every round, one start, one member: what a warm-up and a probe run."""
    return dataclasses.replace(config, steps=1, restarts=1, prune_starts_at=[], ensemble=1)


class EngineSettings(Protocol):
    """What of a RestorerSettings the warm-up reads (restorer.py imports this module, not the
    reverse)."""

    backend: str
    device: str
    config: ILOConfig | None  # None: a single pass, which runs the torch model
    lpips_net: str
    lpips_backbone: str | Path | None
    memory_budget: str


class WarmUp:
    """The engine of one Restorer's solves and what readies it: `model` on the settings' device
    for `pictures`' task, with its learned start's `encoder` (or None). `fingerprint` names the
    model in the row costs' keys; `run` solves the probe's trial batches. The caller holds its
    lock around every call."""

    def __init__(
        self,
        model: StagedGenerator,
        pictures: Pictures,
        settings: EngineSettings,
        encoder: LatentEncoder | None,
        quiet: bool,
        fingerprint: Callable[[], str],
        run: TrialRun,
    ):
        self.model, self.pictures, self.settings, self.encoder = model, pictures, settings, encoder
        self.quiet = quiet  # else a cold cache's exports are told on stderr
        self.device, self.budget = settings.device, MemoryBudget.parse(settings.memory_budget)
        self.fingerprint, self.run, self.costs = fingerprint, run, RowCosts()
        self.engine: Engine | None = None

    def warm(self, progress: Callable | None, trial: bool) -> None:
        """Open the engine (nothing more where it is open) and find the row cost: probed by trial
        steps of every round, or found cached. With `trial`, where the probe ran no step, one
        step of each round on a blank input, so every graph a solve uses is loaded."""
        if self.engine is not None:
            return
        self.opened(progress)
        config = self.settings.config
        if config is None:  # a single pass: no rounds to probe
            return
        self.max_rows(config, 1)
        if trial and not self.costs.probed:
            self.run([self.pictures.blank()], trial_config(config))

    def preflight(self) -> RowCost | None:
        """Refuse at once what the shapes already say cannot fit (see Restorer.preflight); else
        one image's step's estimated cost (None where nothing is optimised or the budget is off)."""
        device, config = check_device(self.device), self.settings.config
        members, restarts = (1, 1) if config is None else (config.ensemble, config.restarts)
        check_held_fits(self.model, members, restarts, device)
        if config is None or self.budget.off:
            return None
        return check_step_fits(self.model, self.budget, device)

    def opened(self, progress: Callable | None = None) -> Engine:
        """The engine the solves run on (see runtimes/engine.py), opened on first use once the
        preflight passes, with the bundles this plan loads exported ahead."""
        if self.engine is None:
            self.preflight()
            self.engine = self._open(progress)
        return self.engine

    def _open(self, progress: Callable | None) -> Engine:
        config = self.settings.config
        gen = self.model.to(self.device)
        lpips = self._lpips(config)
        lpips = None if lpips is None else lpips.to(self.device)
        if self.encoder is not None:  # the module, on the device: what runs where the engine does not
            self.encoder.to(self.device)
        if config is None:  # a single pass: nothing to export
            return self._with_encoder(Engine(gen, lpips))
        if progress is None and not self.quiet:
            progress = _say_export
        steps = self.fused_steps(config)
        chained = self.chained(config, steps)
        encoder = None if self.encoder is None else partial(EngineEncoder, self.encoder, progress=progress)
        bundles = partial(ahead_makers, steps=steps, lpips=lpips, chained=chained, extra=self._encoder_makers())
        engine = open_engine(gen, lpips, self.settings.backend, self.device, bundles, progress, encoder)
        return self._with_encoder(engine)

    def _with_encoder(self, engine: Engine) -> Engine:
        """The engine with what computes the learned starts: its own graph where it has one, else
        the module (the learned start runs on torch too, like everything else)."""
        return engine if engine.encoder is not None else dataclasses.replace(engine, encoder=self.encoder)

    def export_plan(self) -> list[Bundle]:
        """The bundles a solve loads from the cache (see Restorer.export_plan)."""
        config = self.settings.config
        if config is None or not exports_graphs(self.settings.backend, self.device, self.model.family):
            return []
        steps = self.fused_steps(config)
        chained = self.chained(config, steps)
        makers = ahead_makers(self.model, steps, self._lpips(config), chained, self._encoder_makers())
        return [make() for make in makers]

    def max_rows(self, config: ILOConfig, images: int) -> int | None:
        """The most rows (images x ensemble members x batched starts) one generator call may
        take within the memory budget and the engine's own limit, or None where the whole batch
        fits. Not even one row fitting the budget is refused here, with the numbers, before
        anything runs."""
        engine = self.opened()
        limit = engine.max_rows
        if not self.budget.off:
            device = torch.device(self.device)
            rounds = {
                "end_stage": config.end_stage,
                "noise_maps": config.noise_maps,
                "lpips": bool(config.lpips_weight),
                "latent_space": config.latent_space,
            }
            key = row_cost_key(
                self.fingerprint(), engine.description, device, self.pictures.task, rounds, engine.versions
            )
            trial = trial_config(config)

            def steps(rows: int) -> None:
                self.run([self.pictures.blank(f"memory-probe-{i}") for i in range(rows)], trial)

            cost = self.costs.cost(key, steps, device, estimated_row_cost(self.model))
            rows = self.budget.rows(cost, device, engine.description)
            limit = rows if limit is None else min(limit, rows)
        return None if limit is None or limit >= images * config.ensemble * config.restarts else limit

    def fused_steps(self, config: ILOConfig) -> list[tuple[int, LossHead, int]]:
        """(round, loss head, optimised noise maps) of the fused step graphs a solve of this
        task with `config` runs."""
        blank = self.pictures.blank()
        resolution = self.model.resolution
        op = self.pictures.operator([blank])
        plan = fused_rounds(op, blank.y, len(self.model.stages), len(self.model.noise_shapes), config)
        heads = [(k, fit.loss_head(resolution), n) for k, fit, n in plan]
        return [(k, head, n) for k, head, n in heads if head is not None]

    def chained(self, config: ILOConfig, steps: list) -> bool:
        """Whether some round runs the chained stage graphs: its operator has no loss head."""
        return not config.lpips_weight and len(steps) < last_round(config, len(self.model.stages)) + 1

    def _lpips(self, config: ILOConfig | None) -> LPIPS | None:
        if config is None or not config.lpips_weight:
            return None
        return LPIPS(self.settings.lpips_net, self.settings.lpips_backbone)

    def _encoder_makers(self) -> list[Callable]:
        """The encoder's bundle, where the solve starts from one (exported with the rest)."""
        return [] if self.encoder is None else [partial(encoder_bundle, self.encoder)]


def _say_export(i: int, n: int, name: str) -> None:
    print(f"export (first use, cached after): {i + 1}/{n} {name}", file=sys.stderr, flush=True)
