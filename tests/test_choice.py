"""The `choose` method: ilo-auto, then per image the candidate of smallest estimated error; and the
estimates themselves (engine/solver/error_estimates.py), checked against the truth they estimate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import run_ok

import ilo
from ilo.engine.api.methods import REGISTRY
from ilo.engine.problems.held_out import split_measurements
from ilo.engine.problems.operators import Noise
from ilo.engine.problems.tasks import TaskSpec
from ilo.engine.solver.error_estimates import denoiser_estimate, refit_estimate

FACE = Path(__file__).resolve().parents[1] / "examples" / "faces" / "astronaut.png"
SIGMA = 0.1  # [0, 1] units: 0.2 on [-1, 1] images


def _smooth(batch: int, seed: int = 0) -> torch.Tensor:
    """Smooth [-1, 1] pictures: low-frequency noise upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=g) * 1.6 - 0.8
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic", align_corners=False).clamp(-1, 1)


def _noisy(truth: torch.Tensor, seed: int = 1) -> tuple[Noise, torch.Tensor]:
    op = Noise(SIGMA)
    return op, op.measure(truth, torch.Generator().manual_seed(seed))


def _judge(op, y):
    return split_measurements(op, y, 0.1, list(range(y.shape[0])))[2]


def test_sure_on_the_held_out_pixels_is_exact_for_the_identity_and_close_for_a_shrinkage():
    """The identity denoiser's residual is 0: only Stein's term gives its error, the noise variance.
    A linear shrinkage's estimate tracks its true error on the judged pixels, and two denoisers'
    estimates differ by what their true errors differ by, far closer than either is to the truth."""
    truth = _smooth(4)
    op, y = _noisy(truth)
    judge = _judge(op, y)
    variance = (2 * SIGMA) ** 2
    seeds = list(range(4))
    identity = denoiser_estimate(judge, lambda v: v, y, y, seeds)
    assert torch.allclose(identity, torch.full_like(identity, variance), rtol=1e-4)

    def true_error(images):
        keep = judge.keep.expand_as(images)
        return ((images - truth).square() * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)

    def shrink(v, a):
        return a * v + (1 - a) * torch.nn.functional.avg_pool2d(v, 5, 1, 2, count_include_pad=False)

    estimates, errors = [], []
    for a in (0.2, 0.6):
        out = shrink(y, a)
        estimates.append(denoiser_estimate(judge, lambda v, a=a: shrink(v, a), y, out, seeds))
        errors.append(true_error(out))
    for est, err in zip(estimates, errors):
        assert (est - err).abs().max() < 0.35 * variance  # the noise's own energy on 10% of the pixels
    paired = (estimates[1] - estimates[0]) - (errors[1] - errors[0])
    assert paired.abs().max() < 0.15 * (errors[1] - errors[0]).abs().min()


def test_an_image_that_never_saw_the_judged_pixels_is_judged_by_its_loss_there_less_the_noise():
    truth = _smooth(3)
    op, y = _noisy(truth)
    judge = _judge(op, y)
    guess = _smooth(3, seed=5)  # independent of y
    keep = judge.keep.expand_as(guess)
    true = ((guess - truth).square() * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)
    assert (refit_estimate(judge, guess, y) - true).abs().max() < 0.2 * (2 * SIGMA) ** 2


def test_choose_is_a_searching_method_that_chooses():
    row = REGISTRY["choose"]
    assert row.optimises and row.chooses and row.learned_start_by_default
    assert not REGISTRY["ilo-auto"].chooses
    assert row.config(learned=True) == REGISTRY["ilo-auto"].config(learned=True)


