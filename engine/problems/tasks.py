"""Restoration tasks as the command line names them: which parameters each takes, the operator
they describe, and how a clean image is degraded reproducibly (per-image seeds come from the
image's name, so a result does not depend on which batch, or which resumed run, the image
landed in). What a task is, with its parameters as a small dataclass, is its row of
`TASK_KINDS` (`ilo.engine.problems.task_kinds`); `TaskSpec` is the one front users and the
engine hold: a task's name and its parameters."""

from __future__ import annotations

import dataclasses

import torch

from ilo.choices import CS_MATRICES, TASKS  # noqa: F401  (re-exported)
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.task_kinds import (  # noqa: F401  (TaskKind, DENSE_MATRIX_SHARE: re-exported)
    DENSE_MATRIX_SHARE,
    TASK_KINDS,
    TaskKind,
    TaskParams,
    every_parameter,
    kind_named,
    name_seed,
    owner_of,
)
from ilo.errors import InputError


class TaskSpec:
    """A task and its parameters: `TaskSpec("sr", factor=2)`, `TaskSpec("denoise", sigma=0.05)`.

    The keywords are the task's own parameters (`TASK_KINDS[task].params`) and the ones every
    task takes (sigma, op_seed); another task's parameter is refused rather than ignored. Any
    task's parameter reads as an attribute: this task's value, or another task's default."""

    task: str
    params: TaskParams

    def __init__(self, task: str, **params):
        kind = kind_named(task)
        known = every_parameter()
        for name in params:
            if name not in known:
                raise TypeError(f"TaskSpec() got an unexpected keyword argument '{name}'")
            owner = owner_of(name)
            if owner is not None and owner != task:
                raise InputError(f"{name} belongs to task {owner}, not {task}")
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "params", kind.params(**params))

    def __setattr__(self, name: str, value) -> None:
        # a parameter set after the fact is checked like one given to the constructor and changes
        # what the task builds; the task itself is fixed (another task has other parameters)
        if name not in every_parameter():
            raise AttributeError(f"a TaskSpec's {name} cannot be set: make a new TaskSpec")
        given = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        rebuilt = TaskSpec(self.task, **{**given, name: value})
        object.__setattr__(self, "params", rebuilt.params)

    def __getattr__(self, name: str):
        # only reached for names that are not attributes: a task parameter, read as described
        if name.startswith("_") or "params" not in self.__dict__:
            raise AttributeError(name)
        described = self.describe()
        if name not in described:
            raise AttributeError(f"'TaskSpec' object has no attribute '{name}'")
        value = described[name]
        return tuple(value) if isinstance(value, list) else value

    def __eq__(self, other) -> bool:
        return isinstance(other, TaskSpec) and (self.task, self.params) == (other.task, other.params)

    def __repr__(self) -> str:
        given = ", ".join(f"{f.name}={getattr(self.params, f.name)!r}" for f in dataclasses.fields(self.params))
        return f"TaskSpec({self.task!r}, {given})"

    @property
    def kind(self) -> TaskKind:
        return TASK_KINDS[self.task]

    @property
    def has_built_in_mask(self) -> bool:
        return self.params.has_built_in_mask

    def measurement_size(self, resolution: int) -> int:
        """Side of the image a camera delivers for this task (the low-resolution one for sr)."""
        return self.params.measurement_size(resolution)

    def measurement_count(self, resolution: int) -> int:
        """m, the number of compressed-sensing measurements of one image."""
        return self.params.measurement_count(resolution)

    def matrix_bytes(self, resolution: int) -> int:
        """What the operator's own matrix holds (float32): dense Gaussian CS's m x n, else 0."""
        return self.params.matrix_bytes(resolution)

    def check_matrix_fits(self, resolution: int) -> None:
        """Refuse an operator matrix too large for this machine before it is drawn. Checked where
        a run's readers are made, before either draws one."""
        self.params.check_fits(resolution)

    def built_in_mask(self, resolution: int, name: str) -> torch.Tensor:
        """The [1, H, W] mask that --centre-box / --box / --keep describe for image `name`."""
        return self.params.built_in_mask(resolution, name)

    def step_key(self) -> dict:
        """What of the task changes what a solver step holds: the operator's kind and the
        parameters its row names (`step_shape`), not a mask or a noise level. Every key names a
        factor (None but for sr), as keys cached on disk always have."""
        return {"task": self.task, "factor": None, **self.params.step_shape()}

    def operator(self, resolution: int, masks: torch.Tensor | None = None) -> Operator:
        """The forward operator for a batch; `masks` [B, 1, H, W] for inpainting."""
        return self.params.operator(resolution, masks)

    def measure(self, op: Operator, clean: torch.Tensor, names: list[str]) -> torch.Tensor:
        """y = A(x) + noise with each image's noise drawn from its own name-seeded stream."""
        ys = []
        for i, name in enumerate(names):
            single = op.select(slice(i, i + 1))
            g = torch.Generator().manual_seed(name_seed(self.params.op_seed + 1, name))
            ys.append(single.measure(clean[i : i + 1], g))
        return torch.cat(ys)

    def describe(self) -> dict:
        """The task for records: every task's parameters, another task's at its default. Run
        folders have always recorded this whole set, so a folder begun earlier resumes."""
        own = dataclasses.asdict(self.params)
        values = {"task": self.task, **{k: own.get(k, v) for k, v in every_parameter().items()}}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
