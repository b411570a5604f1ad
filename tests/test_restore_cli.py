"""`ilo degrade` and `ilo restore` end to end on the embedded DCGAN: outputs, metrics, resume,
and bad input (clear one-line errors, nothing half-written)."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import run_fail, run_ok, write_generated_faces
from PIL import Image

from ilo.engine.problems.metrics import psnr

FAST = ["--steps", "6,3", "--end-stage", "1", "--restarts", "1", "--quiet"]


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory, dcgan):
    return write_generated_faces(tmp_path_factory.mktemp("clean"), dcgan, 3, seed=11)


def _png(path):
    return np.asarray(Image.open(path))


def _unit(path):
    """A PNG as a [1, C, H, W] tensor of [0, 1], as the metrics take it."""
    return torch.from_numpy(_png(path).astype(np.float32) / 255).permute(2, 0, 1)[None]


def _no_partials(folder):
    return not [p for p in folder.rglob("*") if ".partial" in p.name]


def test_degrade_then_restore_inpainting(tmp_path, capsys, clean_dir):
    degraded = tmp_path / "degraded"
    run_ok(capsys, "degrade", clean_dir, "--task", "inpaint", "--centre-box", "0.5", "--out", degraded)
    mask = _png(degraded / "masks" / "face0.png")
    assert mask[32, 32].max() == 0 and mask[2, 2].min() == 255  # black = missing
    assert _png(degraded / "face0.png")[32, 32].tolist() == [128, 128, 128]  # the hole holds no data

    out = tmp_path / "restored"
    # 30 + 15 steps, not FAST's 6 + 3: that short a solve fills face2's hole worse than grey does
    run_ok(
        capsys,
        "restore",
        degraded,
        "--task",
        "inpaint",
        "--mask-dir",
        degraded / "masks",
        "--truth-dir",
        clean_dir,
        "--out",
        out,
        "--strip",
        "--save-degraded",
        "--batch-size",
        "2",
        "--steps",
        "30,15",
        "--end-stage",
        "1",
        "--restarts",
        "1",
        "--quiet",
    )
    for i in range(3):
        assert _png(out / f"face{i}.png").shape == (64, 64, 3)
        assert _png(out / f"face{i}.strip.png").shape == (64, 3 * 64, 3)  # degraded | restored | truth
    report = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in report["images"]] == ["face0", "face1", "face2"]
    for i, r in enumerate(report["images"]):
        assert 0 < r["ssim"] <= 1 and r["psnr_hole"] < r["psnr"] and r["seconds"] > 0
        # Better than doing nothing: inside the hole the restore must beat the input's grey
        # (128/255 in the file, 0.5 in the solver; 11.3-14.2 dB there, the restore 13.9-18.2), and
        # over the whole image every flat picture: the truth's mean colour is the best of them
        # (12.5-15.9 dB; plain grey 12.0-14.5; the restore 17.3-20.7). Not the input over the
        # whole image: the restore redraws the observed pixels too, which the input holds exactly.
        truth, hole = _unit(clean_dir / f"face{i}.png"), 1 - _unit(degraded / "masks" / f"face{i}.png")[:, :1]
        given = _unit(degraded / f"face{i}.png")
        grey_hole = max(psnr(given, truth, hole), psnr(torch.full_like(truth, 0.5), truth, hole))
        assert r["psnr_hole"] > float(grey_hole), r["name"]
        assert r["psnr"] > float(psnr(truth.mean((2, 3), keepdim=True).expand_as(truth), truth)), r["name"]
        # the metrics are the written file's, up to its 8-bit rounding (under 0.01 dB at these errors)
        assert r["psnr"] == pytest.approx(float(psnr(_unit(out / f"face{i}.png"), truth)), abs=0.01)
    assert report["summary"]["psnr"]["n"] == 3
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 3 and float(rows[1]["psnr"]) == pytest.approx(report["images"][1]["psnr"])
    assert _no_partials(out)


def test_restore_resumes_and_refuses_other_settings(tmp_path, capsys, clean_dir):
    out = tmp_path / "out"
    args = ["restore", clean_dir, "--clean", "--task", "sr", "--factor", "4", "--out", out, *FAST]
    assert "restored 3 image(s), 0 already finished" in run_ok(capsys, *args)
    kept = (out / "face1.png").stat().st_mtime_ns
    (out / "records" / "face0.json").unlink()  # as if the run had stopped before face0 finished
    assert "restored 1 image(s), 2 already finished" in run_ok(capsys, *args)
    assert (out / "face1.png").stat().st_mtime_ns == kept
    assert len(json.loads((out / "metrics.json").read_text())["images"]) == 3
    err = run_fail(capsys, *args[: -len(FAST)], "--steps", "7,3", "--end-stage", "1", "--restarts", "1", "--quiet")
    assert "other settings" in err and "solver" in err
    # a setting added later is recorded only where it is used: folders written before it resume
    from ilo.engine.runs.run_dir import SETTINGS_FILE

    assert "ensemble" not in json.loads((out / SETTINGS_FILE).read_text())["solver"]
    err = run_fail(capsys, *args, "--ensemble", "2")
    assert "other settings" in err and "solver" in err


def test_restore_is_independent_of_batching(tmp_path, capsys, clean_dir):
    common = [clean_dir, "--clean", "--task", "denoise", "--sigma", "0.1", *FAST]
    run_ok(capsys, "restore", *common, "--out", tmp_path / "a", "--batch-size", "3")
    run_ok(capsys, "restore", *common, "--out", tmp_path / "b", "--batch-size", "1")
    for i in range(3):
        assert (
            np.abs(_png(tmp_path / "a" / f"face{i}.png").astype(int) - _png(tmp_path / "b" / f"face{i}.png")).max() <= 1
        )


def test_restore_runs_on_the_engine_by_default_and_matches_torch(tmp_path, capsys, clean_dir):
    common = [clean_dir, "--clean", "--task", "inpaint", "--centre-box", "0.5", *FAST]
    run_ok(capsys, "restore", *common, "--out", tmp_path / "engine")
    run_ok(capsys, "restore", *common, "--out", tmp_path / "torch", "--backend", "torch")
    backends = {r["backend"] for r in json.loads((tmp_path / "engine" / "metrics.json").read_text())["images"]}
    assert backends == {"onnxruntime on cpu"}
    assert {r["backend"] for r in json.loads((tmp_path / "torch" / "metrics.json").read_text())["images"]} == {"torch"}
    for i in range(3):
        a, b = _png(tmp_path / "engine" / f"face{i}.png"), _png(tmp_path / "torch" / f"face{i}.png")
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # 9 steps: float32 rounding, not more


def test_a_backend_that_cannot_run_here_is_a_clear_error(tmp_path, capsys, clean_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = run_fail(
        capsys, "restore", clean_dir, "--clean", "--task", "sr", "--out", tmp_path / "o", "--backend", "tensorrt", *FAST
    )
    assert "tensorrt" in err and "CUDA" in err
    err = run_fail(
        capsys, "restore", clean_dir, "--clean", "--task", "sr", "--out", tmp_path / "o", "--device", "cuda", *FAST
    )
    assert "no CUDA device" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


def test_sr_and_cs_inputs_from_degrade(tmp_path, capsys, clean_dir):
    run_ok(capsys, "degrade", clean_dir, "--task", "sr", "--factor", "4", "--out", tmp_path / "lr")
    assert _png(tmp_path / "lr" / "face0.png").shape == (16, 16, 3)
    run_ok(capsys, "restore", tmp_path / "lr" / "face0.png", "--task", "sr", "--out", tmp_path / "sr", *FAST)
    assert _png(tmp_path / "sr" / "face0.png").shape == (64, 64, 3)

    run_ok(capsys, "degrade", clean_dir, "--task", "cs", "--ratio", "0.05", "--out", tmp_path / "cs")
    y = np.load(tmp_path / "cs" / "face2.npy")
    assert y.shape == (round(0.05 * 3 * 64 * 64),)
    run_ok(
        capsys,
        "restore",
        tmp_path / "cs",
        "--task",
        "cs",
        "--ratio",
        "0.05",
        "--truth-dir",
        clean_dir,
        "--out",
        tmp_path / "cs-out",
        *FAST,
    )
    assert len(json.loads((tmp_path / "cs-out" / "metrics.json").read_text())["images"]) == 3
    err = run_fail(capsys, "restore", tmp_path / "cs", "--task", "cs", "--ratio", "0.1", "--out", tmp_path / "x", *FAST)
    assert "face0.npy" in err and "measurements" in err


def test_bm3d_denoises(tmp_path, capsys, clean_dir):
    out = tmp_path / "bm3d"
    run_ok(
        capsys,
        "restore",
        clean_dir / "face0.png",
        "--clean",
        "--task",
        "denoise",
        "--method",
        "bm3d",
        "--out",
        out,
        "--quiet",
    )
    (record,) = json.loads((out / "metrics.json").read_text())["images"]
    assert record["psnr"] > 24  # sigma 0.1 noise alone is 20 dB
    err = run_fail(
        capsys,
        "restore",
        clean_dir,
        "--clean",
        "--task",
        "denoise",
        "--method",
        "bm3d",
        "--steps",
        "5",
        "--out",
        tmp_path / "x",
        "--quiet",
    )
    assert "BM3D takes no solver settings (got steps)" in err
    assert "denoise" in run_fail(
        capsys, "restore", clean_dir, "--clean", "--task", "sr", "--method", "bm3d", "--out", tmp_path / "x", "--quiet"
    )


def test_wrong_size_is_refused_unless_fitted(tmp_path, capsys, clean_dir):
    big = tmp_path / "big.png"
    Image.fromarray(np.full((80, 96, 3), 200, np.uint8)).save(big)
    err = run_fail(capsys, "restore", big, "--clean", "--task", "denoise", "--out", tmp_path / "o", *FAST)
    assert "96x80" in err and "--fit" in err
    assert not (tmp_path / "o" / "big.png").exists()
    run_ok(capsys, "restore", big, "--clean", "--task", "denoise", "--fit", "crop", "--out", tmp_path / "o", *FAST)
    assert _png(tmp_path / "o" / "big.png").shape == (64, 64, 3)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(small)
    run_ok(
        capsys, "degrade", small, "--task", "inpaint", "--centre-box", "0.25", "--fit", "pad", "--out", tmp_path / "p"
    )
    mask = _png(tmp_path / "p" / "masks" / "small.png")[..., 0]
    assert mask[0, 0] == 0 and mask[20, 20] == 255 and mask[32, 32] == 0  # padding and the hole are missing


def test_mask_size_mismatch(tmp_path, capsys, clean_dir):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(mask)
    out = tmp_path / "out"
    err = run_fail(capsys, "restore", clean_dir, "--task", "inpaint", "--mask", mask, "--out", out, *FAST)
    assert "mask.png" in err and "32x32" in err and "64x64" in err
    assert not list(out.glob("*.png"))


def test_unreadable_image(tmp_path, capsys, clean_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes((clean_dir / "face0.png").read_bytes())
    (folder / "b.png").write_text("not an image")
    out = tmp_path / "out"
    err = run_fail(capsys, "restore", folder, "--clean", "--task", "denoise", "--out", out, *FAST)
    assert "b.png" in err and "not a readable image" in err
    assert not (out / "a.png").exists()  # every input is checked before any work starts


def test_divergence_is_clear_and_leaves_nothing_half_written(tmp_path, capsys, clean_dir):
    out = tmp_path / "out"
    err = run_fail(
        capsys,
        "restore",
        clean_dir,
        "--clean",
        "--task",
        "denoise",
        "--method",
        "csgm",
        "--lr",
        "1e30",
        "--steps",
        "5",
        "--restarts",
        "1",
        "--out",
        out,
        "--quiet",
    )
    assert "diverged" in err and "learning rate" in err and "0 image(s)" in err
    assert not list(out.glob("*.png")) and not list(out.glob("records/*")) and _no_partials(out)


def test_missing_inputs_and_bad_options(tmp_path, capsys, clean_dir):
    assert "no such file" in run_fail(capsys, "restore", tmp_path / "nope.png", "--task", "denoise", "--out", tmp_path)
    assert "matches no files" in run_fail(
        capsys, "restore", str(tmp_path / "*.png"), "--task", "denoise", "--out", tmp_path
    )
    assert "needs a mask" in run_fail(capsys, "restore", clean_dir, "--task", "inpaint", "--out", tmp_path / "o", *FAST)
    assert "inpaint" in run_fail(capsys, "restore", clean_dir, "--task", "sr", "--keep", "0.1", "--out", tmp_path / "o")


def test_lpips_metric_when_the_backbone_exists(tmp_path, capsys, clean_dir, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), hub / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "out"
    run_ok(
        capsys,
        "restore",
        clean_dir / "face1.png",
        "--clean",
        "--task",
        "sr",
        "--lpips-net",
        "alex",
        "--out",
        out,
        *FAST,
    )
    (record,) = json.loads((out / "metrics.json").read_text())["images"]
    assert record["lpips"] > 0
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    run_ok(
        capsys,
        "restore",
        clean_dir / "face1.png",
        "--clean",
        "--task",
        "sr",
        "--lpips-net",
        "alex",
        "--out",
        tmp_path / "o2",
        *FAST,
    )
    (record,) = json.loads((tmp_path / "o2" / "metrics.json").read_text())["images"]
    assert "lpips" not in record  # no backbone: the metric is skipped, not faked


def test_held_out_selection_is_recorded_per_image(tmp_path, capsys, clean_dir):
    # issue #19: what chose each image's result (its round, that round's l1 radius, its held-out
    # loss) is in its record and in the metrics table
    out = tmp_path / "o"
    held_out = ["restore", clean_dir, "--clean", "--task", "denoise", "--hold-out", "0.2", "--l1-radius", "none,0.3"]
    run_ok(capsys, *held_out, "--out", out, *FAST)
    images = json.loads((out / "metrics.json").read_text())["images"]
    assert len(images) == 3
    for record in images:
        assert record["held_out_loss"] > 0 and record["best_round"] in (0, 1)
        assert record["l1_radius"] == (None if record["best_round"] == 0 else 0.3)
    assert "held_out_loss" in (out / "metrics.csv").read_text().splitlines()[0]
    err = run_fail(
        capsys, "restore", clean_dir, "--clean", "--task", "denoise", "--hold-out", "1", "--out", tmp_path / "x", *FAST
    )
    assert "hold_out" in err and not (tmp_path / "x").exists()
    # an ensemble records every member's choice; its held-out loss is their mean, its round member 0's
    run_ok(capsys, *held_out, "--ensemble", "2", "--out", tmp_path / "e", *FAST)
    members = json.loads((tmp_path / "e" / "metrics.json").read_text())["images"]
    for record, single in zip(members, images):  # member 0 is the plain solve above
        assert len(record["member_rounds"]) == 2 and record["member_rounds"][0] == single["best_round"]
        assert record["member_held_out_loss"][0] == pytest.approx(single["held_out_loss"], rel=1e-3)
        assert record["member_held_out_loss"][1] != pytest.approx(single["held_out_loss"], rel=1e-3)  # another member
    with open(tmp_path / "e" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["member_rounds"] for r in rows] == [" ".join(map(str, m["member_rounds"])) for m in members]
    err = run_fail(
        capsys, "restore", clean_dir, "--clean", "--task", "denoise", "--ensemble", "0", "--out", tmp_path / "x", *FAST
    )
    assert "ensemble must be a whole number" in err and not (tmp_path / "x").exists()
