"""One prepared batch solved, the two ways a method can: a single pass (BM3D, the encoder's
guess), or the generator's search on the engine. Either way the operator goes to the solve's
device and back to the CPU whatever happens (it may be the Restorer's shared one, or a caller's
physics), and each image's result is scored by its fit to its measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ilo.engine.api.results import BatchResult
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec, name_seed
from ilo.engine.runtimes.engine import Engine
from ilo.engine.solver.encoder import LatentEncoder, learned_starts
from ilo.engine.solver.ilo_solver import ILOConfig, solve
from ilo.generators.staged import StagedGenerator

# a one-pass method's solve: (its encoder or None, operator, measurements, model, task) ->
# (images [B, 3, H, W] on the CPU, seconds)
OnePass = Callable[..., tuple[torch.Tensor, float]]


@dataclass(frozen=True)
class SolveJob:
    """A batch to solve and everything its solve reads."""

    prepared: list[Prepared]
    op: Operator  # what measured it, on the CPU between solves
    task: TaskSpec
    model: StagedGenerator  # the torch model: shapes, and what a single pass runs
    engine: Engine  # what the search runs on
    device: str
    seed: int  # with each image's name, its random starts' seed
    config: ILOConfig | None  # None: a single pass
    encoder: LatentEncoder | None = None  # the learned start's module (a single pass runs it), or None
    progress: Callable | None = None
    max_rows: int | None = None  # the most rows one generator call may take; None: the whole batch
    on_round: Callable | None = None  # the solver's on_round(k, first, images) after each round, or None
    note: Callable[[str], None] | None = None  # a line of progress for work outside the search, or None

    @property
    def y(self) -> torch.Tensor:
        return torch.cat([b.y for b in self.prepared])


def one_pass_batch(job: SolveJob, one_pass: OnePass) -> BatchResult:
    """The job's batch restored in one pass: nothing optimised, so no rounds and no loss curves."""
    encoder = None if job.encoder is None else job.encoder.to(job.device)
    y = job.y
    try:
        images, seconds = one_pass(encoder, job.op.to(job.device), y.to(job.device), job.model, job.task)
    finally:
        job.op.cpu()
    return _scored(job, y, images, seconds, best_round=[None] * len(job.prepared))


def searched_batch(job: SolveJob) -> BatchResult:
    """The job's batch restored by the generator's search (ILO, CSGM, PULSE-style), each image from
    random starts seeded by its name, or from its learned start."""
    y, op, device, engine = job.y, job.op, job.device, job.engine
    try:
        t0 = time.perf_counter()
        y_here = y.to(device)  # y itself stays on the CPU, with the operator after the solve
        op.to(device)
        starts = None if engine.encoder is None else learned_starts(engine.encoder, op, y_here, job.model)
        result = solve(
            y_here,
            op,
            engine.generator,
            job.config,
            image_seeds=[name_seed(job.seed, b.stem) for b in job.prepared],
            lpips=engine.lpips,
            progress=job.progress,
            max_rows=job.max_rows,
            starts=starts,
            on_round=job.on_round,
        )
        seconds = time.perf_counter() - t0
    finally:
        op.cpu()
    rounds = [c.cpu() for c in result.loss_curves]  # [steps, B] each
    held_out = result.held_out
    return _scored(
        job,
        y,
        result.images.cpu(),
        seconds,
        best_round=[int(r) for r in result.best_round],
        loss_curves=[[c[:, i].tolist() for c in rounds] for i in range(len(job.prepared))],
        held_out_loss=[float(v) for v in result.best_loss] if held_out else None,
        member_rounds=None if result.member_rounds is None else result.member_rounds.tolist(),
        member_held_out_loss=result.member_loss.tolist() if result.member_loss is not None and held_out else None,
    )


def _scored(job: SolveJob, y: torch.Tensor, images: torch.Tensor, seconds: float, **per_image) -> BatchResult:
    with torch.no_grad():
        fit = job.op.data_fit(images, y)
    return BatchResult(images, [float(v) for v in fit], seconds=seconds, **per_image)
