"""Restoring files: inputs -> measurements -> solver -> restored PNGs, records and metric tables.

Two kinds of input. Degraded images (the default) are what a camera delivered: the holed
image plus its mask, the low-resolution image, the noisy image, or a `.npy` of CS measurements
from `ilo degrade`. Clean images (`clean_inputs`) are degraded here, reproducibly per image
name, and then serve as the ground truth for the metrics.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ilo.engine.baselines import bm3d_denoise
from ilo.engine.image_io import IMAGE_SUFFIXES, fit_mask, fit_to, read_image, read_mask
from ilo.engine.images import save_png, to_uint8
from ilo.engine.losses import LPIPS, measurement_mse
from ilo.engine.metrics import restoration_metrics
from ilo.engine.operators import Inpainting, Operator
from ilo.engine.progress import Progress
from ilo.engine.run_dir import RunDir
from ilo.engine.solver import ILOConfig, csgm_config, pulse_config, solve
from ilo.engine.tasks import TaskSpec, name_seed
from ilo.atomic import atomic_path
from ilo.errors import IloError, InputError
from ilo.export.staged import StagedGenerator

METHODS = ("ilo", "csgm", "pulse", "bm3d")


def method_config(method: str, **overrides) -> ILOConfig | None:
    """The solver settings of a method, with the caller's overrides (None for BM3D)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if method == "ilo":
        return ILOConfig(**overrides)
    if method == "csgm":
        return csgm_config(**overrides)
    if method == "pulse":
        return pulse_config(**overrides)
    if method == "bm3d":
        if overrides:
            raise InputError(f"BM3D takes no solver settings (got {', '.join(sorted(overrides))})")
        return None
    raise InputError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")


@dataclass
class RestoreOptions:
    task: TaskSpec
    method: str = "ilo"
    config: ILOConfig | None = None  # None: the method's defaults
    fit: str | None = None
    clean_inputs: bool = False
    mask: Path | None = None  # one mask for every image
    mask_dir: Path | None = None  # per image, same stem
    truth_dir: Path | None = None  # ground truths for the metrics of degraded inputs
    batch_size: int = 8
    seed: int = 0
    save_degraded: bool = False
    save_strip: bool = False
    overwrite: bool = False
    lpips_metric: LPIPS | None = None
    show_progress: bool = True
    device: str = "cpu"  # where the solver runs; inputs are read and outputs written on the CPU
    backend: str = "torch"  # what runs the generator (recorded per image)
    extra_settings: dict = field(default_factory=dict)  # e.g. the model's identity, for resume checks

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if self.method == "bm3d" and self.task.task != "denoise":
            raise InputError("BM3D is a denoiser: use it with --task denoise")
        if self.config is None:
            self.config = method_config(self.method)
        if self.mask is not None and self.mask_dir is not None:
            raise InputError("give --mask or --mask-dir, not both")
        if self.task.task != "inpaint" and (self.mask or self.mask_dir):
            raise InputError("--mask / --mask-dir belong to --task inpaint")


@dataclass
class Prepared:
    """One image's measurements and what the outputs need."""

    stem: str
    y: torch.Tensor  # [1, ...] measurements
    mask: torch.Tensor | None  # [1, 1, H, W] for inpainting
    truth: torch.Tensor | None  # [1, 3, H, W] in [-1, 1]


