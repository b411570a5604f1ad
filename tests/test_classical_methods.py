"""The weight-free classical methods, `tv` and `wavelet`: FISTA through DeepInverse at each task's
tuned weight, run by name like any other method (Restorer, `ilo restore`, the deepinv entry)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_fail, run_ok

import ilo
from ilo.engine.api.methods import REGISTRY
from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.solver import classical
from ilo.errors import IloError

ROOT = Path(__file__).resolve().parents[1]
PRIORS = tuple(classical.PRIORS)


def _benchmark(name: str):
    """A module of benchmarks/ (they import each other as `benchmarks.*`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"benchmarks.{name}")


def _picture() -> torch.Tensor:
    """A piecewise-smooth [1, 3, 64, 64] picture in [-1, 1]: a disc on a gradient."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.4).float()
    return torch.stack([0.6 * disc - 0.3 + 0.2 * xx, 0.4 * yy, -0.5 * disc + 0.2]).clamp(-1, 1)[None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / (a - b).square().mean()))  # [-1, 1] images: peak-to-peak 2


def test_they_are_one_pass_methods_for_every_task_and_physics():
    for name in PRIORS:
        row = REGISTRY[name]
        assert not row.optimises and row.one_pass is not None and row.takes_physics and not row.denoiser
        assert row.config() is None
    assert set(classical.weight_table()) == set(ilo.choices.TASKS)  # a tuned weight for every task


def test_the_shipped_weights_are_the_benchmarks_choices():
    """ilo/assets/classical_weights.json is what benchmarks/classical_priors.py writes from its
    committed choices, and every tuned case of benchmarks/quality.py is in it."""
    report = json.loads((ROOT / "benchmarks" / "results" / "classical_priors.json").read_text())
    shipped = json.loads((ROOT / "ilo" / "assets" / classical.WEIGHTS_FILE).read_text())
    assert shipped == _benchmark("classical_priors").package_table(report)
    cases = {case["case"]: case["weights"] for cases in shipped["tasks"].values() for case in cases}
    assert cases == report["chosen"]


@pytest.mark.parametrize("case", ["inpaint-box", "inpaint-10%", "sr-x4", "denoise-0.1", "cs-0.1"])
def test_each_benchmark_task_gets_its_tuned_weight(case):
    chosen = json.loads((ROOT / "benchmarks" / "results" / "classical_priors.json").read_text())["chosen"]
    task = _benchmark("quality").TASKS[case]
    masks = task.built_in_mask(64, "face0")[None] if task.kind.takes_masks else None
    op = task.operator(64, masks)
    share = classical.measurement_share(op, op.A(torch.zeros(1, 3, 64, 64)), 64)
    for prior in PRIORS:
        assert classical.tuned_weight(prior, task, share) == chosen[case][prior]


def test_the_engine_solve_is_deepinvs_fista_as_the_benchmark_ran_it():
    """The engine's TV on one small picture against FISTA built here from deepinv directly, as
    benchmarks/classical_priors.py built it before the engine had the method."""
    dinv = pytest.importorskip("deepinv")
    from ilo.engine.problems.deepinv_physics import OperatorPhysics

    task = TaskSpec("inpaint", keep=0.3)
    op = task.operator(64, task.built_in_mask(64, "face0")[None])
    y = task.measure(op, _picture(), ["face0"])
    engine, _ = classical.fista_restore("tv", op, y, 0.01, 64)

    physics = OperatorPhysics(op, (3, 64, 64))
    y_unit = (y + op.A(torch.ones(1, 3, 64, 64))) / 2
    x0 = physics.A_adjoint(y_unit)
    mask = op.observed.expand_as(x0)
    x0 = mask * x0 + (1 - mask) * (x0 * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True)
    torch.manual_seed(0)  # the power iteration's random start, as the engine seeds it
    norm = float(physics.compute_sqnorm(x0, verbose=False))
    fista = dinv.optim.FISTA(
        data_fidelity=dinv.optim.L2(),
        prior=dinv.optim.TVPrior(n_it_max=20),
        lambda_reg=0.01,
        stepsize=1.0 / norm,
        max_iter=300,
        early_stop=True,
        thres_conv=1e-5,
    )
    with torch.no_grad():
        reference = fista(y_unit, physics, init=(x0, x0.clone())).clamp(0, 1) * 2 - 1
    assert float((engine - reference).abs().max()) < 1e-6  # measured: 0 (the same operations, in the same order)


@pytest.mark.parametrize("prior", PRIORS)
def test_a_restorer_runs_them_by_name(prior, dcgan):
    pytest.importorskip("deepinv")
    truth = _picture()
    restorer = ilo.Restorer(model=dcgan, task="sr", factor=4, method=prior)
    low = restorer.task.measure(restorer.shared_operator(), truth, ["disc"])
    [out] = restorer.restore(((low[0] + 1) / 2).clamp(0, 1), names=["disc"])  # pictures in [0, 1]
    upsampled = torch.nn.functional.interpolate(low, size=(64, 64), mode="nearest")
    assert (
        _psnr(out.tensor[None] * 2 - 1, truth) > _psnr(upsampled, truth) + 1
    )  # measured: +6.8 (TV), +1.7 dB (wavelet)
    assert out.best_round is None  # one pass: no rounds


def test_the_command_line_runs_them_and_says_when_deepinv_is_missing(tmp_path, capsys, dcgan, monkeypatch):
    pytest.importorskip("deepinv")
    from conftest import write_generated_faces

    faces = write_generated_faces(tmp_path / "faces", dcgan, 1, seed=11)
    out = tmp_path / "tv"
    run_ok(capsys, "restore", faces, "--clean", "--task", "denoise", "--method", "tv", "--out", out, "--quiet")
    (record,) = json.loads((out / "metrics.json").read_text())["images"]
    assert record["psnr"] > 22  # sigma 0.1 noise alone is 20 dB
    assert "TV takes no solver settings" in run_fail(
        capsys, "restore", faces, "--clean", "--task", "denoise", "--method", "tv", "--steps", "5", "--out", out
    )

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepinv" else real_find_spec(name, *a)
    )
    err = run_fail(capsys, "restore", faces, "--clean", "--task", "sr", "--method", "wavelet", "--out", tmp_path / "x")
    assert 'pip install "ilo-engine[deepinv]"' in err and "deepinv" in err
    with pytest.raises(IloError, match=r'pip install "ilo-engine\[deepinv\]"'):
        ilo.Restorer(model=dcgan, task="inpaint", centre_box=0.5, method="tv", warm=False)


def test_the_deepinv_entry_runs_them():
    dinv = pytest.importorskip("deepinv")
    truth = (_picture() + 1) / 2
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    y = physics(truth)
    model = ilo.ILOReconstructor(task="denoise", method="tv")
    x_hat = model(y, physics)
    assert x_hat.shape == truth.shape and 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
    assert _psnr(x_hat * 2, truth * 2) > _psnr(y * 2, truth * 2) + 3  # measured: +15.3 dB (TV) on this picture


def test_a_classical_result_does_not_depend_on_the_global_random_state():
    pytest.importorskip("deepinv")
    from ilo.engine.problems.operators import Noise
    from ilo.engine.solver.classical import fista_restore

    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.manual_seed(1)
    first, _ = fista_restore("tv", Noise(0.1), y, 0.05, 16)
    torch.manual_seed(2)
    second, _ = fista_restore("tv", Noise(0.1), y, 0.05, 16)
    assert torch.equal(first, second)
