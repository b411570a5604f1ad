"""The house rules the code keeps by itself: the formatter's layout, small modules and functions."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_TREES = ("engine", "export", "generators", "kernels", "ilo", "benchmarks", "tests", "examples")


def _python_files(trees=PYTHON_TREES):
    seen = set()
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            real = path.resolve()
            if real not in seen and ".venv" not in real.parts:
                seen.add(real)
                yield real


def test_the_tree_is_laid_out_by_the_formatter():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the test extra: pip install -e '.[test]'")
    done = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout[-3000:] + done.stderr[-2000:]


def test_the_formatter_is_switched_off_only_for_a_few_tables():
    skips = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _python_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert len(skips) <= 20, skips
