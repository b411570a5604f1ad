"""Reading one input into measurements: the image (or `.npy` of CS measurements), its mask and
its ground truth, each checked, fitted to the generator and hashed. `ilo restore` and
`ilo degrade` both prepare their inputs here, so both refuse the same bad files the same way.

Two kinds of input. Degraded images (the default) are what a camera delivered: the holed
image plus its mask, the low-resolution image, the noisy image, or a `.npy` of CS measurements
from `ilo degrade`. Clean images (`clean_inputs`) are degraded here, reproducibly per image
name, and then serve as the ground truth for the metrics.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ilo.engine.inputs.image_files import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    fit_mask,
    fit_to,
    image_tensor,
    mask_tensor,
    read_picture,
)
from ilo.engine.inputs.npy_header import check_npy_count, check_npy_holds
from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.errors import InputError


@dataclass
class Prepared:
    """One image's measurements and what the outputs need."""

    stem: str
    y: torch.Tensor  # [1, ...] measurements
    mask: torch.Tensor | None  # [1, 1, H, W] for inpainting
    truth: torch.Tensor | None  # [1, 3, H, W] in [-1, 1]
    sources: dict[str, str] = field(default_factory=dict)  # role -> SHA-256 of the bytes that were read

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.y, self.mask, self.truth) if t is not None)


@dataclass
class InputFiles:
    """Where a file run finds what goes with each input, and whether its inputs are clean."""

    clean_inputs: bool = False  # degrade them here, and score against them
    mask: Path | None = None  # one mask for every image
    mask_dir: Path | None = None  # per image, same stem
    truth_dir: Path | None = None  # ground truths for the metrics of degraded inputs

    def __post_init__(self):
        if self.mask is not None and self.mask_dir is not None:
            raise InputError("give --mask or --mask-dir, not both")
        if self.clean_inputs and self.truth_dir is not None:
            raise InputError("--clean inputs are their own ground truth: drop --truth-dir (or --clean)")

    @property
    def has_masks(self) -> bool:
        return self.mask is not None or self.mask_dir is not None


@dataclass
class InputSpec:
    """How the inputs of one run are read: the task, how pictures of another size are fitted,
    the largest picture read, and (a file run's) where masks and ground truths are. A run
    through a `Restorer` takes the first three from its settings (`for_settings`), which say
    them once for every way in: files, pictures in memory, requests."""

    task: TaskSpec
    fit: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    files: InputFiles = field(default_factory=InputFiles)

    def __post_init__(self):
        t, files = self.task, self.files
        if not t.kind.takes_masks and files.has_masks:
            raise InputError("--mask / --mask-dir belong to --task inpaint")
        if files.has_masks and t.has_built_in_mask:
            raise InputError(
                "give a mask file (--mask / --mask-dir) or a built-in mask (--centre-box, --box, --keep), not both"
            )
        if self.fit == "pad" and not t.kind.takes_masks:
            raise InputError(
                "--fit pad invents pixels that only inpainting can treat as missing; use --fit crop or resize"
            )
        if self.max_pixels < 1:
            raise InputError(f"--max-pixels must be at least 1, got {self.max_pixels}")

    @classmethod
    def for_settings(cls, settings, files: InputFiles | None = None) -> InputSpec:
        """The inputs of a run through a Restorer of these settings (anything with a task, a fit
        and max_pixels, as `ilo.RestorerSettings` has)."""
        return cls(settings.task, settings.fit, settings.max_pixels, files or InputFiles())


