"""The PIL figures (labelled grid, line chart) and `ilo restore --plot`: a loss plot per image,
written like the other outputs and counted by a resumed run."""

import math

import numpy as np
import pytest
from conftest import run_ok, write_generated_faces
from PIL import Image

from ilo.engine.runs.figures import labelled_grid, line_chart
from ilo.errors import InputError

# a few steps of two rounds on torch, with no memory probe: enough for a curve with a round boundary
FAST = [
    "--steps",
    "2,1",
    "--end-stage",
    "1",
    "--restarts",
    "1",
    "--backend",
    "torch",
    "--memory-budget",
    "off",
    "--quiet",
]


def _ink(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels in box (left, top, right, bottom) that are not white."""
    pixels = np.asarray(image.convert("RGB").crop(box))
    return int((pixels.min(axis=2) < 250).sum())


def _tile(value: int | tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(value, dtype=np.uint8), (64, 64, 3)).copy()


def test_labelled_grid_places_tiles_labels_and_captions():
    green = (20, 200, 40)  # no text is drawn in it: the first tile is found by its colour
    tiles = [[_tile(green), None, _tile(100)], [_tile(50), _tile(200), None]]
    captions = [["27.31 dB", None, "30.00 dB"], ["a", "b", "c"]]
    image = labelled_grid(tiles, ["inpaint", "sr"], ["measured", "ilo", "truth"], captions=captions, scale=2)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    w, h = image.size
    assert w > 3 * 128 and h > 2 * 128  # three 128-px columns and two rows, plus labels
    pixels = np.asarray(image)
    ys, xs = np.nonzero((pixels == green).all(axis=2))
    left, top = xs.min(), ys.min()
    assert (xs.max() - left, ys.max() - top, len(xs)) == (127, 127, 128 * 128)  # upscaled by 2, whole
    assert _ink(image, (0, top, left, top + 128)) > 0  # the row label, left of the tiles
    assert _ink(image, (left, 0, left + 128, top)) > 0  # the column label, above them
    assert _ink(image, (left, top + 128, left + 128, top + 128 + 20)) > 0  # the caption, under
    cell = w - left  # three cells right of the row labels
    assert _ink(image, (left + cell // 3 + 2, top, left + cell // 3 + 120, top + 120)) == 0  # a blank tile stays white


def test_labelled_grid_default_scale_and_bad_input():
    image = labelled_grid([[_tile(0)]], ["r"], ["c"])
    assert image.size[0] >= 128 and image.size[1] >= 128  # 64-px tiles are enlarged to be read beside text
    with pytest.raises(InputError, match="row 0 has 1 tiles for 2 column labels"):
        labelled_grid([[_tile(0)]], ["r"], ["a", "b"])
    with pytest.raises(InputError, match="different sizes"):
        labelled_grid([[_tile(0), np.zeros((32, 32, 3), np.uint8)]], ["r"], ["a", "b"])
    with pytest.raises(InputError, match="uint8"):
        labelled_grid([[np.zeros((8, 8, 3), np.float32)]], ["r"], ["a"])
    with pytest.raises(InputError, match="every tile is blank"):
        labelled_grid([[None]], ["r"], ["a"])
    with pytest.raises(InputError, match="captions"):
        labelled_grid([[_tile(0)]], ["r"], ["a"], captions=[["x", "y"]])


def test_line_chart_draws_lines_legend_and_vertical_lines():
    xs = list(range(50))
    series = {"ilo": (xs, [10 * math.exp(-x / 10) for x in xs]), "csgm": (xs, [5.0] * 50)}
    image = line_chart(series, "step", "loss", "loss per step", vlines=[(0, "round 0"), (30, "round 1")])
    assert image.size == (720, 420)
    pixels = np.asarray(image).astype(int)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # one colour per series
    assert _ink(image, (image.size[0] - 100, 0, image.size[0], image.size[1])) > 0  # the legend, on the right
    linear = line_chart(series, "step", "loss", "t", log_y=False)
    assert not np.array_equal(np.asarray(linear), np.asarray(image))


def test_line_chart_tolerates_nan_inf_and_single_points():
    nasty = [1.0, float("nan"), 3.0, float("inf"), -1.0, 0.0, 2.0]
    image = line_chart({"a": (list(range(7)), nasty), "one": ([3.0], [0.5])}, "x", "y", "t", vlines=[(2, "r")])
    assert image.size == (720, 420) and _ink(image, (0, 0, 720, 420)) > 0
    nothing = line_chart({"a": ([1, 2], [float("nan"), float("inf")])}, "x", "y", "t")  # no point to draw
    assert nothing.size == (720, 420)
    flat = line_chart({"a": ([0.0, 0.0], [2.0, 2.0])}, "x", "y", "t", log_y=False)  # a range of zero width
    assert flat.size == (720, 420)
    with pytest.raises(InputError, match="3 x values and 2 y values"):
        line_chart({"a": ([1, 2, 3], [1, 2])}, "x", "y", "t")
    with pytest.raises(InputError, match="no series"):
        line_chart({}, "x", "y", "t")


@pytest.fixture(scope="module")
def faces(tmp_path_factory, dcgan):
    return write_generated_faces(tmp_path_factory.mktemp("faces"), dcgan, 2, seed=5)


def test_restore_plot_writes_a_loss_plot_per_image_and_resumes(tmp_path, capsys, faces):
    out = tmp_path / "out"
    args = ["restore", faces, "--clean", "--task", "denoise", "--out", out, "--plot", *FAST]
    assert "restored 2 image(s), 0 already finished" in run_ok(capsys, *args)
    for stem in ("face0", "face1"):
        with Image.open(out / f"{stem}.loss.png") as plot:
            plot.load()
            assert plot.size == (720, 420)
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    kept = (out / "face1.loss.png").stat().st_mtime_ns
    assert "restored 0 image(s), 2 already finished" in run_ok(capsys, *args)
    assert (out / "face1.loss.png").stat().st_mtime_ns == kept
    (out / "face0.loss.png").unlink()  # the plot is one of the image's outputs: without it, redone
    assert "restored 1 image(s), 1 already finished" in run_ok(capsys, *args)
    assert (out / "face0.loss.png").is_file() and (out / "face1.loss.png").stat().st_mtime_ns == kept


def test_restore_plot_with_bm3d_writes_none_and_says_so(tmp_path, capsys, faces, monkeypatch):
    out = tmp_path / "bm3d"
    # what BM3D restores does not matter here, and the real one takes seconds
    monkeypatch.setattr("ilo.engine.api.methods.bm3d_denoise", lambda y, sigma: (y.clone(), 0.0))
    from ilo.engine.cli.main import main

    assert (
        main(
            [
                "restore",
                str(faces / "face0.png"),
                "--clean",
                "--task",
                "denoise",
                "--method",
                "bm3d",
                "--plot",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "face0.png").is_file() and not (out / "face0.loss.png").exists()
    assert capsys.readouterr().err.count("no loss plots: BM3D") == 1
