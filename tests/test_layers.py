"""The layers in pyproject.toml ([tool.importlinter]) hold, function-level imports included."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
grimp = pytest.importorskip("grimp", reason="import-linter comes with the test extra")


def test_the_import_contracts_are_kept():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.lower().split("contracts:")[-1].split("kept")[0]


def test_the_graph_the_contracts_check_sees_imports_inside_functions():
    graph = grimp.build_graph("ilo", cache_dir=None)
    # the `ilo restore` command imports the application only when it runs (a fast --help)
    assert graph.direct_import_exists(importer="ilo.engine.cli.restore", imported="ilo.engine.runs.folder_run")
    assert "ilo.generators.stylegan2" in graph.modules and "ilo.engine.solver.ilo_solver" in graph.modules
