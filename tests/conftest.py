from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
STYLEGAN2_32 = FIXTURES / "stylegan2_rosinality_32px.pt"
GOLDEN_32 = FIXTURES / "stylegan2_rosinality_32px_golden.pt"


def pytest_configure(config):
    # The suite runs as xdist workers, one per core: each gets its share of the cores for torch's
    # pool (ONNX Runtime sessions take torch's count). Left at torch's default every worker would
    # use every core, and the workers' threads would wait on each other.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Latent statistics and exported graphs go to a folder of this test session, never the
    # user's cache. The xdist workers share it (their base folders sit side by side in the
    # session's), as processes on one node share a real cache: a bundle that two test files
    # need is exported once (export_bundle's lock), and that sharing is itself exercised.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    monkeypatch.setenv("ILO_CACHE_DIR", str(shared / "ilo-cache"))


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


def small_dcgan(seed: int = 0):
    """A random DCGAN of 16 px (3 stages), fresh from its constructor (trainable weights): for
    tests of what the engine exports and loads, which does not depend on a model's size."""
    from ilo.generators.dcgan import DCGANConfig, DCGANGenerator

    torch.manual_seed(seed)
    return DCGANGenerator(DCGANConfig(z_dim=8, channels=(16, 8)))


def random_stylegan2(config, seed: int = 0):
    from ilo.generators.stylegan2 import random_stylegan2 as make

    return make(config, seed)


def write_generated_faces(folder: Path, gen, count: int, seed: int) -> Path:
    """`count` faces of `gen` as face0.png, face1.png, ... in `folder` (a folder to restore)."""
    from ilo.engine.inputs.image_files import save_png, to_uint8

    with torch.no_grad():
        faces = gen.synthesize(torch.randn(count, 1, gen.z_dim, generator=torch.Generator().manual_seed(seed)))
    for i, face in enumerate(to_uint8(faces)):
        save_png(folder / f"face{i}.png", face)
    return folder


def folder_snapshot(*folders: Path) -> dict:
    """Every file under the folders with its bytes (None for a folder that does not exist): what
    a refused run must leave exactly as it was."""
    state = {}
    for folder in folders:
        if not folder.exists():
            state[str(folder)] = None
            continue
        for path in sorted(folder.rglob("*")):
            state[str(path)] = path.read_bytes() if path.is_file() else "dir"
    return state


def run_ok(capsys, *argv):
    """Run the `ilo` command in-process; it must succeed. Returns its stdout."""
    from ilo.engine.cli.main import main

    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def run_fail(capsys, *argv):
    """Run the `ilo` command in-process; it must fail with one clear line. Returns that line."""
    from ilo.engine.cli.main import main

    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ilo: error: ") and "\n" not in err and "Traceback" not in err
    return err


def cmake_build(build_dir: Path, *options: str) -> Path:
    """Configure and build the repository's CMake project into build_dir; returns the library
    folder. A failure shows CMake's own output."""
    import shutil
    import subprocess
    import sys

    cmake = shutil.which("cmake", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if cmake is None:
        pytest.fail("cmake is not installed: pip install -e '.[test]' brings it")
    lib = build_dir / "lib"
    root = Path(__file__).resolve().parents[1]
    for cmd in (
        [cmake, "-S", str(root), "-B", str(build_dir), f"-DILO_KERNELS_OUTPUT_DIR={lib}", *options],
        [cmake, "--build", str(build_dir), "-j2"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return lib


@pytest.fixture(scope="session")
def emulated_kernels(tmp_path_factory):
    """The kernels' own source built for host emulation (kernels/src/emulation.h) and loaded."""
    from ilo.kernels.library import EMULATED_LIBRARY, open_library

    lib = cmake_build(tmp_path_factory.mktemp("kernels-emulated"), "-DILO_KERNELS_CUDA=OFF")
    return open_library(lib / EMULATED_LIBRARY)


def count_calls(monkeypatch, library) -> list[str]:
    """The names of the kernels `library` (a loaded KernelLibrary) is asked to run from now on,
    in order: proof that a fast path ran the kernels rather than torch's reference ops."""
    calls, call = [], library.call
    monkeypatch.setattr(library, "call", lambda name, *args: (calls.append(name), call(name, *args))[1])
    return calls


def assert_fused_step_equals_torch(gen, engine, op, batch: int = 2, k: int = 1) -> None:
    """One fused graph call of `engine` against torch autograd on `gen`: the per-image loss,
    the image and the gradients w.r.t. the round's state, latents and noise maps (the first
    three optimised), scaled per image by the incoming gradient."""

    def relative(a, b):
        return float((a - b).abs().max()) / (float(b.abs().max()) or 1.0)

    g = torch.Generator().manual_seed(2)
    wplus = torch.randn(batch, gen.n_latent, gen.style_dim, generator=g)
    noises = [torch.randn(batch, 1, h, w, generator=g) for h, w in gen.noise_shapes]
    state = gen.run_stages((), wplus, noises, 0, k)
    y = op.A(torch.rand(batch, 3, gen.resolution, gen.resolution, generator=g) * 2 - 1)
    weights = torch.arange(1.0, batch + 1.0)  # per-image gradient scale
    results = []
    for run in ("torch", "engine"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (*state, wplus, *noises)]
        st, w, nz = tuple(leaves[: len(state)]), leaves[len(state)], leaves[len(state) + 1 :]
        if run == "torch":
            image = gen.image_from_state(gen.run_stages(st, w, nz, k))
            loss = op.data_fit(image, y)
        else:
            loss, image = engine.fused_step(k, op, batch, optimised_noises=3)(st, w, nz, y)
            assert not image.requires_grad
        (loss * weights).sum().backward()
        results.append((loss.detach(), image.detach(), [t.grad for t in leaves]))
    (la, ia, ga), (lb, ib, gb) = results
    assert relative(lb, la) <= 1e-4 and relative(ib, ia) <= 1e-4
    n = len(state) + 1
    for i, (a, b) in enumerate(zip(ga, gb)):
        if a is None or i >= n + 3:  # noise maps of earlier stages, or not optimised: no gradient
            assert b is None
        else:
            assert relative(b, a) <= 1e-4
