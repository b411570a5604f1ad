"""What a restore writes for each image (the restored PNG, the strip, the measurements it was
given, the loss plot) and its metrics; `ilo degrade` writes measurements the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ilo.atomic import atomic_path
from ilo.engine.runs.figures import loss_chart, require_matplotlib, save_png as save_chart
from ilo.engine.inputs.image_files import save_png, to_uint8
from ilo.engine.inputs.measurements import Prepared
from ilo.engine.problems.losses import LPIPS
from ilo.engine.problems.metrics import restoration_metrics
from ilo.engine.problems.tasks import TaskSpec
from ilo.errors import IloError


class ResultWriter:
    """The files of one restored image in an output folder, and its metrics against a truth."""

    def __init__(
        self,
        root: Path,
        task: TaskSpec,
        resolution: int,
        save_degraded: bool = False,
        save_strip: bool = False,
        lpips_metric: LPIPS | None = None,
        save_loss_plot: bool = False,
    ):
        self.root, self.task, self.res = root, task, resolution
        self.save_degraded, self.save_strip, self.lpips_metric = save_degraded, save_strip, lpips_metric
        self.save_loss_plot = save_loss_plot
        if save_loss_plot:  # before any image is solved, not after the first one's work
            require_matplotlib()

    def paths(self, stem: str) -> list[Path]:
        paths = [self.root / f"{stem}.png"]
        if self.save_degraded:
            paths += degraded_paths(self.root, stem, self.task)
        if self.save_strip:
            paths.append(self.root / f"{stem}.strip.png")
        if self.save_loss_plot:  # one of the image's outputs: a resumed run redoes an image that lacks it
            paths.append(self.root / f"{stem}.loss.png")
        return paths

    def metrics(self, restored: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None) -> dict:
        values = {k: float(v[0]) for k, v in restoration_metrics(restored, truth, mask).items()}
        if self.lpips_metric is not None:
            with torch.no_grad():
                values["lpips"] = float(self.lpips_metric(restored.clamp(-1, 1), truth)[0])
        return values

    def write(self, b: Prepared, restored: torch.Tensor, loss_curves: list[list[float]] | None = None) -> None:
        """Each file atomically; the record the Restorer writes after these marks the image done.
        `loss_curves`: the image's total loss per round and step, for the loss plot."""
        if self.save_loss_plot and loss_curves is None:  # before any of the image's files
            raise IloError(f"{b.stem}: the solver returned no loss curves for the loss plot")
        if self.save_degraded:
            write_degraded(self.root, b.stem, self.task, b.y, b.mask)
        if self.save_strip:
            panels = [p for p in (degraded_view(self.task, b.y, self.res), restored, b.truth) if p is not None]
            save_png(self.root / f"{b.stem}.strip.png", np.concatenate(list(to_uint8(torch.cat(panels))), axis=1))
        if self.save_loss_plot:
            with atomic_path(self.root / f"{b.stem}.loss.png") as tmp:
                save_chart(loss_plot(b.stem, loss_curves), tmp)
        save_png(self.root / f"{b.stem}.png", to_uint8(restored)[0])


def output_intact(path: Path) -> bool:
    """Whether a finished output still reads back whole. Each is written atomically, so a
    damaged one was cut short or changed from outside (a failed copy, a full disk while syncing)
    after its record was written: a resumed run must not count it as done."""
    from PIL import Image

    try:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as im:
                im.load()
    except Exception:  # whatever the decoder says, the file is not the one that was written
        return False
    return True


def loss_plot(name: str, loss_curves: list[list[float]]):
    """One image's total loss at every step, the rounds one after another and each round's
    first step marked, so what moving on to the next layer did to the loss shows."""
    return loss_chart(
        {"total loss": loss_curves}, f"{name}: loss per step", "total loss (log scale)", "step (all rounds)"
    )


def degraded_paths(root: Path, stem: str, task: TaskSpec, tag: str = ".degraded") -> list[Path]:
    """Where the measurements of one image go: `ilo degrade` writes `<stem>.png` (tag ''),
    `ilo restore --save-degraded` writes `<stem>.degraded.png` beside the restored image."""
    if task.kind.vector_measurements:
        return [root / f"{stem}{tag}.npy"]
    return [root / f"{stem}{tag}.png"] + ([root / "masks" / f"{stem}.png"] if task.kind.takes_masks else [])


def write_degraded(
    root: Path, stem: str, task: TaskSpec, y: torch.Tensor, mask: torch.Tensor | None, tag: str = ".degraded"
) -> list[Path]:
    """The measurements as files a later `ilo restore` reads back: the degraded image (and the
    mask, black = missing, under masks/), or a .npy of CS measurements."""
    paths = degraded_paths(root, stem, task, tag)
    if task.kind.vector_measurements:
        with atomic_path(paths[0]) as tmp, open(tmp, "wb") as f:
            np.save(f, y[0].numpy().astype(np.float32))
        return paths
    save_png(paths[0], to_uint8(y)[0])
    if mask is not None:
        save_png(paths[1], np.repeat((mask[0, 0].numpy() * 255).astype(np.uint8)[..., None], 3, axis=2))
    return paths


def degraded_view(task: TaskSpec, y: torch.Tensor, res: int) -> torch.Tensor | None:
    """The measurements shown at the generator's size (None for CS, which has no picture)."""
    if task.kind.vector_measurements:
        return None
    if y.shape[-1] != res:
        return F.interpolate(y, size=(res, res), mode="nearest")
    return y
