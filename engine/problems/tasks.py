"""Restoration tasks as the command line names them: which operator, its parameters, and how
a clean image is degraded reproducibly (per-image seeds come from the image's name, so a result
does not depend on which batch, or which resumed run, the image landed in)."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import torch

from ilo.choices import CS_MATRICES, TASKS  # noqa: F401  (re-exported)
from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Inpainting, Noise, Operator, PartialCirculantCS
from ilo.errors import InputError


def name_seed(seed: int, name: str) -> int:
    """A stable 31-bit seed for one named image."""
    return (zlib.crc32(name.encode("utf-8")) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


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
        if self.task not in TASKS:
            raise InputError(f"unknown task '{self.task}' (choose from {', '.join(TASKS)})")
        if self.sigma is None:
            self.sigma = 0.1 if self.task == "denoise" else 0.0
        if not 0 <= self.sigma < 1:
            raise InputError(f"--sigma is a std in [0, 1] pixel units, got {self.sigma}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise InputError(f"--factor is a whole downsampling factor of at least 1, got {self.factor}")
        if self.task == "cs" and not (0 < self.ratio <= 1):
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
    def has_built_in_mask(self) -> bool:
        return any(x is not None for x in (self.centre_box, self.box, self.keep))

    def measurement_size(self, resolution: int) -> int:
        """Side of the image a camera delivers for this task (the low-resolution one for sr)."""
        if self.task == "sr":
            if resolution % self.factor:
                raise InputError(f"--factor {self.factor} does not divide the generator's {resolution}px")
            return resolution // self.factor
        return resolution

    def measurement_count(self, resolution: int) -> int:
        """m, the number of compressed-sensing measurements of one image."""
        return max(1, round(self.ratio * 3 * resolution * resolution))

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
        raise InputError("inpainting needs a mask: --mask FILE, --mask-dir DIR, --centre-box, --box or --keep")

    def operator(self, resolution: int, masks: torch.Tensor | None = None) -> Operator:
        """The forward operator for a batch; `masks` [B, 1, H, W] for inpainting."""
        if self.task == "inpaint":
            if masks is None:
                raise InputError("inpainting needs masks")
            return Inpainting(masks, sigma=self.sigma)
        if self.task == "sr":
            self.measurement_size(resolution)
            return Downsample(self.factor, sigma=self.sigma)
        if self.task == "denoise":
            return Noise(self.sigma)
        n, m = 3 * resolution * resolution, self.measurement_count(resolution)
        if self.cs_matrix == "gaussian":
            return DenseGaussianCS(n, m, seed=self.op_seed, sigma=self.sigma)
        return PartialCirculantCS(n, m, batch=1, seed=self.op_seed, sigma=self.sigma)

    def measure(self, op: Operator, clean: torch.Tensor, names: list[str]) -> torch.Tensor:
        """y = A(x) + noise with each image's noise drawn from its own name-seeded stream."""
        ys = []
        for i, name in enumerate(names):
            single = _slice_operator(op, i)
            g = torch.Generator().manual_seed(name_seed(self.op_seed + 1, name))
            ys.append(single.measure(clean[i : i + 1], g))
        return torch.cat(ys)

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _slice_operator(op: Operator, i: int) -> Operator:
    if isinstance(op, Inpainting) and op.mask.shape[0] > 1:
        return Inpainting(op.mask[i : i + 1], sigma=op.sigma)
    return op
