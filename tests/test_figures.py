"""The figures (the PIL labelled grid; matplotlib's loss curves and grouped bars) and `ilo restore
--plot`: a loss plot per image, written like the other outputs and counted by a resumed run."""

import io
import math
import re
import sys

import numpy as np
import pytest
from conftest import run_ok, write_generated_faces
from PIL import Image

from ilo.engine.runs.figures import grouped_bars, labelled_grid, loss_chart, save_png
from ilo.errors import IloError, InputError

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


def _png(figure) -> Image.Image:
    buffer = io.BytesIO()
    save_png(figure, buffer, {"Source": "a test"})
    image = Image.open(io.BytesIO(buffer.getvalue()))
    image.load()  # decodes whole
    return image


def _round_marks(figure) -> list[float]:
    (ax,) = figure.axes
    return sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "round boundary")


def test_loss_chart_lays_rounds_end_to_end_and_marks_each_round():
    ilo = [[10 * math.exp(-x / 10) for x in range(30)], [0.5] * 20]  # two rounds: 30 + 20 steps
    figure = loss_chart({"ILO": ilo, "CSGM": [[5.0] * 50]}, "inpaint-box: loss per step", "measurement loss (MSE)")
    (ax,) = figure.axes
    assert _round_marks(figure) == [0.0, 30.0]  # ILO's rounds, not CSGM's single one
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(curves) == {"ILO", "CSGM"} and len(curves["ILO"].get_xdata()) == 50
    assert curves["ILO"].get_color() != curves["CSGM"].get_color()  # one colour per series
    assert ax.get_yscale() == "log" and ax.get_xlabel().startswith("step") and "MSE" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["ILO round 0", "ILO round 1"]
    image = _png(figure)
    assert image.size == (720, 420) and image.info["Source"] == "a test"
    assert _ink(image, (0, 0, 720, 420)) > 0


def test_loss_chart_leaves_gaps_for_what_it_cannot_draw():
    nasty = [1.0, float("nan"), 3.0, float("inf"), -1.0, 0.0, 2.0]  # no value has a drawable neighbour
    figure = loss_chart({"a": [nasty]}, "t", "y", log_y=True)
    (ax,) = figure.axes
    line, dots = ax.get_lines()[:2]
    assert np.isnan(line.get_ydata()).sum() == 4  # NaN, inf, and on the log axis -1 and 0, are gaps
    assert list(dots.get_xdata()) == [0.0, 2.0, 6.0]  # the lone points, shown as dots
    assert _png(figure).size == (720, 420)
    nothing = loss_chart({"a": [[float("nan"), float("inf")]]}, "t", "y")
    assert "no finite values" in nothing.axes[0].texts[-1].get_text() and _png(nothing).size == (720, 420)
    with pytest.raises(InputError, match="no curves"):
        loss_chart({}, "t", "y")


def test_grouped_bars_name_the_categories_and_keep_a_colour_per_series():
    panels = {
        "in range": {"inpaint-box": {"ilo": 27.0, "csgm": 25.0}, "denoise-0.1": {"ilo": 28.0, "bm3d": 29.0}},
        "out of range": {"inpaint-box": {"ilo": 21.0, "csgm": 22.0, "bm3d": float("nan")}},
    }
    figure = grouped_bars(panels, "mean PSNR (dB)", "t", colours={"bm3d": "black"}, size=(800, 400))
    left, right = figure.axes[:2]
    assert [t.get_text() for t in left.get_xticklabels()] == ["inpaint-box", "denoise-0.1"]
    assert [t.get_text() for t in right.get_xticklabels()] == ["inpaint-box"]
    assert len(left.patches) == 4 and len(right.patches) == 2  # a NaN draws no bar
    colours = {c.get_label(): c.patches[0].get_facecolor() for ax in (left, right) for c in ax.containers if c.patches}
    assert colours["bm3d"][:3] == (0.0, 0.0, 0.0) and colours["ilo"] != colours["csgm"]
    assert left.get_ylim()[0] > 15  # the axis starts near the bars, so tenths of a dB show
    assert left.get_ylabel() == "mean PSNR (dB)"
    assert _png(figure).size == (800, 400)
    speedups = grouped_bars({"dcgan": {"batch 1": {"onnxruntime": 2.1}}}, "speed-up", "t", reference=1.0)
    assert speedups.axes[0].get_ylim()[0] == 0 and any(line.get_ydata()[0] == 1.0 for line in speedups.axes[0].lines)
    with pytest.raises(InputError, match="no finite value"):
        grouped_bars({"p": {"c": {"s": float("nan")}}}, "y", "t")


def test_charts_without_matplotlib_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an import finds where it is not installed
    with pytest.raises(IloError, match=re.escape('pip install "ilo-engine[plot]"')):
        loss_chart({"a": [[1.0]]}, "t", "y")


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


def test_restore_plot_without_matplotlib_fails_first_in_one_line(tmp_path, capsys, faces, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from ilo.engine.cli.main import main

    argv = ["restore", str(faces), "--clean", "--task", "denoise", "--out", str(tmp_path / "out"), "--plot", *FAST]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "ilo-engine[plot]"' in err
    assert not list((tmp_path / "out").glob("*.png"))  # nothing solved before the check
