"""The pieces under `ilo restore`: input listing, image and mask reading, fitting, task
operators and seeds, and the run folder's settings check and tables."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ilo import InputError
from ilo.engine.inputs.image_files import fit_mask, fit_to, list_inputs, read_image, read_mask
from ilo.engine.runs.run_dir import RunDir
from ilo.engine.problems.operators import Downsample, Inpainting, Noise, PartialCirculantCS
from ilo.engine.problems.tasks import TaskSpec, name_seed


def _save(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def test_list_inputs_files_folders_globs(tmp_path):
    a = _save(tmp_path / "a.png", np.zeros((4, 4, 3)))
    b = _save(tmp_path / "b.jpg", np.zeros((4, 4, 3)))
    (tmp_path / "notes.txt").write_text("x")
    assert list_inputs([str(tmp_path)]) == [a.resolve(), b.resolve()]
    assert list_inputs([str(tmp_path / "*.png"), str(a)]) == [a.resolve()]  # duplicates dropped
    sub = tmp_path / "sub"
    sub.mkdir()
    _save(sub / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(InputError, match="share the name"):
        list_inputs([str(a), str(sub / "a.png")])


def test_read_image_range_and_greyscale(tmp_path):
    rgb = read_image(_save(tmp_path / "c.png", [[[0, 128, 255]]]))
    assert rgb.shape == (3, 1, 1) and rgb[0].item() == -1 and rgb[2].item() == 1
    grey = read_image(_save(tmp_path / "g.png", np.full((2, 2), 255)))
    assert grey.shape == (3, 2, 2) and (grey == 1).all()
    with pytest.raises(InputError, match="not a readable image"):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
        read_image(tmp_path / "bad.png")


def test_read_mask_black_is_missing(tmp_path):
    mask = read_mask(_save(tmp_path / "m.png", [[0, 100], [200, 255]]))
    assert mask.tolist() == [[[0.0, 0.0], [1.0, 1.0]]]


def test_fit_modes(tmp_path):
    image = torch.linspace(-1, 1, 3 * 6 * 8).reshape(3, 6, 8)
    with pytest.raises(InputError, match="--fit"):
        fit_to(image, 4, None, "x")
    cropped, valid = fit_to(image, 4, "crop", "x")
    assert torch.equal(cropped, image[:, 1:5, 2:6]) and valid.all()
    resized, _ = fit_to(image, 3, "resize", "x")
    assert resized.shape == (3, 3, 3)
    padded, valid = fit_to(image, 10, "pad", "x")
    assert torch.equal(padded[:, 2:8, 1:9], image) and valid.sum() == 48 and (padded[:, 0] == -1).all()
    with pytest.raises(InputError, match="smaller"):
        fit_to(image, 7, "crop", "x")
    with pytest.raises(InputError, match="larger"):
        fit_to(image, 5, "pad", "x")
    mask = torch.ones(1, 6, 8)
    assert fit_mask(mask, 10, "pad", "m").sum() == 48
    assert set(fit_mask(torch.rand(1, 6, 8).round(), 4, "resize", "m").unique().tolist()) <= {0.0, 1.0}


def test_task_operators_and_sizes():
    assert isinstance(TaskSpec("sr", factor=4).operator(64), Downsample)
    assert TaskSpec("sr", factor=4).measurement_size(64) == 16
    with pytest.raises(InputError, match="does not divide"):
        TaskSpec("sr", factor=3).measurement_size(64)
    assert TaskSpec("denoise").sigma == 0.1 and isinstance(TaskSpec("denoise").operator(64), Noise)
    cs = TaskSpec("cs", ratio=0.1).operator(64)
    assert isinstance(cs, PartialCirculantCS) and cs.m == round(0.1 * 3 * 64 * 64)
    op = TaskSpec("inpaint", centre_box=0.5).operator(64, torch.ones(2, 1, 64, 64))
    assert isinstance(op, Inpainting)
    with pytest.raises(InputError):
        TaskSpec("inpaint", centre_box=0.5, keep=0.1)
    with pytest.raises(InputError, match="sigma"):
        TaskSpec("denoise", sigma=2.0)


def test_each_task_owns_its_parameters_and_the_flags_come_from_them():
    import dataclasses

    from ilo.engine.cli.main import build_parser
    from ilo.engine.problems.task_kinds import TASK_KINDS, TaskParams

    assert TaskSpec("sr", factor=2).params == TASK_KINDS["sr"].params(factor=2)
    assert TaskSpec("sr", factor=2).factor == 2 and TaskSpec("denoise").factor == 4  # another task's: its default
    with pytest.raises(InputError, match="factor belongs to task sr, not denoise"):
        TaskSpec("denoise", factor=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        TaskSpec("denoise", colour=2)
    # records name every task's parameters, as run folders always have, so older folders resume
    every = {"task", "factor", "sigma", "ratio", "cs_matrix", "centre_box", "box", "keep", "op_seed"}
    assert set(TaskSpec("cs").describe()) == every
    restore = build_parser()._subparsers._group_actions[0].choices["restore"]
    actions = {a.option_strings[0]: a for a in restore._actions if a.option_strings}
    for task, kind in TASK_KINDS.items():
        for f in kind.params.own_fields():  # a task's flag: named by its task, its default said once
            action = actions[f.metadata["flag"]]
            assert action.help.startswith(f"{task}: ") and action.default is None
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            assert f.default is None or action.help.endswith(f"(default {shown})")
    for f in dataclasses.fields(TaskParams):
        assert actions[f.metadata["flag"]].default == f.default
    assert "denoise: default 0.1; others: 0" in actions["--sigma"].help


def test_a_run_reads_its_inputs_as_its_restorer_settings_say():
    import ilo
    from ilo.engine.inputs.measurements import InputFiles, InputSpec

    settings = ilo.RestorerSettings(task=TaskSpec("inpaint", centre_box=0.5), fit="pad", max_pixels=10)
    spec = InputSpec.for_settings(settings, InputFiles(clean_inputs=True))  # the task, fit and limit said once
    assert (spec.task, spec.fit, spec.max_pixels, spec.files.clean_inputs) == (settings.task, "pad", 10, True)
    with pytest.raises(InputError, match="--fit pad invents pixels"):
        ilo.RestorerSettings(task=TaskSpec("denoise"), fit="pad")
    with pytest.raises(InputError, match="--max-pixels must be at least 1"):
        ilo.RestorerSettings(max_pixels=0)
    with pytest.raises(InputError, match="--mask / --mask-dir belong to --task inpaint"):
        InputSpec.for_settings(ilo.RestorerSettings(), InputFiles(mask_dir=Path("masks")))


def test_random_masks_and_noise_follow_the_image_name():
    task = TaskSpec("inpaint", keep=0.1)
    a1, a2, b = task.built_in_mask(64, "a"), task.built_in_mask(64, "a"), task.built_in_mask(64, "b")
    assert torch.equal(a1, a2) and not torch.equal(a1, b)
    assert 0.05 < a1.mean() < 0.15
    assert name_seed(0, "a") != name_seed(1, "a")
    noisy = TaskSpec("denoise", sigma=0.1)
    x = torch.zeros(2, 3, 8, 8)
    op = noisy.operator(8)
    together = noisy.measure(op, x, ["p", "q"])
    alone = noisy.measure(op, x[1:], ["q"])
    assert torch.equal(together[1:], alone)  # an image's noise does not depend on its batch
    assert together.std().item() == pytest.approx(0.2, rel=0.1)  # sigma 0.1 in [0,1] = 0.2 in [-1,1]


def test_run_dir_settings_records_tables(tmp_path):
    run = RunDir(tmp_path)
    run.start({"task": "sr", "steps": [1]})
    run.check({"task": "sr", "steps": [1]})
    with pytest.raises(InputError, match="other settings \\(steps\\)"):
        run.check({"task": "sr", "steps": [2]})
    run.write_record("a", {"name": "a", "psnr": 20.0, "seconds": 1.0})
    run.write_record("b", {"name": "b", "psnr": float("inf"), "seconds": 3.0})
    assert run.finished("a", []) and not run.finished("c", [])
    json_path, csv_path = run.write_tables(list(run.records().values()))
    summary = json.loads(json_path.read_text())["summary"]
    assert summary["seconds"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert summary["psnr"]["n"] == 1  # the exact reconstruction's infinite PSNR is null, not averaged
    assert csv_path.read_text().splitlines()[0].startswith("name,input,output,psnr")
    run.start({"task": "cs"}, overwrite=True)
    assert run.records() == {}
