"""The documentation site builds with `mkdocs build --strict` (a dead link, a missing anchor, a
docstring the reference cannot render or a page left out of the navigation fails it), every page
under docs/ is in mkdocs.yml's navigation, and every committed benchmark table has its page."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _mkdocs() -> str:
    found = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if found is None:
        pytest.fail("mkdocs is part of the docs extra (and the test extra): pip install -e '.[docs]'")
    return found


def _nav_pages(nav) -> set[str]:
    """Every page a navigation (mkdocs.yml's `nav`, nested lists and dicts) names."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(v) for v in nav.values()))
    return set().union(*(_nav_pages(item) for item in nav)) if nav else set()


def _config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_strict_without_the_network(tmp_path):
    done = subprocess.run(
        [_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # a banner, not a finding
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    assert "Restorer" in (site / "api" / "index.html").read_text()  # the reference is rendered from docstrings
    assert "Architecture" in (site / "architecture" / "index.html").read_text()  # ARCHITECTURE.md included


def test_every_page_under_docs_is_in_the_navigation():
    listed = _nav_pages(_config()["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    assert pages - listed == set(), "add these pages to mkdocs.yml's nav"
    assert {p for p in listed if not p.startswith("benchmarks/") or p == "benchmarks/index.md"} <= pages


def test_every_committed_benchmark_table_gets_a_generated_page():
    # the hook is a file mkdocs loads by path (mkdocs.yml's hooks), not a package module
    spec = importlib.util.spec_from_file_location("benchmark_pages", DOCS / "hooks" / "benchmark_pages.py")
    assert spec is not None and spec.loader is not None
    benchmark_pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark_pages)
    stems = benchmark_pages.result_stems()
    assert set(stems) == {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md")}
    config = {"nav": [{"Benchmarks": ["benchmarks/index.md"]}]}
    nav = benchmark_pages.on_config(config)["nav"][0]["Benchmarks"]
    assert {f"benchmarks/{s}.md" for s in stems} <= _nav_pages(nav)
    page = benchmark_pages.page_text("quality")
    assert "benchmarks/results/quality.md" in page and "data/quality_examples.png" in page
