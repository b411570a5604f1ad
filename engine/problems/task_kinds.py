"""The task kinds, one row of `TASK_KINDS` each: what the engine needs to know about a task,
and its parameters as one small dataclass (their defaults, their checks, the operator they
describe). A field's metadata names its command-line flag and says what it is, so the task
flags of `ilo restore`, their help and their defaults are made from these classes and every
default is written here only (`ilo.engine.cli.task_args`).

`TaskParams` holds what every task takes (the measurement noise and the operator's seed); a
task's own class adds the rest. The command-line parser reads this module, and building it must
not load torch (`ilo --help` stays quick): torch and the operators are imported where used."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ilo.choices import CS_MATRICES, TASKS
from ilo.errors import InputError
from ilo.host_memory import available_host_memory

if TYPE_CHECKING:
    import torch

    from ilo.engine.problems.operators import Operator

# Dense Gaussian CS holds its m x n matrix: at most this share of the memory available, checked
# before any is drawn (MeasurementReader). A run from clean pictures draws two (the reader measures
# with one, the solver fits with its own), and the generator, its graphs and the steps need the rest.
DENSE_MATRIX_SHARE = 0.3


def name_seed(seed: int, name: str) -> int:
    """A stable 31-bit seed for one named image."""
    return (zlib.crc32(name.encode("utf-8")) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def param(default, flag: str, help: str, reads: str | None = None, metavar: str | None = None, choices=None):
    """A task parameter: its default and, for the command line, its flag, what it is (`help`,
    without the task's name or the default: both are added), and how its value is read
    ('int', 'float', 'seed', 'box'; None with `choices`)."""
    meta = {"flag": flag, "help": help, "reads": reads, "metavar": metavar, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TaskParams:
    """What every task takes. `sigma` None means the task's own default (`default_sigma`)."""

    default_sigma: ClassVar[float] = 0.0

    sigma: float | None = param(None, "--sigma", "noise std in [0,1] pixel units", reads="float")
    op_seed: int = param(0, "--op-seed", "seed of the CS matrix, random masks and added noise", reads="seed")

    def __post_init__(self):
        if self.sigma is None:
            self.sigma = self.default_sigma
        if not 0 <= self.sigma < 1:
            raise InputError(f"--sigma is a std in [0, 1] pixel units, got {self.sigma}")

    @classmethod
    def own_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The fields this task adds to the ones every task takes."""
        shared = {f.name for f in dataclasses.fields(TaskParams)}
        return tuple(f for f in dataclasses.fields(cls) if f.name not in shared)

    def operator(self, resolution: int, masks: torch.Tensor | None) -> Operator:
        raise NotImplementedError

    def measurement_size(self, resolution: int) -> int:
        """Side of the image a camera delivers for this task."""
        return resolution

    def matrix_bytes(self, resolution: int) -> int:
        """What the operator's own matrix holds (float32); most operators hold none."""
        return 0

    def check_fits(self, resolution: int) -> None:
        """Refuse, before it is made, an operator too large for this machine (most are small)."""

    def step_shape(self) -> dict:
        """The parameters that change what a solver step holds (a mask or a noise level does not)."""
        return {}

    @property
    def has_built_in_mask(self) -> bool:
        return False

    def built_in_mask(self, resolution: int, name: str) -> torch.Tensor:
        raise InputError(f"{type(self).__name__} has no masks: only inpainting takes them")

    def measurement_count(self, resolution: int) -> int:
        raise InputError(f"{type(self).__name__} measures pictures: only compressed sensing counts measurements")


@dataclass
class InpaintingParams(TaskParams):
    """A hole: a file per image (read elsewhere), or one of these built-in masks."""

    centre_box: float | None = param(
        None, "--centre-box", "a centred square hole of this side fraction", reads="float", metavar="FRACTION"
    )
    box: tuple[int, int, int, int] | None = param(
        None, "--box", "a rectangular hole, in generator pixels", reads="box", metavar="T,L,H,W"
    )
    keep: float | None = param(
        None, "--keep", "observe this fraction of pixels at random", reads="float", metavar="RATE"
    )

    def __post_init__(self):
        super().__post_init__()
        if sum(x is not None for x in (self.centre_box, self.box, self.keep)) > 1:
            raise InputError("give at most one of --centre-box, --box and --keep")
        if self.centre_box is not None and not 0 < self.centre_box < 1:
            raise InputError(f"--centre-box is a fraction of the side in (0, 1), got {self.centre_box}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise InputError(f"--keep is a fraction of pixels in (0, 1], got {self.keep}")

    def operator(self, resolution: int, masks: torch.Tensor | None) -> Operator:
        from ilo.engine.problems.operators import Inpainting

        if masks is None:
            raise InputError("inpainting needs masks")
        return Inpainting(masks, sigma=self.sigma)

    @property
    def has_built_in_mask(self) -> bool:
        return any(x is not None for x in (self.centre_box, self.box, self.keep))

    def built_in_mask(self, resolution: int, name: str) -> torch.Tensor:
        """The [1, H, W] mask that --centre-box / --box / --keep describe for image `name`."""
        import torch

        from ilo.engine.problems.operators import Inpainting

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


@dataclass
class SuperResolutionParams(TaskParams):
    factor: int = param(4, "--factor", "downsampling factor", reads="int")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise InputError(f"--factor is a whole downsampling factor of at least 1, got {self.factor}")

    def operator(self, resolution: int, masks: torch.Tensor | None) -> Operator:
        from ilo.engine.problems.operators import Downsample

        self.measurement_size(resolution)
        return Downsample(self.factor, sigma=self.sigma)

    def measurement_size(self, resolution: int) -> int:
        """The camera delivers the low-resolution image: resolution / factor pixels a side."""
        if resolution % self.factor:
            raise InputError(f"--factor {self.factor} does not divide the generator's {resolution}px")
        return resolution // self.factor

    def step_shape(self) -> dict:
        return {"factor": self.factor}  # the camera's picture, and so the loss's input, is this much smaller


@dataclass
class DenoisingParams(TaskParams):
    default_sigma: ClassVar[float] = 0.1  # with no noise there is nothing to denoise

    def operator(self, resolution: int, masks: torch.Tensor | None) -> Operator:
        from ilo.engine.problems.operators import Noise

        return Noise(self.sigma)


@dataclass
class CompressedSensingParams(TaskParams):
    ratio: float = param(0.1, "--ratio", "measurements per pixel value, m/n", reads="float")
    cs_matrix: str = param("circulant", "--cs-matrix", "fast partial circulant or dense Gaussian", choices=CS_MATRICES)

    def __post_init__(self):
        super().__post_init__()
        if not (0 < self.ratio <= 1):
            raise InputError(f"--ratio (m/n) must be in (0, 1], got {self.ratio}")
        if self.cs_matrix not in CS_MATRICES:
            raise InputError(f"unknown CS matrix '{self.cs_matrix}' (choose from {', '.join(CS_MATRICES)})")

    def operator(self, resolution: int, masks: torch.Tensor | None) -> Operator:
        from ilo.engine.problems.operators import DenseGaussianCS, PartialCirculantCS

        n, m = 3 * resolution * resolution, self.measurement_count(resolution)
        if self.cs_matrix == "gaussian":
            return DenseGaussianCS(n, m, seed=self.op_seed, sigma=self.sigma)
        return PartialCirculantCS(n, m, batch=1, seed=self.op_seed, sigma=self.sigma)

    def measurement_count(self, resolution: int) -> int:
        """m, the number of measurements of one image."""
        return max(1, round(self.ratio * 3 * resolution * resolution))

    def matrix_bytes(self, resolution: int) -> int:
        """Dense Gaussian CS holds its m x n matrix; the partial circulant one holds none."""
        if self.cs_matrix != "gaussian":
            return 0
        return 4 * self.measurement_count(resolution) * 3 * resolution * resolution

    def check_fits(self, resolution: int) -> None:
        """Refuse, before it is drawn, a dense CS matrix that would take more than
        DENSE_MATRIX_SHARE of the memory available (it is made on the host): at 256² and the
        default ratio it is 15.5 GB."""
        matrix = self.matrix_bytes(resolution)
        host = available_host_memory() if matrix else None
        if host is not None and matrix > DENSE_MATRIX_SHARE * host[0]:
            raise InputError(
                f"dense Gaussian CS at {resolution}² needs a {matrix / 2**30:.1f} GiB matrix "
                f"({self.measurement_count(resolution)} x {3 * resolution**2} float32), more than {DENSE_MATRIX_SHARE:.0%} "
                f"of the {host[0] / 2**30:.2f} GiB {host[1]}; use --cs-matrix circulant (no matrix) or a smaller --ratio"
            )


@dataclass(frozen=True)
class TaskKind:
    """What the rest of the engine needs to know about a task, as data (one row per task)."""

    params: type[TaskParams]  # its parameters, their defaults and checks, and its operator
    takes_masks: bool = False  # inpaint: a mask per image (a file, a folder or built in)
    vector_measurements: bool = False  # cs: y is a vector (a .npy file), not a picture
    bm3d: bool = False  # the BM3D baseline restores it (Gaussian denoising only)

    def own_parameters(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.params.own_fields())


TASK_KINDS = {
    "inpaint": TaskKind(InpaintingParams, takes_masks=True),
    "sr": TaskKind(SuperResolutionParams),
    "denoise": TaskKind(DenoisingParams, bm3d=True),
    "cs": TaskKind(CompressedSensingParams, vector_measurements=True),
}
assert tuple(TASK_KINDS) == TASKS  # the parser's names (ilo.choices) and this table agree


def kind_named(task: str) -> TaskKind:
    if task not in TASK_KINDS:
        raise InputError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    return TASK_KINDS[task]


def owner_of(name: str) -> str | None:
    """The task whose own parameter `name` is (None: every task takes it, or none does)."""
    return next((task for task, kind in TASK_KINDS.items() if name in kind.own_parameters()), None)


def every_parameter() -> dict[str, object]:
    """Every task's parameters at their defaults (sigma: None, each task's own)."""
    found = {f.name: f.default for f in dataclasses.fields(TaskParams)}
    for kind in TASK_KINDS.values():
        found.update({f.name: f.default for f in kind.params.own_fields()})
    return found
