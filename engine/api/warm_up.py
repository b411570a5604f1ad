"""What a Restorer readies before its first solve, where that needs the solver's plan: the graphs
its rounds load (exported ahead when the engine opens, and listed by `ilo export --dry-run`), the
trial steps that probe what a row costs, and from that cost how many rows one call may take."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from functools import partial

import torch

from ilo.engine.api.encoder_engine import EngineEncoder
from ilo.engine.api.pictures import Pictures
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.losses import LPIPS
from ilo.engine.runtimes.bridge import ahead_makers
from ilo.engine.runtimes.engine import Engine, exports_graphs, open_engine
from ilo.engine.runtimes.memory_budget import MemoryBudget, RowCosts, row_cost_key
from ilo.engine.runtimes.memory_estimate import estimated_row_cost
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


class WarmUp:
    """The plan of one Restorer's solves: `model` on `device` for `pictures`' task, with its
    learned start's `encoder` (or None), with the LPIPS loss `lpips` makes where the config
    weighs it, within the memory `budget`."""

    def __init__(
        self,
        model: StagedGenerator,
        pictures: Pictures,
        device: str,
        lpips: Callable[[], LPIPS],
        encoder: LatentEncoder | None,
        budget: MemoryBudget,
    ):
        self.model, self.pictures, self.device, self.make_lpips = model, pictures, device, lpips
        self.encoder, self.budget, self.costs = encoder, budget, RowCosts()

    def open(self, backend: str, config: ILOConfig | None, progress: Callable | None, quiet: bool) -> Engine:
        """The engine the solves run on (see runtimes/engine.py), with the bundles this plan
        loads exported ahead; a single pass (`config` None) runs the torch model."""
        gen = self.model.to(self.device)
        lpips = self._lpips(config)
        lpips = None if lpips is None else lpips.to(self.device)
        if self.encoder is not None:  # the module, on the device: what runs where the engine does not
            self.encoder.to(self.device)
        if config is None:  # a single pass: nothing to export
            return Engine(gen, lpips)
        if progress is None and not quiet:
            progress = _say_export
        steps = self.fused_steps(config)
        chained = self.chained(config, steps)
        encoder = None if self.encoder is None else partial(EngineEncoder, self.encoder, progress=progress)
        bundles = partial(ahead_makers, steps=steps, lpips=lpips, chained=chained, extra=self._encoder_makers())
        return open_engine(gen, lpips, backend, self.device, bundles, progress, encoder)

    def export_plan(self, backend: str, config: ILOConfig | None) -> list[Bundle]:
        """The bundles a solve loads from the cache (named, nothing built or exported), in the
        order a warm-up exports them: [] where the backend runs the graph functions itself."""
        if config is None or not exports_graphs(backend, self.device, self.model.family):
            return []
        steps = self.fused_steps(config)
        chained = self.chained(config, steps)
        makers = ahead_makers(self.model, steps, self._lpips(config), chained, self._encoder_makers())
        return [make() for make in makers]

    def max_rows(self, config: ILOConfig, images: int, engine: Engine, model: str, run: TrialRun) -> int | None:
        """The most rows (images x ensemble members x batched starts) one generator call may
        take within the memory budget and the engine's own limit, or None where the whole batch
        fits. Not even one row fitting the budget is refused here, with the numbers, before
        anything runs. `model`: the model's fingerprint; `run` runs the probe's trial steps."""
        limit = engine.max_rows
        if not self.budget.off:
            device = torch.device(self.device)
            rounds = {
                "end_stage": config.end_stage,
                "noise_maps": config.noise_maps,
                "lpips": bool(config.lpips_weight),
                "latent_space": config.latent_space,
            }
            key = row_cost_key(model, engine.description, device, self.pictures.task, rounds, engine.versions)
            trial = trial_config(config)

            def steps(rows: int) -> None:
                run([self.pictures.blank(f"memory-probe-{i}") for i in range(rows)], trial)

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
        return self.make_lpips() if config is not None and config.lpips_weight else None

    def _encoder_makers(self) -> list[Callable]:
        """The encoder's bundle, where the solve starts from one (exported with the rest)."""
        return [] if self.encoder is None else [partial(encoder_bundle, self.encoder)]


def _say_export(i: int, n: int, name: str) -> None:
    print(f"export (first use, cached after): {i + 1}/{n} {name}", file=sys.stderr, flush=True)
