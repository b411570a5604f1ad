"""GPU backends against the torch reference: ONNX Runtime's CUDA and TensorRT providers with IO
binding, and native TensorRT engines. These need a CUDA device (and the GPU packages: the
`gpu` extra). Without a CUDA device they skip; on one, a backend that cannot load fails with
what to install, so a GPU run without the extra is red, not a green row of skips."""

from __future__ import annotations

import copy

import pytest
import torch

from ilo.engine.problems.operators import Inpainting
from ilo.engine.runtimes.backends import BackendUnavailable, get_backend
from ilo.engine.runtimes.bridge import EngineGenerator
from ilo.engine.solver.ilo_solver import ILOConfig, solve
from ilo.export.graphs import stage_graphs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
GPU_BACKENDS = ["onnxruntime", "onnxruntime-tensorrt", "tensorrt"]


def _backend(name):
    try:
        return get_backend(name, "cuda")
    except BackendUnavailable as e:
        # these tests run only where a CUDA device is: what is missing is the extra, not the GPU
        pytest.fail(f"{name} cannot run on this CUDA machine (the GPU tests need the gpu extra): {e}")


@pytest.fixture
def exact_float32():
    """TF32 off for torch's matmuls and convolutions while a test runs, as it was after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def relative(a, b):
    return float((a.double() - b.double()).abs().max()) / (float(b.abs().max()) or 1.0)


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_stage_graphs_on_the_gpu_equal_torch(sg2, name, batch, exact_float32):
    backend = _backend(name)
    gen = copy.deepcopy(sg2).to("cuda")  # the fixture is shared: never move it
    engine = EngineGenerator(gen, backend)
    for graph in stage_graphs(gen):
        k = graph.stage
        pair = engine.stage_pairs[k]
        run = pair.forward if graph.name.endswith(".fwd") else pair.vjp
        inputs = [t.cuda() for t in graph.example(batch, seed=batch)]
        got = run(*inputs)
        with torch.no_grad() if graph.name.endswith(".fwd") else torch.enable_grad():
            want = graph.fn(*inputs)
        assert all(g.is_cuda for g in got)  # IO binding: outputs stay on the device
        assert len(got) == len(want), graph.name
        for a, b in zip(got, want):
            assert relative(a, b.detach()) <= 1e-3, graph.name  # TensorRT may pick other float32 tactics


@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_ilo_on_gpu_backends_matches_torch_on_the_cpu(sg2, name):
    backend = _backend(name)
    x = sg2.synthesize(sg2.latents_from_z(torch.randn(2, sg2.z_dim, generator=torch.Generator().manual_seed(1)))).clamp(
        -1, 1
    )
    op = Inpainting.centre_box(sg2.resolution, 2)
    config = ILOConfig(steps=[10, 5], restarts=1, end_stage=1)
    on_cpu = solve(op.A(x), op, sg2, config)
    gen = copy.deepcopy(sg2).to("cuda")
    on_gpu = solve(op.A(x).cuda(), copy.deepcopy(op).to("cuda"), EngineGenerator(gen, backend), config)
    assert [c.shape for c in on_gpu.loss_curves] == [c.shape for c in on_cpu.loss_curves] == [(10, 2), (5, 2)]
    for a, b in zip(on_gpu.loss_curves, on_cpu.loss_curves):
        assert relative(a.cpu(), b) <= 1e-2
    # The images themselves. On the CPU, onnxruntime against torch ends 3.5e-6 apart, and
    # measurements moved by 1e-3 of their range (float32 with TF32-sized rounding) move the images
    # by 3.2e-3 at most; other random starts end 2.6 apart. 2e-2 (2.5 levels of 8 bits) allows the
    # GPU's rounding several times over and still tells the same solve from another.
    assert (on_gpu.images.cpu() - on_cpu.images).abs().max() <= 2e-2
