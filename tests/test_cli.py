"""The `ilo` command end to end: sample, info, convert, and one-line errors for bad input."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import STYLEGAN2_32, run_fail, run_ok
from PIL import Image

from ilo import load_generator
from ilo.engine.cli.main import main


def test_sample_default_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    run_ok(capsys, "sample", "--model", "default", "--n", "6", "--seed", "3", "--columns", "3", "-o", str(out))
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * 66 + 2, 3 * 66 + 2, 3) and image.std() > 10
    again = tmp_path / "again.png"
    run_ok(capsys, "sample", "--n", "6", "--seed", "3", "--columns", "3", "-o", str(again))
    assert out.read_bytes() == again.read_bytes()


def test_sample_given_z_is_exact(sg2, tmp_path, capsys, golden):
    np.save(tmp_path / "z.npy", golden["z"].numpy())
    out = tmp_path / "img.npy"
    run_ok(
        capsys,
        "sample",
        "--model",
        str(STYLEGAN2_32),
        "--latents",
        str(tmp_path / "z.npy"),
        "--truncation",
        "0.7",
        "--save-array",
        str(out),
        "--batch-size",
        "3",
    )
    images = np.load(out)
    assert images.dtype == np.float32 and images.shape == (4, 3, 32, 32)
    assert np.abs(images - golden["img_trunc"].numpy()).max() <= 1e-4


def test_sample_wplus_with_noises(tmp_path, capsys, golden):
    torch.save({"wplus": golden["wplus"]}, tmp_path / "w.pt")
    np.savez(tmp_path / "n.npz", **{f"noise_{i}": x.numpy() for i, x in enumerate(golden["noises"])})
    run_ok(
        capsys,
        "sample",
        "--model",
        str(STYLEGAN2_32),
        "--latents",
        str(tmp_path / "w.pt"),
        "--input-space",
        "wplus",
        "--noises",
        str(tmp_path / "n.npz"),
        "--save-array",
        str(tmp_path / "o.npy"),
        "-o",
        str(tmp_path / "o.png"),
    )
    assert np.abs(np.load(tmp_path / "o.npy") - golden["img_wplus"].numpy()).max() <= 1e-4
    assert (tmp_path / "o.png").is_file()


def test_info_text_and_json(capsys):
    text = run_ok(capsys, "info", str(STYLEGAN2_32))
    assert "stylegan2 generator, 32x32" in text and "noise maps (7)" in text
    d = json.loads(run_ok(capsys, "info", "default", "--json"))
    assert d["family"] == "dcgan" and len(d["stages"]) == 5 and len(d["fingerprint"]) == 64


def test_convert_round_trip(tmp_path, capsys):
    run_ok(capsys, "convert", str(STYLEGAN2_32), str(tmp_path / "g.pkl"))
    run_ok(capsys, "convert", str(tmp_path / "g.pkl"), str(tmp_path / "g.pt"))
    a, b = load_generator(STYLEGAN2_32).state_dict(), load_generator(tmp_path / "g.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((2, 7), np.float32))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": print}))
    assert "no such file" in run_fail(capsys, "info", str(tmp_path / "nope.pt"))
    assert "must have shape [N, 100]" in run_fail(
        capsys, "sample", "--latents", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "x.png")
    )
    assert "refusing to load" in run_fail(capsys, "info", str(tmp_path / "evil.pkl"))
    assert "nothing to write" in run_fail(capsys, "sample")
    assert "only StyleGAN2" in run_fail(capsys, "convert", "default", str(tmp_path / "d.pkl"))
    assert "missing 'noise_3'" in run_fail(
        capsys,
        "sample",
        "--model",
        str(STYLEGAN2_32),
        "--noises",
        str(_npz(tmp_path, 3)),
        "-o",
        str(tmp_path / "x.png"),
    )
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "d.pkl").exists()


def _npz(tmp_path, n):
    path = tmp_path / "few.npz"
    np.savez(path, **{f"noise_{i}": np.zeros((4, 4), np.float32) for i in range(n)})
    return path


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        main(["--debug", "info", str(tmp_path / "nope.pt")])


def test_module_entry_point_runs_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "ilo", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and all(c in done.stdout for c in ("sample", "info", "convert"))
    done = subprocess.run(
        [sys.executable, "-m", "ilo", "info", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ilo"]
    assert script.value == "ilo.engine.cli.main:main"


def test_outputs_are_written_atomically_with_normal_permissions(tmp_path, capsys):
    out = tmp_path / "grid.png"
    run_ok(capsys, "sample", "--n", "2", "-o", str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no partial files left behind
    assert out.stat().st_mode & 0o044 == 0o044 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