@pytest.fixture(scope="module")
def flat_denoising():
    """Flat grey pictures under noise and the choose method's answer, with a search far too short
    to compete: a classical denoiser is better on every image, by a wide margin."""
    truth = torch.full((2, 3, 64, 64), 0.1)
    truth[1] = -0.3
    _, y = _noisy(truth)
    pictures = [((y[i] + 1) / 2).clamp(0, 1) for i in range(2)]  # [0, 1] pictures, as a caller hands them over
    r = ilo.Restorer(task="denoise", sigma=SIGMA, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    return pictures, r.restore(pictures, names=NAMES)


NAMES = ["grey", "dark"]


def test_where_a_classical_method_is_far_better_it_is_chosen_and_returned_as_it_is_alone(flat_denoising):
    pictures, restored = flat_denoising
    for i, out in enumerate(restored):
        est = out.estimated_error
        assert set(est) == {"ilo-auto", "tv", "wavelet", "bm3d"}
        assert out.chosen != "ilo-auto" and min(est, key=est.get) == out.chosen
        assert out.metrics()["chosen"] == out.chosen and out.metrics()["estimated_error"] == est
        # the same batch: FISTA's stopping test is the batch's
        alone = ilo.Restorer(task="denoise", sigma=SIGMA, method=out.chosen).restore(pictures, names=NAMES)
        assert torch.allclose(alone[i].tensor, out.tensor, atol=1e-6)


def test_without_a_held_out_share_ilo_auto_is_kept_and_the_record_says_why(tmp_path):
    """Super-resolution holds nothing out: nothing is estimated and every image keeps ilo-auto's."""
    r = ilo.Restorer(task="sr", factor=4, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    [out] = r.restore([torch.rand(3, 16, 16)], names=["small"])
    assert out.chosen == "ilo-auto" and out.estimated_error is None
    assert "super-resolution" in out.metrics()["choice_note"]


def test_exact_measurements_keep_ilo_auto_and_noisy_ones_judge_the_priors_refitted_on_everything():
    """An exact inpainting is not judged; a noisy one is, the priors fitted without the held-out
    share, and the one chosen is returned as it is alone (refitted on every measurement)."""
    picture = (_smooth(1)[0] + 1) / 2
    short = {"solver_overrides": {"steps": [2, 1]}, "encoder": "none", "centre_box": 0.5}
    [exact] = ilo.Restorer(task="inpaint", method="choose", **short).restore([picture], names=["p"])
    assert exact.chosen == "ilo-auto" and exact.estimated_error is None and "exact" in str(exact.choice_note)
    noisy = ilo.Restorer(task="inpaint", sigma=SIGMA, method="choose", **short)
    [out] = noisy.restore([picture], names=["p"])
    assert out.estimated_error is not None and out.chosen in ("tv", "wavelet")
    assert set(out.estimated_error) == {"ilo-auto", "tv", "wavelet"}
    alone = ilo.Restorer(task="inpaint", sigma=SIGMA, method=out.chosen, centre_box=0.5)
    [single] = alone.restore([picture], names=["p"])
    assert torch.allclose(single.tensor, out.tensor, atol=1e-5)


def test_a_folder_run_records_the_choice_and_every_estimate(tmp_path, capsys):
    out = tmp_path / "out"
    run_ok(
        capsys,
        "restore",
        FACE,
        "--clean",
        "--task",
        "denoise",
        "--method",
        "choose",
        "--steps",
        "2,1",
        "--encoder",
        "none",
        "--out",
        str(out),
    )
    [record] = json.loads((out / "metrics.json").read_text())["images"]
    assert record["chosen"] in record["estimated_error"]
    [row] = list(csv.DictReader((out / "metrics.csv").open()))
    assert row["chosen"] == record["chosen"]
    for name, value in record["estimated_error"].items():
        assert float(row[f"estimated_error_{name}"]) == pytest.approx(value)


def test_the_candidates_are_those_installed(monkeypatch):
    """Without the deepinv extra the priors drop out (the method still runs); BM3D only denoises."""
    from ilo.engine.api import choice
    from ilo.engine.problems.operators import Inpainting

    y = torch.zeros(1, 3, 64, 64)
    denoise, noisy_inpaint = TaskSpec("denoise"), TaskSpec("inpaint", sigma=SIGMA)
    assert [c.name for c in choice.candidates(Noise(SIGMA), y, denoise, 64)] == ["tv", "wavelet", "bm3d"]
    monkeypatch.setattr(choice, "installed", lambda module: module not in ("deepinv", "ptwt"))
    assert [c.name for c in choice.candidates(Noise(SIGMA), y, denoise, 64)] == ["bm3d"]
    assert choice.candidates(Inpainting(torch.ones(1, 1, 64, 64), SIGMA), y, noisy_inpaint, 64) == []


def test_the_benchmark_scores_the_choice_against_the_oracle_and_says_where_it_misses():
    """benchmarks/choice.py: the oracle takes each image's best single method; a choice 0.3 dB
    under the best single method misses, and so does one that takes 1.5x ilo-auto's time."""
    bench = _benchmark_choice()
    record = {
        "psnr": {"ilo-auto": [30.0, 20.0], "tv": [25.0, 22.0], "choose": [30.0, 21.4]},
        "mse": {"ilo-auto": [0.001, 0.01], "tv": [0.003, 0.006]},
        "seconds": {"ilo-auto": 1.0, "tv": 0.1, "choose": 1.5},
        "estimated_error": [{"ilo-auto": 0.0011, "tv": 0.0032}, {"ilo-auto": 0.008, "tv": 0.009}],
    }
    record.update(bench.scores(record))
    assert record["oracle"] == [30.0, 22.0] and record["regret"] == pytest.approx([0.0, 0.6])
    assert record["rho"] == pytest.approx(0.8)
    [line] = bench.verdicts("in-range", {"t": record})
    assert line.startswith("MISS") and "+0.70 dB" in line and "time 1.50x" in line
    assert bench.verdicts("out-of-range", {"t": record})[0].startswith("PASS")  # no time target there
    record["psnr"]["choose"] = [29.5, 20.0]  # 0.25 dB under ilo-auto's mean
    record.update(bench.scores(record))
    [line] = bench.verdicts("out-of-range", {"t": record})
    assert line.startswith("MISS") and "(ilo-auto) -0.25 dB" in line


def _benchmark_choice():
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("benchmarks.choice")


def test_a_candidate_whose_images_are_not_numbers_is_never_chosen(monkeypatch):
    from ilo.engine.api import choice

    broken = choice.Candidate("broken", lambda op, y: torch.full_like(y, float("nan")), True)
    monkeypatch.setattr(choice, "candidates", lambda *args: [broken])
    truth = torch.full((1, 3, 64, 64), 0.1)
    _, y = _noisy(truth)
    r = ilo.Restorer(task="denoise", sigma=SIGMA, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    [out] = r.restore([((y[0] + 1) / 2).clamp(0, 1)], names=["grey"])
    assert out.chosen == "ilo-auto" and out.estimated_error is not None
    assert out.estimated_error["broken"] is None and torch.isfinite(out.tensor).all()
    json.dumps(out.metrics(), allow_nan=False)  # what the service answers is valid JSON


def test_the_candidates_phase_says_what_is_running(flat_denoising):
    """Outside the search nothing else reports progress: each candidate is named as it starts."""
    pictures, _ = flat_denoising
    r = ilo.Restorer(task="denoise", sigma=SIGMA, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    notes: list[str] = []
    r.solve(r.prepare(pictures, names=NAMES), note=notes.append)
    assert notes == ["judging tv (1/3)", "judging wavelet (2/3)", "judging bm3d (3/3)"]


def test_an_image_is_judged_the_same_in_any_batch(flat_denoising):
    """Its held-out share and SURE's probe come from its own seed: ilo-auto's and BM3D's estimates
    of an image (and so the choice between them) do not depend on what else is in the batch."""
    pictures, together = flat_denoising
    r = ilo.Restorer(task="denoise", sigma=SIGMA, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    [alone] = r.restore(pictures[1:], names=NAMES[1:])
    assert together[1].estimated_error is not None and alone.estimated_error is not None
    for name in ("ilo-auto", "bm3d"):
        assert alone.estimated_error[name] == pytest.approx(together[1].estimated_error[name], rel=1e-4, abs=1e-7)


def test_with_no_candidate_installed_ilo_auto_is_kept_and_the_record_names_the_extras(monkeypatch):
    from ilo.engine.api import choice

    monkeypatch.setattr(choice, "installed", lambda module: False)
    truth = torch.full((1, 3, 64, 64), 0.1)
    _, y = _noisy(truth)
    r = ilo.Restorer(task="denoise", sigma=SIGMA, method="choose", solver_overrides={"steps": [2, 1]}, encoder="none")
    [out] = r.restore([((y[0] + 1) / 2).clamp(0, 1)], names=["grey"])
    assert out.chosen == "ilo-auto" and out.estimated_error is None
    assert "ilo-engine[deepinv]" in str(out.choice_note) and "ilo-engine[bm3d]" in str(out.choice_note)
