"""Restoration tasks as the command line names them: which operator, its parameters, and how
a clean image is degraded reproducibly (per-image seeds come from the image's name, so a result
does not depend on which batch, or which resumed run, the image landed in)."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ilo.choices import CS_MATRICES, TASKS  # noqa: F401  (re-exported)
from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Inpainting, Noise, Operator, PartialCirculantCS
from ilo.errors import InputError
from ilo.host_memory import available_host_memory

# Dense Gaussian CS holds its m x n matrix: at most this share of the memory available, checked
# before any is drawn (MeasurementReader). A run from clean pictures draws two (the reader measures
# with one, the solver fits with its own), and the generator, its graphs and the steps need the rest.
DENSE_MATRIX_SHARE = 0.3


def name_seed(seed: int, name: str) -> int:
    """A stable 31-bit seed for one named image."""
    return (zlib.crc32(name.encode("utf-8")) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


@dataclass(frozen=True)
class TaskKind:
    """What the rest of the engine needs to know about a task, as data (one row per task)."""

    default_sigma: float
    build: Callable[["TaskSpec", int, torch.Tensor | None], Operator]  # (spec, resolution, masks)
    takes_masks: bool = False  # inpaint: a mask per image (a file, a folder or built in)
    vector_measurements: bool = False  # cs: y is a vector (a .npy file), not a picture
    low_resolution: bool = False  # sr: the camera delivers resolution / factor pixels
    bm3d: bool = False  # the BM3D baseline restores it (Gaussian denoising only)


def _inpainting(spec: "TaskSpec", resolution: int, masks: torch.Tensor | None) -> Operator:
    if masks is None:
        raise InputError("inpainting needs masks")
    return Inpainting(masks, sigma=spec.sigma)


def _super_resolution(spec: "TaskSpec", resolution: int, masks) -> Operator:
    spec.measurement_size(resolution)
    return Downsample(spec.factor, sigma=spec.sigma)


def _denoising(spec: "TaskSpec", resolution: int, masks) -> Operator:
    return Noise(spec.sigma)


def _compressed_sensing(spec: "TaskSpec", resolution: int, masks) -> Operator:
    n, m = 3 * resolution * resolution, spec.measurement_count(resolution)
    if spec.cs_matrix == "gaussian":
        return DenseGaussianCS(n, m, seed=spec.op_seed, sigma=spec.sigma)
    return PartialCirculantCS(n, m, batch=1, seed=spec.op_seed, sigma=spec.sigma)


TASK_KINDS = {
    "inpaint": TaskKind(0.0, _inpainting, takes_masks=True),
    "sr": TaskKind(0.0, _super_resolution, low_resolution=True),
    "denoise": TaskKind(0.1, _denoising, bm3d=True),
    "cs": TaskKind(0.0, _compressed_sensing, vector_measurements=True),
}
assert tuple(TASK_KINDS) == TASKS  # the parser's names (ilo.choices) and this table agree


@dataclass
class TaskSpec:
    task: str
    factor: int = 4  # sr
    sigma: float | None = None  # noise std in [0, 1] pixel units (denoise: default 0.1, else 0)
    ratio: float = 0.1  # cs: m / n
    cs_matrix: str = "circulant"
    centre_box: float | None = None  # inpaint: side of a centred square hole, as a fraction
    box: tuple[int, int, int, int] | None = None  # inpaint: top, left, height, width of the hole
    keep: float | None = None  # inpaint: observe this fraction of pixels, at random
    op_seed: int = 0  # seeds the CS matrix and random masks

    def __post_init__(self):
        if self.task not in TASK_KINDS:
            raise InputError(f"unknown task '{self.task}' (choose from {', '.join(TASKS)})")
        if self.sigma is None:
            self.sigma = self.kind.default_sigma
        if not 0 <= self.sigma < 1:
            raise InputError(f"--sigma is a std in [0, 1] pixel units, got {self.sigma}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise InputError(f"--factor is a whole downsampling factor of at least 1, got {self.factor}")
        if not (0 < self.ratio <= 1):
            raise InputError(f"--ratio (m/n) must be in (0, 1], got {self.ratio}")
        if self.cs_matrix not in CS_MATRICES:
            raise InputError(f"unknown CS matrix '{self.cs_matrix}' (choose from {', '.join(CS_MATRICES)})")
        if sum(x is not None for x in (self.centre_box, self.box, self.keep)) > 1:
            raise InputError("give at most one of --centre-box, --box and --keep")
        if self.centre_box is not None and not 0 < self.centre_box < 1:
            raise InputError(f"--centre-box is a fraction of the side in (0, 1), got {self.centre_box}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise InputError(f"--keep is a fraction of pixels in (0, 1], got {self.keep}")

    @property
    def kind(self) -> TaskKind:
        return TASK_KINDS[self.task]

    @property
    def has_built_in_mask(self) -> bool:
        return any(x is not None for x in (self.centre_box, self.box, self.keep))

    def measurement_size(self, resolution: int) -> int:
        """Side of the image a camera delivers for this task (the low-resolution one for sr)."""
        if not self.kind.low_resolution:
            return resolution
        if resolution % self.factor:
            raise InputError(f"--factor {self.factor} does not divide the generator's {resolution}px")
        return resolution // self.factor

    def measurement_count(self, resolution: int) -> int:
        """m, the number of compressed-sensing measurements of one image."""
        return max(1, round(self.ratio * 3 * resolution * resolution))

    def matrix_bytes(self, resolution: int) -> int:
        """What the operator's own matrix holds (float32): dense Gaussian CS's m x n, else 0."""
        if self.task != "cs" or self.cs_matrix != "gaussian":
            return 0
        return 4 * self.measurement_count(resolution) * 3 * resolution * resolution

    def check_matrix_fits(self, resolution: int) -> None:
        """Refuse, before it is drawn, a dense CS matrix that would take more than
        DENSE_MATRIX_SHARE of the memory available (it is made on the host): at 256² and the
        default ratio it is 15.5 GB. Checked where a run's readers are made, before either
        draws one."""
        matrix = self.matrix_bytes(resolution)
        host = available_host_memory() if matrix else None
        if host is not None and matrix > DENSE_MATRIX_SHARE * host[0]:
            raise InputError(
                f"dense Gaussian CS at {resolution}² needs a {matrix / 2**30:.1f} GiB matrix "
                f"({self.measurement_count(resolution)} x {3 * resolution**2} float32), more than {DENSE_MATRIX_SHARE:.0%} "
                f"of the {host[0] / 2**30:.2f} GiB {host[1]}; use --cs-matrix circulant (no matrix) or a smaller --ratio"
            )

    def built_in_mask(self, resolution: int, name: str) -> torch.Tensor:
        """The [1, H, W] mask that --centre-box / --box / --keep describe for image `name`."""
        if self.centre_box is not None:
            return Inpainting.centre_box(resolution, 1, self.centre_box).mask[0]
        if self.box is not None:
            top, left, height, width = self.box
            if min(self.box) < 0 or top + height > resolution or left + width > resolution or min(height, width) < 1:
                raise InputError(f"--box {top},{left},{height},{width} does not fit a {resolution}px image")
            return Inpainting.box(resolution, 1, top, left, height, width).mask[0]
        if self.keep is not None:
            g = torch.Generator().manual_seed(name_seed(self.op_seed, name))
            return Inpainting.random_pixels(resolution, 1, self.keep, generator=g).mask[0]
        raise InputError(
            "inpainting needs a mask: one per image (--mask, --mask-dir; a request's 'mask'), or a built-in "
            "one (--centre-box, --box or --keep)"
        )

    def operator(self, resolution: int, masks: torch.Tensor | None = None) -> Operator:
        """The forward operator for a batch; `masks` [B, 1, H, W] for inpainting."""
        return self.kind.build(self, resolution, masks)

    def measure(self, op: Operator, clean: torch.Tensor, names: list[str]) -> torch.Tensor:
        """y = A(x) + noise with each image's noise drawn from its own name-seeded stream."""
        ys = []
        for i, name in enumerate(names):
            single = op.select(slice(i, i + 1))
            g = torch.Generator().manual_seed(name_seed(self.op_seed + 1, name))
            ys.append(single.measure(clean[i : i + 1], g))
        return torch.cat(ys)

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
