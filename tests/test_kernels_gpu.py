"""The CUDA kernels against the torch reference on a GPU, at every StyleGAN2 config-f layer
shape, batch 1 and 8: float32 with TF32 off within 1e-4 (relative to the largest value), fp16
and bf16 within 1e-2, forward and VJP; and the engine's `cuda` backend against torch. Needs a
CUDA device, and the CUDA build of the library or nvcc to build one here; skips without a
CUDA device or where no library exists and none can be built. A library that is there but
does not load (stale ABI, foreign file) or is the host-emulation build fails."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cmake_build, count_calls

from ilo.generators import ops as R
from ilo.kernels.fast_path import KernelOps
from ilo.kernels.layer_shapes import config_f_layers
from ilo.kernels.library import (
    CUDA_LIBRARY,
    LIBRARY_ENV,
    KernelLibraryError,
    library_candidates,
    load_library,
    open_library,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cuda_library(build_dir):
    """The CUDA build of the kernel library: the one the package finds, else one built here
    (`build_dir()` gives the folder). Skips only where no library exists and nvcc is missing."""
    if os.environ.get(LIBRARY_ENV) and not Path(os.environ[LIBRARY_ENV]).is_file():
        pytest.fail(f"${LIBRARY_ENV} names {os.environ[LIBRARY_ENV]}, which does not exist")
    if any(path.is_file() for path in library_candidates()):
        try:
            library = load_library()
        except KernelLibraryError as e:  # stale or foreign: building another would hide it
            pytest.fail(f"the kernel library does not load: {e}")
    elif shutil.which("nvcc") is None:
        pytest.skip("no kernel library built and no nvcc to build one")
    else:
        library = open_library(cmake_build(build_dir(), "-DILO_KERNELS_EMULATION=OFF") / CUDA_LIBRARY)
    if library.device_type != "cuda":  # its layers would take the reference path: torch against torch
        pytest.fail(
            f"{library.path} is the {library.build_info} build, not the CUDA one; point ${LIBRARY_ENV} at "
            f"{CUDA_LIBRARY} or unset it"
        )
    return library


@pytest.fixture(scope="module")
def cuda_kernels(tmp_path_factory):
    return cuda_library(lambda: tmp_path_factory.mktemp("kernels-cuda"))


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def relative(a, b):
    return float((a.double() - b.double()).abs().max()) / (float(b.abs().max()) or 1.0)


def relative_l2(a, b):
    return float((a.double() - b.double()).norm()) / (float(b.double().norm()) or 1.0)


def _layer(shape, seed=0):
    if shape.kind == "rgb":
        layer = R.ToRGB(shape.cin, 512)
    else:
        layer = R.StyledConv(shape.cin, shape.cout, 512, up=shape.kind == "up")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return layer.requires_grad_(False).cuda()


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("shape", config_f_layers(), ids=lambda s: s.name.replace(" ", ""))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("tf32", [False, True], ids=["cuda-cores", "tf32-tensor-cores"])
def test_config_f_layers_match_the_reference(cuda_kernels, shape, batch, dtype, tf32, monkeypatch):
    """Against float32 torch (TF32 off) from the same rounded inputs: 1e-4 for float32 on the
    CUDA cores, 5e-3 on TF32 tensor cores, 1e-2 for fp16 / bf16. Outputs by their largest
    error; reduced-precision gradients by the relative L2 norm, because a pre-activation that
    rounding moves across zero changes its gradient by (1 - alpha) = 80 %, which is a
    property of leaky ReLU rather than an error of the kernel."""
    layer = _layer(shape)
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(batch, shape.cin, shape.res, shape.res, device="cuda", generator=g).to(dtype).requires_grad_(True)
    w = torch.randn(batch, 512, device="cuda", generator=g, requires_grad=True)
    noise = (
        torch.randn(batch, 1, shape.out_res, shape.out_res, device="cuda", generator=g).to(dtype).requires_grad_(True)
    )
    run = (lambda x, w, n: layer(x, w)) if shape.kind == "rgb" else layer
    inputs = (x, w) if shape.kind == "rgb" else (x, w, noise)
    ref = run(x.float(), w, noise.float())  # float32 from the same (rounded) inputs
    fast_layer = R.with_fast_layers(layer, KernelOps(cuda_kernels, tf32=tf32))
    calls = count_calls(monkeypatch, cuda_kernels)
    y = ((lambda x, w, n: fast_layer(x, w)) if shape.kind == "rgb" else fast_layer)(x, w, noise)
    assert y.grad_fn is not None and "ModulatedLayer" in type(y.grad_fn).__name__  # the kernel ran ...
    assert "ilo_conv" in calls  # ... on this library
    assert y.dtype == dtype
    dy = torch.randn(ref.shape, device="cuda", generator=g)
    tol = 1e-2 if dtype != torch.float32 else (5e-3 if tf32 else 1e-4)
    assert relative(y, ref) <= tol
    got = torch.autograd.grad(y, inputs, dy.to(dtype))
    want = torch.autograd.grad(ref, inputs, dy)
    exact = dtype == torch.float32 and not tf32
    for name, a, b in zip(("x", "w", "noise"), got, want):
        assert (relative if exact else relative_l2)(a, b) <= tol, name


def test_kernel_engine_on_the_gpu_equals_torch(sg2, cuda_kernels, monkeypatch):
    from ilo.engine.runtimes.backends import KernelBackend
    from ilo.engine.runtimes.bridge import EngineGenerator

    gen = copy.deepcopy(sg2).cuda()
    engine = EngineGenerator(gen, KernelBackend("cuda", library=cuda_kernels))
    z = torch.randn(
        3, gen.n_latent, gen.style_dim, device="cuda", generator=torch.Generator(device="cuda").manual_seed(2)
    )
    grads = []
    for g in (engine, gen):
        x = z.clone().requires_grad_(True)
        calls = count_calls(monkeypatch, cuda_kernels)
        image = g.synthesize(x)
        grads.append((image.detach(), torch.autograd.grad(image.square().sum(), x)[0]))
        assert ("ilo_conv" in calls) == (g is engine)  # the engine ran the kernels, forward and back; torch did not
        assert g is gen or "ilo_act_grad" in calls
    assert relative(grads[0][0], grads[1][0]) <= 1e-4 and relative(grads[0][1], grads[1][1]) <= 1e-4
