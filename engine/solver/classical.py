"""Weight-free classical methods beside the generator's search: total variation and wavelet (l1,
db4, 3 levels) priors, solved by FISTA on DeepInverse's L2 data fidelity through this project's
operators (any linear one: `OperatorPhysics` hands deepinv their A and adjoint).

DeepInverse is an optional extra, `pip install "ilo-engine[deepinv]"` (with ptwt, the wavelet
transform), imported only when such a method runs. The regularisation weight of each task is the
one `benchmarks/classical_priors.py` tuned on images outside the benchmark; the package ships the
table (`ilo/assets/classical_weights.json`, written by that script), so nothing is read from
`benchmarks/` at run time.
"""

from __future__ import annotations

import importlib.util
import json
import time
from functools import cache

import torch

from ilo.engine.problems.operators import Operator
from ilo.engine.problems.tasks import TaskSpec
from ilo.errors import IloError
from ilo.paths import assets_dir

MAX_ITER, TOLERANCE = 300, 1e-5  # FISTA's iterations at most, and its relative-change stop
WEIGHTS_FILE = "classical_weights.json"


def _tv():
    import deepinv as dinv

    return dinv.optim.TVPrior(n_it_max=20)  # the prox's inner iterations (warm-started by deepinv)


def _wavelet():
    import deepinv as dinv

    # reflect padding: with zero or symmetric padding db4's border coefficients make FISTA drift
    # (x4 SR on the tuning set: 19.2-20.2 dB against 24.4). deepinv's FISTA hands the prox its
    # g_param positionally, so the threshold stays 0.1 * stepsize * lambda.
    return dinv.optim.WaveletPrior(level=3, wv="db4", p=1, mode="reflect")


# prior name -> (its deepinv prior, the modules it needs beyond torch)
PRIORS = {"tv": (_tv, ("deepinv",)), "wavelet": (_wavelet, ("deepinv", "ptwt"))}


def check_installed(prior: str) -> None:
    """Refuse, in one line naming the extra, a prior whose modules are missing (found without
    importing them: choosing the method stays quick)."""
    missing = [m for m in PRIORS[prior][1] if importlib.util.find_spec(m) is None]
    if missing:
        raise IloError(
            f"the {prior} method runs on DeepInverse, and {' and '.join(missing)} is not installed: "
            'pip install "ilo-engine[deepinv]"'
        )


def make_prior(name: str):
    """The deepinv prior of `name` (a key of PRIORS)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior '{name}' (choose from {', '.join(PRIORS)})")
    check_installed(name)
    return PRIORS[name][0]()


def measurement_share(op: Operator, y: torch.Tensor, resolution: int) -> float:
    """Measurements per pixel value: the observed share of an inpainting, 1/f² of a x f
    super-resolution, m/n of compressed sensing, 1 of denoising."""
    if op.observed is not None:
        return float(op.observed.float().mean())
    return y[0].numel() / (3 * resolution * resolution)


@cache
def weight_table() -> dict:
    """The shipped table: task -> its tuned cases, each with its measurement share and a weight
    per prior."""
    return json.loads((assets_dir() / WEIGHTS_FILE).read_text())["tasks"]


def tuned_weight(prior: str, task: TaskSpec, share: float) -> float:
    """The prior's tuned weight for the task: of the task's tuned cases (inpainting has a box hole
    and scattered pixels), the one whose measurement share is nearest this problem's."""
    cases = weight_table()[task.task]
    nearest = min(cases, key=lambda case: abs(case["share"] - share))
    return float(nearest["weights"][prior])


def fista_restore(
    prior: str, op: Operator, y: torch.Tensor, weight: float, resolution: int
) -> tuple[torch.Tensor, float]:
    """FISTA on 1/2 ||A x - y||^2 + weight R(x) for [0, 1] images, from the adjoint (the unobserved
    pixels of an inpainting set to the observed mean, so the prior does not start from black;
    compressed sensing from mid-grey, as its adjoint is far outside [0, 1]).
    `op` is this project's linear operator and y its measurements of [-1, 1] images, as the other
    methods get them; returns [-1, 1] images (on y's device) and the seconds taken."""
    made = make_prior(prior)
    import deepinv as dinv

    from ilo.engine.problems.deepinv_physics import OperatorPhysics

    t0 = time.perf_counter()
    shape = (3, resolution, resolution)
    physics = OperatorPhysics(op, shape)
    with torch.no_grad():
        y_unit = (y + op.A(torch.ones(1, *shape, device=y.device))) / 2  # the inverse of generator_measurements
        x0 = _start(op, physics.A_adjoint(y_unit), vector=y.ndim == 2)
        # ||A||^2 by power iteration, which deepinv starts from the global random state: seeded
        # here (and the caller's state put back), so the step size and the result depend on the
        # measurements alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            norm = float(physics.compute_sqnorm(x0, verbose=False))
        solver = dinv.optim.FISTA(
            data_fidelity=dinv.optim.L2(),
            prior=made,
            lambda_reg=weight,
            stepsize=1.0 / norm,
            max_iter=MAX_ITER,
            early_stop=True,
            thres_conv=TOLERANCE,
        )
        x = solver(y_unit, physics, init=(x0, x0.clone())).clamp(0, 1)  # FISTA keeps (x, z)
    return x * 2 - 1, time.perf_counter() - t0


def _start(op: Operator, adjoint: torch.Tensor, vector: bool) -> torch.Tensor:
    """FISTA's first iterate from the adjoint of the measurements (see fista_restore)."""
    if vector:  # a vector of measurements: compressed sensing
        return torch.full_like(adjoint, 0.5)
    if op.observed is None:
        return adjoint
    mask = op.observed.to(adjoint.device).expand_as(adjoint)
    mean = (adjoint * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1)
    return mask * adjoint + (1 - mask) * mean


def prior_pass(prior: str):
    """The prior as a one-pass method's solve (`ilo.engine.api.batch_solve.OnePass`): the batch
    restored at the task's tuned weight, returned on the CPU."""

    def restore(encoder, op: Operator, y: torch.Tensor, model, task: TaskSpec) -> tuple[torch.Tensor, float]:
        weight = tuned_weight(prior, task, measurement_share(op, y, model.resolution))
        images, seconds = fista_restore(prior, op, y, weight, model.resolution)
        return images.cpu(), seconds

    return restore
