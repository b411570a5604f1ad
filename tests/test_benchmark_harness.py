"""benchmarks/report.py, the harness the benchmark scripts share: their arguments, the quick mode
that never writes over benchmarks/results, and result files headed by command, machine and date."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` is a package beside `ilo`, not part of the install

from benchmarks.report import (
    RESULTS,
    Script,
    comma_ints,
    in_method_order,
    machine_line,
    replace_section,
    section_name,
)

SCRIPTS = sorted(
    p.stem
    for p in (ROOT / "benchmarks").glob("*.py")
    if p.stem not in ("__init__", "report") and "def main" in p.read_text()
)


def _script() -> Script:
    script = Script(str(ROOT / "benchmarks" / "example.py"), "An example.", quick={"images": 2, "tasks": "sr-x4"})
    script.parser.add_argument("--images", type=int, default=8)
    script.add_list("--tasks", ["inpaint-10%", "sr-x4", "denoise-0.1"])
    return script


def test_quick_mode_swaps_in_small_settings_and_writes_under_tmp():
    args = _script().parse([])
    assert (args.images, args.tasks, args.out) == (8, ["inpaint-10%", "sr-x4", "denoise-0.1"], RESULTS)
    args = _script().parse(["--quick", "--images", "3"])
    assert (args.images, args.tasks) == (3, ["sr-x4"])  # what the command line says still wins
    assert args.out != RESULTS and "ilo-benchmarks-quick" in str(args.out)
    assert _script().parse(["--quick", "--out", "/elsewhere"]).out == Path("/elsewhere")


def test_help_shows_the_quick_settings(capsys):
    with pytest.raises(SystemExit):
        _script().parse(["--help"])
    shown = capsys.readouterr().out
    assert "python benchmarks/example.py" in shown and "--images 2 --tasks sr-x4" in shown
    assert "inpaint-10%" in shown  # a % in a task name does not break argparse's help


def test_results_are_headed_by_command_date_and_machine(tmp_path, capsys):
    script = _script()
    script.parse(["--images", "2", "--out", str(tmp_path)])
    machine = machine_line("a test runtime")
    assert "torch" in machine and machine.endswith("a test runtime")
    script.write("example", "# Title\n\n| a | b |\n", {"rows": [1, 2]}, machine)
    md = (tmp_path / "example.md").read_text().splitlines()
    assert md[0] == "# Title" and md[2].startswith("`python benchmarks/example.py --images 2 --out ")
    assert machine in md[2] and script.date in md[2] and md[4] == "| a | b |"
    record = json.loads((tmp_path / "example.json").read_text())
    assert record["command"] == script.command and record["machine"] == machine and record["rows"] == [1, 2]
    assert "| a | b |" in capsys.readouterr().out
    script.write("no_json", "text", None, machine)
    assert (tmp_path / "no_json.md").is_file() and not (tmp_path / "no_json.json").exists()


def test_figures_carry_the_command_in_their_png_text(tmp_path):
    from ilo.engine.runs.figures import grouped_bars, labelled_grid

    script = _script()
    script.parse(["--out", str(tmp_path)])
    chart = grouped_bars({"set": {"sr-x4": {"ilo": 25.0, "csgm": 23.0}}}, "mean PSNR (dB)", "t", size=(400, 300))
    grid = labelled_grid([[np.zeros((8, 8, 3), np.uint8)]], ["r"], ["c"])
    for name, figure in (("chart.png", chart), ("grid.png", grid)):
        with Image.open(script.save_figure(figure, name, "a machine")) as png:
            png.load()
            assert png.info["Software"] == script.command and png.info["Source"] == "a machine"
    assert Image.open(tmp_path / "chart.png").size == (400, 300)


def test_comma_lists():
    assert comma_ints("1,4,16") == [1, 4, 16]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_as_part_of_the_package(name):
    """Scripts import each other as `benchmarks.<name>`, never by bare name from their folder."""
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)


REDRAWN = {  # script -> (a small JSON as that script writes it, the figure redrawn from it)
    "latency": (
        "latency",
        {"results": {"dcgan": {"ratios": [{"backend": "onnxruntime", "batch": 1, "speedup_round0": 1.5}]}}},
        "latency.png",
    ),
    "quality": (
        "quality",
        {"names": ["gen00", "astronaut"], "measurement_curves": {"inpaint-box": {"ilo": [[0.5, 0.2], [0.1]]}}},
        "quality_loss_curves.png",
    ),
}


@pytest.mark.parametrize("name", sorted(REDRAWN))
def test_redraw_draws_the_figure_from_the_json_alone(name, tmp_path):
    stem, record, png_name = REDRAWN[name]
    (tmp_path / f"{stem}.json").write_text(json.dumps({"machine": "the measuring machine", **record}))
    main = importlib.import_module(f"benchmarks.{name}").main
    assert main(["--redraw", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / png_name) as png:
        png.load()  # decodes
        assert png.info["Source"] == "the measuring machine" and "--redraw" in png.info["Software"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{stem}.json", png_name])  # nothing measured


def test_redraw_without_its_json_says_what_is_missing(tmp_path):
    script = Script(str(ROOT / "benchmarks" / "example.py"), "An example.", redraw="example")
    assert script.parse(["--redraw", "--out", str(tmp_path)]).redraw
    with pytest.raises(SystemExit, match="example.json is missing"):
        script.saved()
    assert not hasattr(_script().parse([]), "redraw")  # a script that cannot redraw has no flag


def test_methods_keep_one_order_in_every_category():
    panels = in_method_order({"set": {"sr-x4": {"csgm": 1.0, "ilo": 2.0}, "denoise": {"bm3d": 3.0, "new": 4.0}}})
    assert [list(by) for by in panels["set"].values()] == [["ilo", "csgm", "bm3d", "new"]] * 2
    assert np.isnan(panels["set"]["sr-x4"]["bm3d"]) and panels["set"]["denoise"]["bm3d"] == 3.0


TABLE = "# Title\n\nThe file's header.\n\n## First (`--a`)\n\none\n\n## Second (`--b 1`)\n\ntwo\n\n## Third\n\nthree\n"


def test_a_section_replaces_the_one_of_its_name_and_nothing_else():
    replaced = replace_section(TABLE, "## Second (`--b 2`)\n\nnew two\n")
    assert replaced == TABLE.replace("## Second (`--b 1`)\n\ntwo\n", "## Second (`--b 2`)\n\nnew two\n")
    assert replace_section(TABLE, "## Third\n\nnew three") == TABLE.replace("three\n", "new three\n")
    assert section_name("## Cold start: first use (`--cold-start 256`)") == "Cold start: first use"


def test_a_new_section_goes_after_the_others():
    assert replace_section(TABLE, "## Fourth\n\nfour\n") == TABLE + "\n## Fourth\n\nfour\n"
    assert replace_section("", "## Only\n\nit\n") == "## Only\n\nit\n"
    assert replace_section("The header alone.\n", "## One\n\n1\n") == "The header alone.\n\n## One\n\n1\n"


def test_write_section_keeps_the_header_and_the_other_sections(tmp_path, capsys):
    (tmp_path / "table.md").write_text(TABLE)
    (tmp_path / "table.json").write_text('{"kept": 1}\n')
    script = _script()
    script.parse(["--out", str(tmp_path)])
    script.write_section("table", "Second (`--b 2`)", "new two\n", {"rows": [2]}, "a machine", json_stem="second")
    expected = f"## Second (`--b 2`)\n\n{script.header('a machine')}\n\nnew two\n"
    assert (tmp_path / "table.md").read_text() == TABLE.replace("## Second (`--b 1`)\n\ntwo\n", expected)
    assert json.loads((tmp_path / "second.json").read_text())["rows"] == [2]
    assert (tmp_path / "table.json").read_text() == '{"kept": 1}\n'  # another run's JSON left alone
    script.write_section("new", "Only", "it", None, "a machine")
    assert (tmp_path / "new.md").read_text().startswith("## Only\n\n`python benchmarks/example.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.md", "second.json", "table.json", "table.md"]
    assert "new two" in capsys.readouterr().out
