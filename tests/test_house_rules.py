"""The house rules the code keeps by itself: the formatter's layout, small modules and functions."""

import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_TREES = ("engine", "export", "generators", "kernels", "ilo", "benchmarks", "tests", "examples")
# The library's trees, which keep the size limits and the comment rule (ilo/'s links to the others
# resolve to the same files, which are read once).
LIBRARY_TREES = ("engine", "export", "generators", "kernels", "ilo")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# An issue or pull-request number in a comment: "issue 12", "issue #12", "PR 7", "#12".
ISSUE_NUMBER = re.compile(r"\b(issues?|PRs?|pull request)\s*#?\d+|(?<![\w&])#\d{2,}\b", re.IGNORECASE)


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


def test_no_library_module_is_over_the_line_limit():
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in _python_files(LIBRARY_TREES)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"{len(long)} module(s) over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def _function_lengths(path: Path):
    """(line, qualified name, length) of every function and method: from its `def` line to its
    last line, so the docstring counts and decorators do not."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                yield child.lineno, name, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(path.read_text(), str(path)), "")


def test_no_library_function_is_over_the_line_limit():
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} {n} lines"
        for path in _python_files(LIBRARY_TREES)
        for line, name, n in _function_lengths(path)
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"{len(long)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def _comments(path: Path):
    """(line, text) of every comment; strings and docstrings are not comments."""
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def test_no_library_comment_cites_an_issue_number():
    citing = [
        f"{path.relative_to(ROOT)}:{line} {text.strip()}"
        for path in _python_files(LIBRARY_TREES)
        for line, text in _comments(path)
        if ISSUE_NUMBER.search(text)
    ]
    assert not citing, "comments say why, not which issue:\n" + "\n".join(citing)


@pytest.mark.parametrize(
    "comment, cites",
    [
        ("# see issue 12", True),
        ("# Issue #7: the mask", True),
        ("# fixed in PR 31", True),
        ("# as #33 asked", True),
        ("# colour #fff and step #1", False),
        ("# 12 issues of the journal? no: rows of 12", False),
        ("# &#12; is an HTML entity", False),
    ],
)
def test_the_issue_pattern_tells_citations_from_other_numbers(comment, cites):
    assert bool(ISSUE_NUMBER.search(comment)) == cites


# The modules where a method or a task is defined by its name; everywhere else asks their rows.
REGISTRIES = {"engine/api/methods.py", "engine/problems/task_kinds.py", "ilo/choices.py"}


def _compared_names(tree: ast.AST, names: set[str]):
    """(line, name) of each comparison of a value with one of `names` as a string constant:
    `x == "sr"`, `"sr" != x`, `x in ("sr", "cs")` (not `"sr" in table`, a key lookup)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = (node.left, *node.comparators)
        for op, left, right in zip(node.ops, sides, sides[1:]):
            if isinstance(op, (ast.Eq, ast.NotEq)):
                constants = [left, right]
            elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                constants = right.elts
            else:
                continue
            for constant in constants:
                if isinstance(constant, ast.Constant) and constant.value in names:
                    yield node.lineno, constant.value


def test_no_method_or_task_name_is_compared_outside_its_registry():
    from ilo.choices import METHODS, TASKS

    found = [
        f"{path.relative_to(ROOT)}:{line} compares {name!r}"
        for path in _python_files(LIBRARY_TREES)
        if str(path.relative_to(ROOT)) not in REGISTRIES
        for line, name in _compared_names(ast.parse(path.read_text()), set(METHODS) | set(TASKS))
    ]
    assert not found, "ask the method's or task's registry row instead:\n" + "\n".join(found)


def test_the_name_comparison_finder_sees_every_form():
    code = 'a == "sr"\n"bm3d" != b\nc in ("inpaint", "x")\nd == "other"\ne in {"cs"}\n"cs" in table\n'
    found = list(_compared_names(ast.parse(code), {"sr", "bm3d", "inpaint", "cs"}))
    assert found == [(1, "sr"), (2, "bm3d"), (3, "inpaint"), (5, "cs")]
