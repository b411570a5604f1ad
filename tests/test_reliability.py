"""The reliability promises (docs/restoring.md, "Reliability"), one named test each: nothing lost (inputs are never
overwritten), nothing half-written (atomic writes; a killed run leaves tables and no litter),
every input checked before work starts, resume that trusts content rather than names, one run
per folder at a time; and the input formats that used to be read wrongly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_fail, run_ok
from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "examples" / "faces"
FAST = ["--steps", "2,1", "--end-stage", "1", "--restarts", "1", "--quiet", "--backend", "torch"]
CLEAN_INPAINT = ["--clean", "--task", "inpaint", "--centre-box", "0.5"]


def _copy_faces(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(FACES.glob("generated_*.png"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def _records(out: Path) -> dict:
    return {r["name"]: r for r in json.loads((out / "metrics.json").read_text())["images"]}


def test_nothing_lost_outputs_never_replace_inputs(tmp_path, capsys):
    faces = _copy_faces(tmp_path / "faces")
    before = {p.name: p.read_bytes() for p in faces.iterdir()}
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", faces, *FAST)
    assert "is the folder of the input" in err
    # nor beside them under another name: a .jpg's restored .png would become an input next time
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    Image.open(faces / "generated_90100.png").save(jpg / "a.jpg")
    jpg_before = {p.name: p.read_bytes() for p in jpg.iterdir()}
    assert "is the folder of the input" in run_fail(capsys, "restore", jpg, *CLEAN_INPAINT, "--out", jpg, *FAST)
    assert {p.name: p.read_bytes() for p in faces.iterdir()} == before
    assert {p.name: p.read_bytes() for p in jpg.iterdir()} == jpg_before  # no a.png, no lock, no settings


def test_resume_redoes_an_input_whose_content_changed(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(FACES / "generated_90100.png", a / "same.png")
    shutil.copy(FACES / "generated_90101.png", b / "same.png")  # another face under the same name
    out = tmp_path / "out"
    assert "restored 1 image(s), 0 already finished" in run_ok(
        capsys, "restore", a / "same.png", *CLEAN_INPAINT, "--out", out, *FAST
    )
    first = _records(out)["same"]
    from ilo.engine.cli.main import main

    assert main([str(x) for x in ("restore", b / "same.png", *CLEAN_INPAINT, "--out", out, *FAST)]) == 0
    said = capsys.readouterr()
    assert "restored 1 image(s), 0 already finished" in said.out
    assert "other input files than when they were restored" in said.err and "restored again: same" in said.err
    second = _records(out)["same"]
    assert first["sources"]["input"] != second["sources"]["input"] and second["input"] == str(
        (b / "same.png").resolve()
    )
    # the same content again is finished, whatever folder it comes from
    shutil.copy(b / "same.png", a / "same.png")
    assert "0 image(s), 1 already finished" in run_ok(
        capsys, "restore", a / "same.png", *CLEAN_INPAINT, "--out", out, *FAST
    )


def test_resume_redoes_an_image_whose_mask_changed(tmp_path, capsys):
    faces = _copy_faces(tmp_path / "faces", 1)
    masks = tmp_path / "masks"
    masks.mkdir()
    hole = np.full((64, 64, 3), 255, np.uint8)
    hole[20:40, 20:40] = 0
    Image.fromarray(hole).save(masks / "generated_90100.png")
    args = [
        "restore",
        faces,
        "--task",
        "inpaint",
        "--mask-dir",
        masks,
        "--truth-dir",
        FACES,
        "--out",
        tmp_path / "out",
        *FAST,
    ]
    run_ok(capsys, *args)
    assert "0 image(s), 1 already finished" in run_ok(capsys, *args)
    hole[0:10] = 0  # the user edits the mask
    Image.fromarray(hole).save(masks / "generated_90100.png")
    assert "restored 1 image(s), 0 already finished" in run_ok(capsys, *args)


def test_every_input_is_checked_before_work_starts(tmp_path, capsys):
    folder = tmp_path / "cs"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros(1229, np.float32))
    bad = np.zeros(1229, np.float32)
    bad[3] = np.inf
    np.save(folder / "b.npy", bad)
    err = run_fail(capsys, "restore", folder, "--task", "cs", "--out", tmp_path / "out", *FAST)
    assert "b.npy" in err and "NaN or inf" in err and "rerun" not in err
    assert not (tmp_path / "out").exists()  # not even the folder: a failed check writes nothing


def test_gaussian_cs_measurements_restore(tmp_path, capsys):
    # the dense Gaussian operator had no `m`, so reading its measurement files crashed
    from ilo.engine.problems.operators import DenseGaussianCS

    run_ok(
        capsys,
        "degrade",
        FACES / "generated_90100.png",
        "--task",
        "cs",
        "--cs-matrix",
        "gaussian",
        "--out",
        tmp_path / "y",
    )
    run_ok(
        capsys, "restore", tmp_path / "y", "--task", "cs", "--cs-matrix", "gaussian", "--out", tmp_path / "out", *FAST
    )
    [record] = _records(tmp_path / "out").values()
    assert record["name"] == "generated_90100" and record["task"] == "cs" and record["output"] == "generated_90100.png"
    # Fitted to the measurements in the file, by the matrix that made them (degrade's defaults:
    # ratio 0.1, seed 0): the written image's fit, computed here, is the record's 2.77 (8-bit
    # rounding and the clamp to [-1, 1] move it by 2e-4 of itself; another matrix seed gives
    # 5.2, the measurements reversed 5.6), and 3 steps already fit better than a grey image,
    # whose fit is the measurements' mean square (3.2).
    y = torch.from_numpy(np.load(tmp_path / "y" / "generated_90100.npy"))[None]
    pixels = np.asarray(Image.open(tmp_path / "out" / "generated_90100.png"), dtype=np.float32)
    image = torch.from_numpy(pixels / 127.5 - 1).permute(2, 0, 1)[None]
    op = DenseGaussianCS(3 * 64 * 64, y.shape[1], seed=0)
    assert y.shape == (1, round(0.1 * 3 * 64 * 64))
    assert float(op.data_fit(image, y)) == pytest.approx(record["measurement_mse"], rel=0.02)
    assert record["measurement_mse"] < 0.95 * float(y.square().mean())


def test_nothing_half_written_a_killed_run_resumes_to_the_same_bytes(tmp_path):
    faces = _copy_faces(tmp_path / "faces")
    common = [
        "-m",
        "ilo.engine.cli.main",
        "restore",
        str(faces),
        *CLEAN_INPAINT,
        "--steps",
        "20,10",
        "--end-stage",
        "1",
        "--restarts",
        "1",
        "--batch-size",
        "1",
        "--backend",
        "torch",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "whole")], check=True, capture_output=True, env=env
    )

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, *common, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len([p for p in (out / "records").glob("*.json") if not p.name.startswith(".")])
    assert 0 < finished < 3, "the run was not killed mid-way; make its steps longer"
    # a killed run's tables already list what it finished (all but, at most, the image whose
    # record was written last), and a leftover temporary file goes on rerun
    assert finished - 1 <= len(json.loads((out / "metrics.json").read_text())["images"]) <= finished
    (out / ".generated_90102.png.x1y2.partial.png").write_bytes(b"half")
    done = subprocess.run(
        [sys.executable, *common, "--out", str(out)], check=True, capture_output=True, text=True, env=env
    )
    assert f"{3 - finished} image(s), {finished} already finished" in done.stdout
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.name == ".ilo.lock"]
    for name in ("generated_90100.png", "generated_90101.png", "generated_90102.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_one_run_per_output_folder(tmp_path, capsys):
    from ilo.engine.runs.run_dir import RunDir

    faces = _copy_faces(tmp_path / "faces", 1)
    out = tmp_path / "out"
    with RunDir(out).open():  # another run holds the folder
        err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, *FAST)
    assert "another ilo run is writing to" in err
    assert not list(out.glob("*.png"))
    run_ok(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, *FAST)  # free again once it is done


def test_a_failed_batch_still_leaves_the_tables_of_what_finished(tmp_path, capsys, monkeypatch):
    import ilo.engine.api.batch_solve as restore
    from ilo.errors import IloError

    calls = []
    real_solve = restore.solve

    def solve_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise IloError("the optimisation diverged")
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(restore, "solve", solve_then_fail)
    faces = _copy_faces(tmp_path / "faces")
    out = tmp_path / "out"
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--batch-size", "1", "--out", out, *FAST)
    assert "1 image(s) of this run finished" in err
    assert list(_records(out)) == ["generated_90100"]


def test_write_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import ilo.atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(ilo.atomic.tempfile, "mkstemp", read_only)
    faces = _copy_faces(tmp_path / "faces", 1)
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", tmp_path / "out", *FAST)
    assert "Read-only file system" in err


def test_the_command_parser_does_not_load_torch():
    code = "import sys, ilo.engine.cli.main as c; c.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_float_tiff_is_read_as_zero_to_one(tmp_path):
    from ilo.engine.inputs.image_files import read_image

    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    image = read_image(tmp_path / "f.tif")
    assert torch.allclose(image[0], torch.from_numpy(values) * 2 - 1, atol=1e-6)
    Image.fromarray(values * 255, mode="F").save(tmp_path / "g.tif")
    with pytest.raises(Exception, match="must lie in \\[0, 1\\]"):
        read_image(tmp_path / "g.tif")


def test_large_images_are_capped_and_reduced_before_float(tmp_path):
    from ilo import InputError
    from ilo.engine.inputs.image_files import fit_to, image_tensor, read_picture

    path = tmp_path / "big.png"
    pixels = np.zeros((2000, 3000, 3), np.uint8)
    pixels[:, 1500:] = 255
    Image.fromarray(pixels).save(path)
    with pytest.raises(InputError, match="megapixels, over the limit of 5"):
        read_picture(path, max_pixels=5_000_000)
    picture = read_picture(path, fit=("resize", 64))
    assert picture.size == (3000, 2000) and max(picture.pixels.shape[:2]) < 500  # reduced while 8-bit
    reduced, _ = fit_to(image_tensor(picture), 64, "resize", "big")
    full, _ = fit_to(image_tensor(read_picture(path)), 64, "resize", "big")
    gap = (reduced - full).abs()  # the box pre-filter and bicubic differ only along the sharp edge
    assert reduced.shape == (3, 64, 64) and gap.mean() < 0.01 and gap.max() < 0.1
    cropped = read_picture(path, fit=("crop", 64))
    assert cropped.pixels.shape == (64, 64, 3)


def test_safetensors_whose_header_length_starts_with_0x80(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from ilo.generators.checkpoints.files import default_weights_path, sniff_format

    path = tmp_path / "v.safetensors"
    tensors = load_file(default_weights_path())
    for pad in range(
        0, 512
    ):  # the header is padded to 8 bytes: find the padding that makes the header length's low byte 0x80
        save_file(tensors, path, metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert sniff_format(path.read_bytes()) == "safetensors"
    assert "dcgan" in run_ok(capsys, "info", path)


@pytest.mark.parametrize(
    "mode, pixels, expected",
    [
        ("F", np.full((600, 600), 0.5, np.float32), 127.5),
        ("I;16", np.full((600, 600), 30000, np.uint16), 30000 / 65535 * 255),
        ("P", np.full((600, 600), 200, np.uint8), 200.0),
    ],
)
def test_early_reduction_keeps_every_pixel_format(tmp_path, mode, pixels, expected):
    from ilo.engine.inputs.image_files import read_picture

    image = Image.fromarray(pixels)
    image = image.convert("P") if mode == "P" else image
    image.save(tmp_path / "x.tif")
    picture = read_picture(tmp_path / "x.tif", fit=("resize", 64))
    assert picture.pixels.shape == (300, 300, 3) and picture.pixels.mean() == pytest.approx(expected, abs=0.5)
