"""What run folders, Ray batch outputs and the service record of a Restorer: its task, method,
solver settings, seed, model, engine and learned start. A run folder compares what it recorded
with what a resumed run describes, so an entry changes only with what the solve does."""

from __future__ import annotations

import dataclasses

from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.solver.encoder import LatentEncoder
from ilo.engine.solver.ilo_solver import ILOConfig
from ilo.generators.staged import state_fingerprint

ADDED_LATER = {"ensemble": 1}  # solver settings newer than run folders in use, at their neutral values


def described(
    task: TaskSpec,
    method: str,
    config: ILOConfig | None,
    seed: int,
    model: str,
    engine: str,
    device: str,
    encoder: LatentEncoder | None,
) -> dict:
    """The record; `model` is the model's fingerprint, `engine` the engine's description."""
    solver = None
    if config is not None:  # a setting added later is left out at its neutral value, so a run
        # folder written before it existed resumes (its recorded settings still match)
        solver = {k: v for k, v in dataclasses.asdict(config).items() if ADDED_LATER.get(k, object()) != v}
    record = {
        "task": task.describe(),
        "method": method,
        "solver": solver,
        "seed": seed,
        "model": model,
        "backend": engine,
        "device": device,
    }
    if encoder is not None:  # only where there is one: run folders from before learned starts still resume
        record["encoder"] = state_fingerprint(encoder, "encoder")
    return record
