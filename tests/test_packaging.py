"""The wheel holds every module of the source tree under the one `ilo` namespace."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("engine", "export", "generators", "kernels")  # top-level folders that are ilo.<name>


def test_the_top_level_folders_are_linked_into_the_ilo_package():
    for name in LINKED:
        link = ROOT / "ilo" / name
        assert link.is_symlink(), f"ilo/{name} should link to ../{name}"
        assert link.resolve() == (ROOT / name).resolve()


def test_the_wheel_holds_every_module_and_the_embedded_model(tmp_path):
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    junk = shutil.ignore_patterns("__pycache__", "lib", "*.egg-info")
    for name in ("ilo", *LINKED):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=junk)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("ilo_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"ilo/{p.relative_to(ROOT / 'ilo').as_posix()}" for p in (ROOT / "ilo").glob("*.py")}
    for name in LINKED:
        for path in (ROOT / name).rglob("*.py"):
            rel = path.relative_to(ROOT / name)
            if (path.parent / "__init__.py").is_file():  # kernels/tests/ is not a package
                expected.add(f"ilo/{name}/{rel.as_posix()}")
    assert expected - names == set()
    assert "ilo/assets/dcgan_face64.safetensors" in names
    assert not any(n.split("/")[0] in LINKED + ("tests", "benchmarks") for n in names)