class MeasurementReader:
    """Turns input files into `Prepared` measurements for one task and generator resolution."""

    def __init__(self, spec: InputSpec, resolution: int):
        self.spec, self.task, self.files, self.res = spec, spec.task, spec.files, resolution
        self.task.measurement_size(resolution)  # e.g. a factor that does not divide the resolution
        self.task.check_matrix_fits(resolution)  # before any input is read: refused at once
        self.cs_measurements = self.task.measurement_count(resolution) if self.task.kind.vector_measurements else None
        self._shared_op: Operator | None = None
        self._shared_mask = None  # the --mask picture, read on first use

    def shared_operator(self) -> Operator:
        """The operator of a task whose parameters do not differ per image (built once: a dense
        CS matrix is large)."""
        if self._shared_op is None:
            self._shared_op = self.task.operator(self.res)
        return self._shared_op

    def reads_measurements(self) -> bool:
        return self.task.kind.vector_measurements and not self.files.clean_inputs

    def sources(self, path: Path) -> dict[str, Path]:
        """The files one input is made of, by role (input, mask, truth); missing ones are errors."""
        s = self.files
        found = {"input": path}
        if self.task.kind.takes_masks and s.has_masks:
            found["mask"] = s.mask if s.mask is not None else find_by_stem(s.mask_dir, path.stem, "mask", "--mask-dir")
        if s.truth_dir is not None:
            found["truth"] = find_by_stem(s.truth_dir, path.stem, "ground truth", "--truth-dir")
        return found

    def prepare(self, path: Path) -> Prepared:
        s, stem = self.spec, path.stem
        files = self.sources(path)
        if self.reads_measurements():
            y, digest = self._read_cs_measurements(path)
            truth, digests = self._truth(files), {"input": digest}
            if truth is not None:
                digests["truth"] = truth[1]
            return Prepared(stem, y, None, truth[0] if truth else None, digests)
        picture = read_picture(path, s.max_pixels, (s.fit, self.input_size()))
        digests = {"input": picture.sha256}
        mask = None
        if self.task.kind.takes_masks and "mask" in files:
            mask_picture = self._read_mask(files["mask"])
            mask = Pixels(mask_tensor(mask_picture), mask_picture.size, str(files["mask"]))
            digests["mask"] = mask_picture.sha256
        truth = self._truth(files)
        if truth is not None:
            digests["truth"] = truth[1]
        image = Pixels(image_tensor(picture), picture.size, str(path))
        return self.from_pixels(stem, image, mask, truth[0] if truth else None, digests)

    def input_size(self) -> int:
        """Side of the pictures this run reads: the generator's for clean inputs, else the camera's."""
        return self.res if self.files.clean_inputs else self.task.measurement_size(self.res)

    def from_pixels(
        self,
        stem: str,
        image: Pixels,
        mask: Pixels | None = None,
        truth: torch.Tensor | None = None,
        digests: dict | None = None,
    ) -> Prepared:
        """One picture (and its mask) already decoded, from a file or handed over in memory."""
        s = self.spec
        fitted, valid = fit_to(image.tensor, self.input_size(), s.fit, image.name, pad_ok=self.task.kind.takes_masks)
        mask_tensor_ = self._mask(stem, image, mask, valid)
        if self.files.clean_inputs:
            op = self.task.operator(self.res, mask_tensor_) if mask_tensor_ is not None else self.shared_operator()
            y = self.task.measure(op, fitted[None], [stem])
            return Prepared(stem, y, mask_tensor_, fitted[None], dict(digests or {}))
        y = (
            fitted[None] * mask_tensor_ if mask_tensor_ is not None else fitted[None]
        )  # whatever is in a hole is unknown
        return Prepared(stem, y, mask_tensor_, truth, dict(digests or {}))

    def from_vector(self, stem: str, values, name: str, digest: str) -> Prepared:
        """Compressed-sensing measurements handed over in memory (an array of m numbers)."""
        return Prepared(
            stem,
            check_cs_vector(values, name, self.cs_measurements, self.task.ratio, self.res),
            None,
            None,
            {"input": digest},
        )

    def _mask(self, stem: str, image: Pixels, mask: Pixels | None, valid: torch.Tensor) -> torch.Tensor | None:
        if not self.task.kind.takes_masks:
            return None
        if mask is not None:
            if mask.size != image.size:
                raise InputError(
                    f"{mask.name} is {mask.size[0]}x{mask.size[1]} but {image.name} is {image.size[0]}x{image.size[1]}"
                )
            fitted = fit_mask(mask.tensor, self.res, self.spec.fit, mask.name)
        else:
            fitted = self.task.built_in_mask(self.res, stem)
        fitted = (fitted * valid)[None]  # padding invented by --fit pad is unobserved
        if not fitted.any():
            where = f"the mask {mask.name}" if mask is not None else "the mask"
            raise InputError(
                f"{image.name}: {where} leaves no pixel of the image observed; there is nothing to restore from"
            )
        return fitted

    def _read_mask(self, source: Path):
        """One --mask file serves every image: it is read and hashed once per run."""
        fit = (self.spec.fit, self.res) if self.spec.fit else None
        if source != self.files.mask:
            return read_picture(source, self.spec.max_pixels, fit)
        if self._shared_mask is None:
            self._shared_mask = read_picture(source, self.spec.max_pixels, fit)
        return self._shared_mask

    def _truth(self, files: dict[str, Path]) -> tuple[torch.Tensor, str] | None:
        path = files.get("truth")
        if path is None:
            return None
        picture = read_picture(path, self.spec.max_pixels, (self.spec.fit, self.res) if self.spec.fit else None)
        truth, _ = fit_to(image_tensor(picture), self.res, self.spec.fit, str(path), what="ground truth")
        return truth[None], picture.sha256

    def _read_cs_measurements(self, path: Path) -> tuple[torch.Tensor, str]:
        if path.suffix.lower() != ".npy":
            raise InputError(
                f"{path}: compressed-sensing input must be a .npy of measurements (from `ilo degrade`), or pass --clean"
            )
        try:
            data = _read_small(path, self.cs_measurements)
            check_npy_count(
                data, str(path), self.cs_measurements, f"--ratio {self.task.ratio} measurements at {self.res}px"
            )
            check_npy_holds(data, str(path))
            y = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: unreadable measurements ({e})") from None
        if not isinstance(y, np.ndarray):  # e.g. an .npz archive under a .npy name
            raise InputError(f"{path}: holds a {type(y).__name__}, not one array of measurements (from `ilo degrade`)")
        return check_cs_vector(y, str(path), self.cs_measurements, self.task.ratio, self.res), hashlib.sha256(
            data
        ).hexdigest()


