from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
STYLEGAN2_32 = FIXTURES / "stylegan2_rosinality_32px.pt"
GOLDEN_32 = FIXTURES / "stylegan2_rosinality_32px_golden.pt"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Latent statistics and exported graphs go to a per-session folder, never the user's cache.
    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ilo-cache"))


@pytest.fixture(scope="session")
def golden() -> dict:
    return torch.load(GOLDEN_32, weights_only=True)


@pytest.fixture(scope="session")
def sg2():
    from ilo import load_generator

    return load_generator(STYLEGAN2_32)


@pytest.fixture(scope="session")
def dcgan():
    from ilo import load_generator

    return load_generator("default")


def random_stylegan2(config, seed: int = 0):
    from ilo.export.stylegan2 import random_stylegan2 as make

    return make(config, seed)


def run_ok(capsys, *argv):
    """Run the `ilo` command in-process; it must succeed. Returns its stdout."""
    from ilo.engine.cli import main

    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def run_fail(capsys, *argv):
    """Run the `ilo` command in-process; it must fail with one clear line. Returns that line."""
    from ilo.engine.cli import main

    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ilo: error: ") and "\n" not in err and "Traceback" not in err
    return err
