"""What a caller hands a `Restorer`, as checked measurements: pictures in memory (PIL, numpy,
tensors, bytes, paths) with their masks, vectors of compressed-sensing measurements, or a
DeepInverse physics' measurements. Each bad input is a one-line InputError naming it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from ilo.engine.inputs.in_memory import picture_pixels, vector_digest
from ilo.engine.inputs.measurements import InputSpec, MeasurementReader, Prepared
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.errors import InputError


class Pictures:
    """Reads what a caller hands over for one input specification and generator: the task's own
    size, or fitted as `spec.fit` says (crop, resize, pad; None: refused), at most
    `spec.max_pixels` pixels each."""

    def __init__(self, spec: InputSpec, resolution: int):
        self.task: TaskSpec = spec.task
        self.resolution, self.fit, self.max_pixels = resolution, spec.fit, spec.max_pixels
        self.reader = MeasurementReader(spec, resolution)

    def shared_operator(self) -> Operator:
        return self.reader.shared_operator()

    def operator(self, batch: list[Prepared]) -> Operator:
        """The operator a batch was measured by: the task's with the batch's masks, or the
        shared one (which a solve moves to its device and back)."""
        if batch[0].mask is not None:
            return self.task.operator(self.resolution, torch.cat([b.mask for b in batch]))  # type: ignore[misc]
        return self.reader.shared_operator()

    def blank(self, name: str = "warm-up") -> Prepared:
        """A measurement of the task's shape (all observed), for trial steps."""
        if self.task.kind.vector_measurements:
            return Prepared(name, torch.zeros(1, self.task.measurement_count(self.resolution)), None, None)
        size = self.task.measurement_size(self.resolution)
        mask = torch.ones(1, 1, self.resolution, self.resolution) if self.task.kind.takes_masks else None
        return Prepared(name, torch.zeros(1, 3, size, size), mask, None)

    def prepare(
        self, images, masks=None, names: Sequence[str] | None = None, labels: Sequence[str] | None = None
    ) -> list[Prepared]:
        """Pictures (and masks) as measurements; each bad one is refused with its label
        (default: its name, or 'image i')."""
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
        prepared = []
        for i, (image, mask) in enumerate(zip(images, masks)):
            label = labels[i] if labels is not None else names[i] if names is not None else f"image {i}"
            prepared.append(self._one(image, mask, label, None if names is None else names[i]))
        return prepared

    def _one(self, image, mask, label: str, name: str | None) -> Prepared:
        """One picture (or vector) and its mask; unnamed, it is named by its content."""
        if self.task.kind.vector_measurements:
            if not isinstance(image, (np.ndarray, torch.Tensor, list, tuple)):
                raise InputError(
                    f"{label}: compressed sensing takes a vector of measurements (array or tensor), "
                    f"not a {type(image).__name__}"
                )
            digest = vector_digest(image)
            return self.reader.from_vector(_named(name, digest), image, label, digest)
        fit = (self.fit, self.reader.input_size())
        pixels, digest = picture_pixels(image, label, max_pixels=self.max_pixels, fit=fit)
        mask_pixels = None
        if mask is not None:
            mask_pixels, _ = picture_pixels(
                mask,
                f"the mask of {label}",
                mask=True,
                max_pixels=self.max_pixels,
                fit=(self.fit, self.resolution) if self.fit else None,
            )
        return self.reader.from_pixels(_named(name, digest), pixels, mask_pixels, digests={"input": digest})


def _named(name: str | None, digest: str) -> str:
    return name if name is not None else f"image-{digest[:16]}"


@contextmanager
def physics_measurements(
    y: torch.Tensor, physics, resolution: int, names: Sequence[str] | None = None
) -> Iterator[tuple[list[Prepared], Operator]]:
    """Measurements y of a deepinv physics (or one of this project's linear operators) as a
    batch in the generator's convention, and the operator they were taken by. A solve moves
    the operator (and so a wrapped physics, the caller's) to its device and back to the CPU:
    it goes home when the block ends."""
    from ilo.engine.problems.deepinv_physics import generator_measurements, operator_from_physics

    if not isinstance(y, torch.Tensor) or y.ndim < 2:
        raise InputError(f"y must be a batch of measurements, a tensor [B, ...], got {type(y).__name__}")
    if not torch.isfinite(y).all():
        raise InputError("the measurements contain NaN or inf values")
    shape = (3, resolution, resolution)
    op = operator_from_physics(physics, shape)
    home = next((t.device for t in op.buffers()), torch.device("cpu"))
    y_gen = generator_measurements(y.detach().float().to(home), op, shape).cpu()
    if names is None:
        names = [_named(None, vector_digest(row)) for row in y_gen]
    elif len(names) != len(y_gen):
        raise InputError(f"{len(names)} names for {len(y_gen)} measurements")
    try:
        yield [Prepared(name, row[None], None, None) for name, row in zip(names, y_gen)], op
    finally:
        op.to(home)


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