def _read_small(path: Path, count: int) -> bytes:
    """The file's bytes, unless it is far bigger than `count` float64 values and a header could
    be: a measurement file of gigabytes is refused without reading it."""
    size = path.stat().st_size
    limit = (1 << 20) + 64 * count  # a header, and room for wide dtypes (refused later, by name)
    if size > limit:
        raise InputError(
            f"{path}: {size:,} bytes, far more than {count} measurements take; not a measurement file from `ilo degrade`"
        )
    return path.read_bytes()


@dataclass(frozen=True)
class Pixels:
    """A decoded picture: [C, h, w] pixels (after any early reduction), the size its source
    declares (width, height: what a mask must match) and a name for errors."""

    tensor: torch.Tensor
    size: tuple[int, int]
    name: str


def check_cs_vector(values, name: str, expected: int | None, ratio: float, resolution: int) -> torch.Tensor:
    """m real, finite measurements as a [1, m] float32 tensor, or a one-line error."""
    y = np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values)
    if y.dtype.kind not in "fiu":
        kind = "complex numbers" if y.dtype.kind == "c" else f"{y.dtype} values"
        raise InputError(f"{name}: holds {kind}; measurements are real numbers (float32 from `ilo degrade`)")
    y = torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(1, -1)
    if not torch.isfinite(y).all():
        bad = int((~torch.isfinite(y)).sum())
        raise InputError(f"{name}: {bad} of its measurements are NaN or inf (or overflow float32)")
    if y.shape[1] != expected:
        raise InputError(
            f"{name}: holds {y.shape[1]} measurements but --ratio {ratio} at {resolution}px means {expected}"
        )
    # Cauchy-Schwarz: a measurement is a row of the operator (norm about sqrt(n/m)) times an image
    # in [-1, 1] (norm at most sqrt(n)), so |y| <= n / sqrt(m) up to the noise. Ten times that is
    # no real measurement; values near float32's limit would overflow the loss into a "divergence".
    n = 3 * resolution * resolution
    limit = 10 * n / max(expected or 1, 1) ** 0.5
    largest = float(y.abs().max())
    if largest > limit:
        raise InputError(
            f"{name}: a measurement of {largest:.3g}, where measurements of an image in [-1, 1] at {resolution}px "
            f"and --ratio {ratio} stay below {limit:.3g}; not measurements of this task (from `ilo degrade`)"
        )
    return y


def find_by_stem(folder: Path, stem: str, what: str, flag: str | None = None) -> Path:
    """The file of `what` for an input in `folder` (given by `flag`), by the input's stem."""
    if flag is not None and folder.exists() and not folder.is_dir():  # not "no mask for x in m.png/"
        raise InputError(f"{flag} {folder} is a file, not a folder; it names a folder of {what} files, one per input")
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.exists():  # a folder or a pipe by that name is refused by the read, by what it is
                return candidate
    raise InputError(f"no {what} for '{stem}' in {folder} (expected {folder / (stem + '.png')})")