class Restorer:
    """Turn input files into restored outputs in one folder, resumably."""

    def __init__(self, gen: StagedGenerator, options: RestoreOptions, out: Path, loss_lpips: LPIPS | None = None):
        self.gen, self.options, self.res = gen, options, gen.resolution
        self.loss_lpips = loss_lpips
        self.run_dir = RunDir(out)
        self.task = options.task
        self.cs_op = self.task.operator(self.res) if self.task.task == "cs" else None

    # --- inputs -------------------------------------------------------------------------------

    def prepare(self, path: Path) -> Prepared:
        o, stem = self.options, path.stem
        if self.task.task == "cs" and not o.clean_inputs:
            return Prepared(stem, self._read_cs_measurements(path), None, self._truth(stem))
        image = read_image(path)
        if o.clean_inputs:
            clean, valid = fit_to(image, self.res, o.fit, str(path))
            mask = self._mask(path, image, valid)
            op = self.task.operator(self.res, mask) if mask is not None else self._shared_operator()
            y = self.task.measure(op, clean[None], [stem])
            return Prepared(stem, y, mask, clean[None])
        size = self.task.measurement_size(self.res)
        seen, valid = fit_to(image, size, o.fit, str(path))
        mask = self._mask(path, image, valid)
        y = seen[None] * mask if mask is not None else seen[None]  # whatever is in a hole is unknown
        return Prepared(stem, y, mask, self._truth(stem))

    def _shared_operator(self) -> Operator:
        return self.cs_op if self.cs_op is not None else self.task.operator(self.res)

    def _mask(self, path: Path, image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        if self.task.task != "inpaint":
            return None
        o = self.options
        source = o.mask if o.mask is not None else _find_by_stem(o.mask_dir, path.stem, "mask") if o.mask_dir else None
        if source is not None:
            mask = read_mask(source)
            if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
                raise InputError(
                    f"{path}: the mask {source} is {mask.shape[2]}x{mask.shape[1]} "
                    f"but the image is {image.shape[2]}x{image.shape[1]}"
                )
            mask = fit_mask(mask, self.res, o.fit, str(source))
        else:
            mask = self.task.built_in_mask(self.res, path.stem)
        return (mask * valid)[None]  # padding invented by --fit pad is unobserved

    def _truth(self, stem: str) -> torch.Tensor | None:
        if self.options.truth_dir is None:
            return None
        path = _find_by_stem(self.options.truth_dir, stem, "ground truth")
        truth, _ = fit_to(read_image(path), self.res, self.options.fit, str(path))
        return truth[None]

    def _read_cs_measurements(self, path: Path) -> torch.Tensor:
        if path.suffix != ".npy":
            raise InputError(f"{path}: compressed-sensing input must be a .npy of measurements (from `ilo degrade`), or pass --clean")
        try:
            y = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{path}: unreadable measurements ({e})") from None
        y = torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(1, -1)
        if y.shape[1] != self.cs_op.m:
            raise InputError(f"{path}: holds {y.shape[1]} measurements but --ratio {self.task.ratio} at {self.res}px means {self.cs_op.m}")
        return y

    # --- the run ------------------------------------------------------------------------------

    def outputs(self, stem: str) -> list[Path]:
        root = self.run_dir.root
        paths = [root / f"{stem}.png"]
        if self.options.save_degraded:
            paths += degraded_paths(root, stem, self.task)
        if self.options.save_strip:
            paths.append(root / f"{stem}.strip.png")
        return paths

    def settings(self) -> dict:
        o = self.options
        return {
            "task": self.task.describe(), "method": o.method,
            "solver": dataclasses.asdict(o.config) if o.config is not None else None,
            "fit": o.fit, "clean_inputs": o.clean_inputs, "seed": o.seed,
            "mask": str(o.mask) if o.mask else None, "mask_dir": str(o.mask_dir) if o.mask_dir else None,
            **o.extra_settings,
        }  # fmt: skip

    def run(self, inputs: list[Path]) -> dict:
        """Restore every input not already finished; returns a summary."""
        settings = self.settings()
        self.run_dir.check(settings, self.options.overwrite)
        pending = [p for p in inputs if self.options.overwrite or not self.run_dir.finished(p.stem, self.outputs(p.stem))]
        for path in pending:  # check every input before writing or spending time on any
            self.prepare(path)
        self.run_dir.start(settings, self.options.overwrite)
        progress = Progress(len(pending), "restore", enabled=self.options.show_progress)
        done = 0
        try:
            for start in range(0, len(pending), self.options.batch_size):
                batch = [self.prepare(p) for p in pending[start : start + self.options.batch_size]]
                paths = pending[start : start + len(batch)]
                self._restore_batch(batch, paths, progress)
                done += len(batch)
                progress.advance(len(batch))
        except IloError as e:
            raise IloError(f"{e}; {done} image(s) of this run finished and are kept in {self.run_dir.root}, rerun to resume") from e
        finally:
            records = self.run_dir.records()
            if records:
                self.run_dir.write_tables(records)
        return {"restored": done, "skipped": len(inputs) - len(pending), "records": len(records)}

    def _restore_batch(self, batch: list[Prepared], paths: list[Path], progress: Progress) -> None:
        o = self.options
        y = torch.cat([b.y for b in batch])
        masks = torch.cat([b.mask for b in batch]) if batch[0].mask is not None else None
        op = self.task.operator(self.res, masks) if masks is not None else self._shared_operator()
        seeds = [name_seed(o.seed, b.stem) for b in batch]
        if o.method == "bm3d":
            images, seconds = bm3d_denoise(y, self.task.sigma)
            best_round = [None] * len(batch)
        else:
            def report(k, step, steps, measured):
                progress.note(f"round {k} step {step + 1}/{steps} loss {float(measured.mean()):.3g}")

            # Operator.to moves in place; the CPU operator is still needed for the outputs
            device_op = op if torch.device(o.device).type == "cpu" else copy.deepcopy(op).to(o.device)
            result = solve(y.to(o.device), device_op, self.gen, o.config, image_seeds=seeds, lpips=self.loss_lpips, progress=report)
            images, seconds = result.images.cpu(), result.seconds["total"]
            best_round = [int(r) for r in result.best_round]
        with torch.no_grad():
            fit = measurement_mse(op, images, y)
        for i, (b, path) in enumerate(zip(batch, paths)):
            record = {
                "name": b.stem, "input": str(path), "output": f"{b.stem}.png", "task": self.task.task,
                "method": o.method, "measurement_mse": float(fit[i]), "best_round": best_round[i],
                "seconds": seconds / len(batch), "batch_size": len(batch), "backend": o.backend, "device": o.device,
            }  # fmt: skip
            if b.truth is not None:
                record.update(self._metrics(images[i : i + 1], b.truth, b.mask))
            self._write_outputs(b, images[i : i + 1], op)
            self.run_dir.write_record(b.stem, record)

    def _metrics(self, restored, truth, mask) -> dict:
        op = Inpainting(mask) if mask is not None else None
        values = {k: float(v[0]) for k, v in restoration_metrics(restored, truth, op).items()}
        if self.options.lpips_metric is not None:
            with torch.no_grad():
                values["lpips"] = float(self.options.lpips_metric(restored.clamp(-1, 1), truth)[0])
        return values

    def _write_outputs(self, b: Prepared, restored: torch.Tensor, op: Operator) -> None:
        root = self.run_dir.root
        if self.options.save_degraded:
            write_degraded(root, b.stem, self.task, b.y, b.mask)
        if self.options.save_strip:
            panels = [p for p in (degraded_view(self.task, b.y, self.res), restored, b.truth) if p is not None]
            save_png(root / f"{b.stem}.strip.png", np.concatenate(list(to_uint8(torch.cat(panels))), axis=1))
        save_png(root / f"{b.stem}.png", to_uint8(restored)[0])


def _find_by_stem(folder: Path, stem: str, what: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise InputError(f"no {what} for '{stem}' in {folder} (expected {folder / (stem + '.png')})")


# --- degraded files (shared with `ilo degrade`) ------------------------------------------------


def degraded_paths(root: Path, stem: str, task: TaskSpec, tag: str = ".degraded") -> list[Path]:
    """Where the measurements of one image go: `ilo degrade` writes `<stem>.png` (tag ''),
    `ilo restore --save-degraded` writes `<stem>.degraded.png` beside the restored image."""
    if task.task == "cs":
        return [root / f"{stem}{tag}.npy"]
    return [root / f"{stem}{tag}.png"] + ([root / "masks" / f"{stem}.png"] if task.task == "inpaint" else [])


def write_degraded(root: Path, stem: str, task: TaskSpec, y: torch.Tensor, mask: torch.Tensor | None,
                   tag: str = ".degraded") -> list[Path]:  # fmt: skip
    """The measurements as files a later `ilo restore` reads back: the degraded image (and the
    mask, black = missing, under masks/), or a .npy of CS measurements."""
    paths = degraded_paths(root, stem, task, tag)
    if task.task == "cs":
        with atomic_path(paths[0]) as tmp, open(tmp, "wb") as f:
            np.save(f, y[0].numpy().astype(np.float32))
        return paths
    save_png(paths[0], to_uint8(y)[0])
    if mask is not None:
        save_png(paths[1], np.repeat((mask[0, 0].numpy() * 255).astype(np.uint8)[..., None], 3, axis=2))
    return paths


def degraded_view(task: TaskSpec, y: torch.Tensor, res: int) -> torch.Tensor | None:
    """The measurements shown at the generator's size (None for CS, which has no picture)."""
    if task.task == "cs":
        return None
    if y.shape[-1] != res:
        return F.interpolate(y, size=(res, res), mode="nearest")
    return y
