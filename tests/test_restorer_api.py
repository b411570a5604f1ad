"""`ilo.Restorer`, the embedding API: every kind of picture a pipeline holds, the CLI's seeding,
several threads at once, and one clear error per bad input."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ilo
from ilo.engine.api.restorer import method_config
from ilo.errors import InputError
from tests.conftest import run_ok

FACES = Path(__file__).parents[1] / "examples" / "faces"
FAST = dict(steps=[6, 3], restarts=2)


@pytest.fixture(scope="module")
def denoiser(dcgan):
    return ilo.Restorer(dcgan, task="denoise", method="ilo", backend="torch", config=method_config("ilo", **FAST))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    """One degraded picture as the camera would give it (`ilo degrade`'s noise)."""
    from ilo.engine.cli.main import main

    out = tmp_path_factory.mktemp("noisy")
    assert main(["degrade", str(FACES / "generated_90100.png"), "--task", "denoise", "--out", str(out)]) == 0
    return out / "generated_90100.png"


def test_every_kind_of_picture_gives_the_same_result(denoiser, noisy):
    pixels = np.array(Image.open(noisy).convert("RGB"))
    forms = {
        "path": noisy,
        "bytes": noisy.read_bytes(),
        "pil": Image.open(noisy),
        "uint8 array": pixels,
        "float array": pixels / 255.0,
        "tensor": torch.from_numpy(pixels).permute(2, 0, 1).float() / 255,
    }
    results = {kind: denoiser.restore(picture, names=["face"])[0] for kind, picture in forms.items()}
    reference = results["path"].to_numpy()
    assert reference.shape == (64, 64, 3) and reference.dtype == np.uint8
    for kind, result in results.items():
        assert np.array_equal(result.to_numpy(), reference), kind
        assert result.name == "face" and result.batch_size == 1
    decoded = np.asarray(Image.open(io.BytesIO(results["pil"].png_bytes())))
    assert np.array_equal(decoded, reference)


def test_seeding_follows_the_name_as_on_the_command_line(denoiser, noisy, tmp_path, capsys):
    """The CLI names an image by its file's stem: the API given that name restores it identically."""
    run_ok(
        capsys,
        "restore",
        noisy,
        "--task",
        "denoise",
        "--method",
        "ilo",
        "--out",
        tmp_path,
        "--backend",
        "torch",
        "--steps",
        "6,3",
        "--restarts",
        "2",
        "--quiet",
    )
    from_cli = np.asarray(Image.open(tmp_path / f"{noisy.stem}.png"))
    [named] = denoiser.restore(noisy, names=[noisy.stem])
    assert np.array_equal(named.to_numpy(), from_cli)
    [other] = denoiser.restore(noisy, names=["another name"])
    assert not np.array_equal(other.to_numpy(), from_cli)  # another name, other random starts
    # unnamed pictures are named by their content: the same picture, the same result
    first, second = denoiser.restore([noisy, noisy.read_bytes()])
    assert first.name == second.name and first.name.startswith("image-")
    assert np.array_equal(first.to_numpy(), second.to_numpy())


def test_batches_give_each_image_its_own_result(denoiser, noisy):
    """A batch of four holds the same images as four single calls. Measured on the 2-core EPYC:
    identical (max difference 0.0). Torch's CPU kernels may round differently at another batch
    size on other machines, so the bound is 2e-2 of the [0, 1] range (five 8-bit levels)."""
    pixels = np.asarray(Image.open(noisy).convert("RGB"))
    flipped = np.ascontiguousarray(pixels[:, ::-1])
    pictures, names = [pixels, flipped, pixels, flipped], ["a", "b", "c", "d"]
    batched = denoiser.restore(pictures, names=names)
    for picture, name, result in zip(pictures, names, batched):
        [alone] = denoiser.restore(picture, names=[name])
        assert result.batch_size == 4 and alone.batch_size == 1
        assert (result.tensor - alone.tensor).abs().max() < 2e-2


def test_several_threads_share_one_restorer(denoiser, noisy, monkeypatch):
    """Four threads at once: each gets its own image's result, and the solves take turns on the
    shared engine (a solve entered while another runs would share its buffers)."""
    import time

    import ilo.engine.api.batch_solve as batch_solve

    names = [f"thread-{i}" for i in range(4)]
    expected = {n: denoiser.restore(noisy, names=[n])[0].to_numpy() for n in names}
    inside, most = [0], [0]
    real_solve = batch_solve.solve

    def counting_solve(*args, **kwargs):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # room for another thread to come in, were it let in
        try:
            return real_solve(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(batch_solve, "solve", counting_solve)
    got, errors = {}, []

    def work(name):
        try:
            got[name] = denoiser.restore(noisy, names=[name])[0].to_numpy()
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert most[0] == 1
    for n in names:
        assert np.array_equal(got[n], expected[n])


def test_inpainting_takes_masks_or_the_built_in_one(dcgan):
    r = ilo.Restorer(
        dcgan, task="inpaint", centre_box=0.5, backend="torch", config=method_config("ilo", steps=[3, 2], restarts=1)
    )
    picture = np.asarray(Image.open(FACES / "generated_90101.png").convert("RGB"))
    mask = np.ones((64, 64), dtype=np.uint8) * 255
    mask[16:48, 16:48] = 0  # the built-in centre box, drawn by hand
    [built_in] = r.restore(picture, names=["x"])
    [given] = r.restore(picture, masks=[mask], names=["x"])
    assert np.array_equal(built_in.to_numpy(), given.to_numpy())
    with pytest.raises(InputError, match="the mask of image 0 is 32x32 but image 0 is 64x64"):
        r.restore(picture, masks=[mask[:32, :32]])


def test_compressed_sensing_takes_vectors(dcgan):
    r = ilo.Restorer(
        dcgan, task="cs", ratio=0.05, backend="torch", config=method_config("ilo", steps=[3, 2], restarts=1)
    )
    m = r.task.measurement_count(64)
    y = np.random.default_rng(0).normal(size=(2, m)).astype(np.float32) * 0.1
    first, _ = r.restore(y, names=["p", "q"])
    assert first.tensor.shape == (3, 64, 64) and first.name == "p"
    with pytest.raises(InputError, match=f"holds {m - 1} measurements but --ratio 0.05 at 64px means {m}"):
        r.restore(y[0, :-1])


def test_an_ensemble_says_what_each_member_chose(dcgan, noisy, denoiser):
    # what the command line records, the Python API (and so `ilo serve`'s metrics) returns too
    r = ilo.Restorer(dcgan, task="denoise", backend="torch", config=method_config("ilo-auto", **FAST, ensemble=2))
    [out] = r.restore(noisy)
    metrics = out.metrics()
    assert len(metrics["member_rounds"]) == len(metrics["member_held_out_loss"]) == 2
    assert metrics["best_round"] == metrics["member_rounds"][0]
    assert metrics["held_out_loss"] == pytest.approx(sum(metrics["member_held_out_loss"]) / 2, rel=1e-5)
    [single] = denoiser.restore(noisy)
    assert "member_rounds" not in single.metrics()


@pytest.mark.parametrize(
    "picture, masks, message",
    [
        (np.zeros((50, 50, 3), np.uint8), None, r"image 0: image is 50x50 but this task needs 64x64"),
        (np.full((64, 64, 3), 2.0), None, r"floating-point pixels must lie in \[0, 1\]"),
        (np.full((64, 64, 3), np.nan), None, "NaN or inf"),
        (np.zeros((64, 64, 3), np.int64), None, "pixels of type int64"),
        (np.zeros((64, 64, 5), np.uint8), None, r"a picture of shape \(64, 64, 5\)"),
        (b"not an image", None, "image 0: not a readable image"),
        ({"a": 1}, None, "a dict is not a picture"),
        (np.zeros((64, 64, 3), np.uint8), [np.ones((64, 64))], "masks belong to the inpaint task, not denoise"),
        ([np.zeros((64, 64, 3), np.uint8)] * 2, [None], "1 masks for 2 images"),
        ([], None, "no images to restore"),
    ],
)
def test_bad_inputs_get_one_clear_error(denoiser, picture, masks, message):
    with pytest.raises(InputError, match=message):
        denoiser.restore(picture, masks=masks)


def test_fit_brings_other_sizes_to_the_model(dcgan):
    r = ilo.Restorer(
        dcgan, task="denoise", backend="torch", fit="resize", config=method_config("ilo", steps=[2, 1], restarts=1)
    )
    [result] = r.restore(np.zeros((100, 80, 3), np.uint8))
    assert result.tensor.shape == (3, 64, 64)


def test_restorer_is_the_top_level_api():
    assert ilo.Restorer.__module__ == "ilo.engine.api.restorer"
    with pytest.raises(InputError, match="unknown task"):
        ilo.Restorer(task="colourise", warm=False)
    with pytest.raises(InputError, match="BM3D is a denoiser"):
        ilo.Restorer(task="sr", method="bm3d", warm=False)


def test_every_method_is_one_registry_row():
    # that nothing else compares a method's name is a house rule (tests/test_house_rules.py)
    from ilo.choices import METHODS
    from ilo.engine.api.methods import REGISTRY, method

    assert tuple(REGISTRY) == METHODS
    with pytest.raises(ilo.InputError, match="unknown method 'no-such-method'"):
        method("no-such-method")


def test_the_constructor_says_the_settings_defaults_and_takes_every_setting():
    # the keyword defaults repeat RestorerSettings' for the reader of the signature: they must agree
    import dataclasses
    import inspect

    signature = inspect.signature(ilo.Restorer.__init__).parameters
    for f in dataclasses.fields(ilo.RestorerSettings):
        assert f.name in signature, f"Restorer() does not take the setting {f.name}"
        if f.default is not dataclasses.MISSING and f.name != "task":
            assert signature[f.name].default == f.default, f.name
    r = ilo.Restorer(task="denoise", solver_overrides={"steps": [7, 3]}, encoder="none", warm=False)
    assert r.settings.config is not None and r.settings.config.steps == [7, 3]
