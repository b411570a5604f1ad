"""The kernels of kernels/src against the torch reference ops, on CPU through the host-emulation
build of the same source, and the engine's `cuda` backend wired to them. The same checks on a
GPU, with the CUDA build, are in tests/test_kernels_gpu.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_fused_step_equals_torch, cmake_build, count_calls

from ilo.engine.runtimes.backends import BackendUnavailable, KernelBackend, auto_backend_name, get_backend
from ilo.generators import ops as R
from ilo.kernels import ops as K
from ilo.kernels.fast_path import KernelOps
from ilo.kernels.library import KernelLibraryError, load_library, open_library


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max()) / (float(b.abs().max()) or 1.0)


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module.requires_grad_(False)


def test_library_reports_its_build_and_struct_layouts(emulated_kernels):
    assert emulated_kernels.emulated and emulated_kernels.device_type == "cpu"
    assert emulated_kernels.build_info.startswith("host-emulation fp32")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_the_c_abi_works_from_plain_c(emulated_kernels, tmp_path):
    """kernels/tests/abi_check.c: the header compiles as C99 and the library answers a C caller."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    exe = tmp_path / "abi_check"
    lib = emulated_kernels.path
    subprocess.run(
        [
            "cc",
            "-std=c99",
            "-Wall",
            "-Werror",
            f"-I{root / 'kernels' / 'include'}",
            str(root / "kernels" / "tests" / "abi_check.c"),
            "-o",
            str(exe),
            f"-L{lib.parent}",
            f"-l:{lib.name}",
            f"-Wl,-rpath,{lib.parent}",
            "-lm",
        ],
        check=True,
    )
    done = subprocess.run([str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: host-emulation")


@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (3, 6)])
def test_bias_act_forward_and_gradients_match_the_reference(emulated_kernels, clamp, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, requires_grad=True)
    b = torch.randn(shape[1], generator=g, requires_grad=True)
    dy = torch.randn(shape, generator=g)
    y = K.bias_act(emulated_kernels, x, b, clamp=clamp)
    ref = R.bias_act(x, b, clamp=clamp)
    assert relative(y, ref) <= 1e-6
    for a, r in zip(torch.autograd.grad(y, (x, b), dy), torch.autograd.grad(ref, (x, b), dy)):
        assert relative(a, r) <= 1e-5


# Every upfirdn2d StyleGAN2 uses (skip upsampling, the up layer's blur), plus down and crop cases.
@pytest.mark.parametrize(
    "up,down,pad,gain", [(2, 1, (2, 1), 4.0), (1, 1, (1, 1), 4.0), (1, 2, (1, 1), 1.0), (1, 1, (-1, 2), 1.0)]
)
def test_upfirdn2d_and_its_adjoint_match_the_reference(emulated_kernels, up, down, pad, gain):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 6, generator=g, requires_grad=True)
    kernel = R.fir_kernel()
    y = K.upfirdn2d(emulated_kernels, x, kernel, up, down, pad, gain)
    ref = R.upfirdn2d(x, kernel, up, down, pad, gain)
    dy = torch.randn(ref.shape, generator=g)
    assert y.shape == ref.shape and relative(y, ref) <= 1e-6
    assert relative(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]) <= 1e-6


# Channel counts cross the 64-channel and 8/16-channel tiles, sizes the 8x8 pixel tiles.
LAYERS = [
    pytest.param("conv", 20, 70, 9, None, id="conv3x3"),
    pytest.param("conv", 24, 16, 4, 0.5, id="conv3x3-4px-clamped"),
    pytest.param("up", 20, 9, 5, None, id="up"),
    pytest.param("up", 12, 66, 8, 0.5, id="up-clamped"),
    pytest.param("rgb", 70, 3, 10, None, id="to-rgb"),
    pytest.param("rgb", 33, 3, 9, 0.8, id="to-rgb-clamped"),
]


def _layer(kind: str, cin: int, cout: int, clamp):
    if kind == "rgb":
        return randomised(R.ToRGB(cin, 8, conv_clamp=clamp))
    return randomised(R.StyledConv(cin, cout, 8, up=kind == "up", conv_clamp=clamp))


def _run_layer(layer, kind, x, w, noise):
    return layer(x, w) if kind == "rgb" else layer(x, w, noise)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind,cin,cout,res,clamp", LAYERS)
def test_modulated_layers_match_the_reference_forward_and_vjp(emulated_kernels, kind, cin, cout, res, clamp, batch):
    """The fused layer against StyledConv / ToRGB: output, and the gradients w.r.t. the input,
    the latent (through the style and the demodulation) and the noise map."""
    layer = _layer(kind, cin, cout, clamp)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, cin, res, res, generator=g, requires_grad=True)
    w = torch.randn(batch, 8, generator=g, requires_grad=True)
    out_res = 2 * res if kind == "up" else res
    noise = torch.randn(batch, 1, out_res, out_res, generator=g, requires_grad=True)
    inputs = (x, w) if kind == "rgb" else (x, w, noise)
    ref = _run_layer(layer, kind, x, w, noise)
    y = _run_layer(R.with_fast_layers(layer, KernelOps(emulated_kernels)), kind, x, w, noise)
    assert y.grad_fn is not None and "ModulatedLayer" in type(y.grad_fn).__name__  # the kernel ran
    dy = torch.randn(ref.shape, generator=g)
    assert relative(y, ref) <= 1e-5
    for a, r in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        assert relative(a, r) <= 1e-5


@pytest.mark.parametrize("kind,cin,cout,res", [("conv", 20, 70, 9), ("up", 12, 66, 5), ("rgb", 70, 3, 6)])
def test_tf32_tensor_core_layers_are_within_tf32_rounding_of_the_reference(emulated_kernels, kind, cin, cout, res):
    """The tensor-core kernel (mma.m16n8k8, emulated with PTX's fragment layouts: a layout
    error would be off by O(1), TF32 rounding by ~1e-3), forward and VJP; to-RGB's VJP (a 1x1
    conv to `cin` channels) is the 1x1 tensor-core case."""
    layer = _layer(kind, cin, cout, None)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, cin, res, res, generator=g, requires_grad=True)
    w = torch.randn(2, 8, generator=g, requires_grad=True)
    out_res = 2 * res if kind == "up" else res
    noise = torch.randn(2, 1, out_res, out_res, generator=g, requires_grad=True)
    inputs = (x, w) if kind == "rgb" else (x, w, noise)
    ref = _run_layer(layer, kind, x, w, noise)
    results = {}
    for tf32 in (False, True):
        y = _run_layer(R.with_fast_layers(layer, KernelOps(emulated_kernels, tf32=tf32)), kind, x, w, noise)
        dy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(10))
        results[tf32] = (y, *torch.autograd.grad(y, inputs, dy))
    want = (ref, *torch.autograd.grad(ref, inputs, dy))
    for b, r in zip(results[False], want):
        assert relative(b, r) <= 1e-5  # fp32 path: exact to rounding
    tf32_errors = [relative(a, r) for a, r in zip(results[True], want)]
    assert max(tf32_errors) <= 5e-3  # TF32: rounded, and only by TF32's rounding
    # the tensor-core path ran where it applies: its rounding shows (to-RGB's forward, with 3
    # output channels, is not on it and may match torch exactly)
    assert all(e > 0 for e in (tf32_errors[1:] if kind == "rgb" else tf32_errors))


def test_one_noise_map_broadcast_over_the_batch_gets_the_summed_gradient(emulated_kernels):
    layer = _layer("conv", 10, 12, None)
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(3, 10, 6, 6, generator=g), torch.randn(3, 8, generator=g)
    noise = torch.randn(1, 1, 6, 6, generator=g, requires_grad=True)
    grads = []
    for fast in (None, KernelOps(emulated_kernels)):
        y = R.with_fast_layers(layer, fast)(x, w, noise.expand(3, -1, -1, -1))
        grads.append(torch.autograd.grad(y.square().sum(), noise)[0])
    assert relative(grads[1], grads[0]) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_layers_are_within_1e_2_of_float32(emulated_kernels, dtype):
    if not emulated_kernels.supports(dtype):
        pytest.fail(f"the emulation build lacks {dtype}: CMake did not find the CUDA headers")
    layer = _layer("conv", 20, 16, None)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 20, 8, 8, generator=g).to(dtype)
    w, noise = torch.randn(2, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    ref = layer(x.float(), w, noise)  # the same rounded input, in float32
    y = R.with_fast_layers(layer, KernelOps(emulated_kernels))(x, w, noise.to(dtype))
    assert y.dtype == dtype and relative(y, ref) <= 1e-2


def test_kernel_outputs_are_deterministic(emulated_kernels):
    layer = _layer("up", 20, 9, None)
    g = torch.Generator().manual_seed(6)
    x, w, noise = (
        torch.randn(2, 20, 5, 5, generator=g),
        torch.randn(2, 8, generator=g),
        torch.randn(2, 1, 10, 10, generator=g),
    )
    fast_layer = R.with_fast_layers(layer, KernelOps(emulated_kernels))
    a, b = fast_layer(x, w, noise), fast_layer(x, w, noise)
    assert torch.equal(a, b)


def test_cached_layer_constants_follow_in_place_weight_changes(emulated_kernels):
    layer = _layer("up", 12, 9, None)
    x, w, noise = torch.randn(2, 12, 4, 4), torch.randn(2, 8), torch.randn(2, 1, 8, 8)
    fast_layer = R.with_fast_layers(layer, KernelOps(emulated_kernels))  # one copy: its cache is what is tested
    for scale in (1.0, -0.5):
        with torch.no_grad():  # in place on the reference: the copy shares its weights
            layer.conv.weight.mul_(scale)
            layer.bias.add_(scale)
        y = fast_layer(x, w, noise)
        assert relative(y, layer(x, w, noise)) <= 1e-5


def test_copies_of_a_layer_share_one_set_of_derived_constants(emulated_kernels):
    """Every graph runs its own copy of the layers: the derived weights (a scaled copy and its
    adjoint) are kept once per weight tensor, not once per copy, and leave with the weights."""
    layer = _layer("conv", 10, 12, None)
    fast = KernelOps(emulated_kernels)
    x, w, noise = torch.randn(2, 10, 6, 6), torch.randn(2, 8), torch.randn(2, 1, 6, 6)
    outputs = [R.with_fast_layers(layer, fast)(x, w, noise) for _ in range(3)]
    assert len(fast._weights) == 1 and all(torch.equal(y, outputs[0]) for y in outputs)
    del layer, outputs
    import gc

    gc.collect()
    assert fast._weights == {}


def test_weights_that_require_grad_run_the_reference(emulated_kernels):
    layer = _layer("conv", 10, 12, None).requires_grad_(True)
    x, w, noise = torch.randn(2, 10, 6, 6), torch.randn(2, 8), torch.randn(2, 1, 6, 6)
    y = R.with_fast_layers(layer, KernelOps(emulated_kernels))(x, w, noise)
    y.sum().backward()
    assert layer.conv.weight.grad is not None  # trained weights get their gradient, from the reference


def test_fast_layers_are_an_explicit_copy_and_the_reference_stays_as_it_was(emulated_kernels):
    """with_fast_layers sets the implementation on a copy that shares the weights; the module it
    was given, and every module as built (what graph export traces), runs the reference."""
    layer = _layer("up", 12, 9, None)
    fast_layer = R.with_fast_layers(layer, KernelOps(emulated_kernels))
    assert layer.fast is None and not R.runs_fast_layers(layer) and R.runs_fast_layers(fast_layer)
    assert fast_layer.conv.weight is layer.conv.weight and fast_layer.conv.blur_kernel is layer.conv.blur_kernel
    x, w, noise = torch.randn(2, 12, 4, 4), torch.randn(2, 8), torch.randn(2, 1, 8, 8, requires_grad=True)
    assert "ModulatedLayer" in type(fast_layer(x, w, noise).grad_fn).__name__
    assert "ModulatedLayer" not in type(layer(x, w, noise).grad_fn).__name__
    assert not R.runs_fast_layers(R.with_fast_layers(fast_layer, None))  # and back


def test_graph_functions_run_the_kernels_only_when_asked(sg2, emulated_kernels):
    """stage_graphs builds reference functions (what export traces); on_fast_layers gives the
    same graph on the kernels, whose VJP runs on plain autograd and equals the reference's."""
    from ilo.export.graphs import stage_graphs

    graphs = {g.name: g for g in stage_graphs(sg2)}
    fast = KernelOps(emulated_kernels)
    for name in ("stage1.fwd", "stage1.vjp"):
        reference = graphs[name]
        on_kernels = reference.on_fast_layers(fast)
        inputs = reference.example(2, seed=3)
        with torch.enable_grad():
            want, got = reference.fn(*inputs), on_kernels.fn(*inputs)
        for a, b in zip(got, want):
            assert relative(a, b) <= 1e-4
    assert on_kernels.on_fast_layers is None  # a graph on the kernels is never asked again


def test_kernel_backend_builds_graphs_on_the_kernels_and_runs_them(sg2, emulated_kernels):
    """Loader and runner apart: build gives the graph on the kernels, runner calls it."""
    from ilo.export.graphs import stage_graphs

    backend = KernelBackend("cpu", library=emulated_kernels)
    graph = stage_graphs(sg2)[2]  # stage1.fwd
    built = backend.build(graph, None)
    assert built is not graph and built.name == graph.name and graph.on_fast_layers is not None
    inputs = graph.example(1)
    (state, rgb), (want_state, want_rgb) = (
        backend.runner(built)(*inputs),
        get_backend("torch").load(graph, None)(*inputs),
    )
    assert relative(state, want_state) <= 1e-4 and relative(rgb, want_rgb) <= 1e-4


def test_bad_calls_are_refused_with_the_reason(emulated_kernels):
    with pytest.raises(KernelLibraryError, match="unsupported geometry k=5"):
        K.conv(emulated_kernels, torch.randn(1, 2, 6, 6), torch.randn(3, 2, 5, 5), pad=2)
    with pytest.raises(KernelLibraryError, match="filter 17x17"):
        K.upfirdn(emulated_kernels, torch.randn(1, 1, 20, 20), torch.randn(17, 17))
    with pytest.raises(KernelLibraryError, match="contiguous"):
        K.conv(emulated_kernels, torch.randn(1, 2, 6, 6).transpose(2, 3), torch.randn(3, 2, 3, 3), pad=1)


def test_missing_or_foreign_libraries_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ILO_KERNELS_LIB", str(tmp_path / "nowhere.so"))
    with pytest.raises(KernelLibraryError, match=r"no kernel library at .*nowhere.so; build it with: cmake"):
        load_library()
    with pytest.raises(BackendUnavailable, match="cmake -S . -B build"):
        get_backend("cuda", "cpu")
    assert auto_backend_name("cpu", "stylegan2") == "onnxruntime"
    with pytest.raises(KernelLibraryError, match="not an ILO kernel library"):
        open_library(Path(torch._C.__file__))  # a shared library, but not ours


def test_emulated_library_does_not_take_cuda_devices(emulated_kernels):
    with pytest.raises(BackendUnavailable, match="runs on cpu tensors, not on cuda"):
        KernelBackend("cuda", library=emulated_kernels)


# --- the engine's `cuda` backend ------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_engine(sg2, emulated_kernels):
    from ilo.engine.runtimes.bridge import EngineGenerator

    return EngineGenerator(sg2, KernelBackend("cpu", library=emulated_kernels))


def test_kernel_engine_reproduces_rosinalitys_stylegan2_output(kernel_engine, golden, emulated_kernels, monkeypatch):
    """The 32px fixture's golden images come from rosinality's stylegan2-pytorch, not from this
    project's code (tests/fixtures/make_golden.py regenerates them)."""
    wplus, noises = golden["wplus"], golden["noises"]
    calls = count_calls(monkeypatch, emulated_kernels)
    image = kernel_engine.synthesize(wplus, noises)
    assert "ilo_conv" in calls and "ilo_upfirdn2d" in calls  # the kernels drew it, not torch's reference ops
    assert relative(image, golden["img_wplus"]) <= 1e-4


def test_kernel_engine_latent_and_state_gradients_equal_torch(kernel_engine, sg2):
    z = torch.randn(2, sg2.n_latent, sg2.style_dim, generator=torch.Generator().manual_seed(7))
    target = torch.rand(2, 3, sg2.resolution, sg2.resolution) * 2 - 1
    grads = []
    for g in (kernel_engine, sg2):
        x = z.clone().requires_grad_(True)
        s = tuple(t.detach().requires_grad_(True) for t in g.run_stages((), x.detach(), None, 0, 2))
        loss = (g.image_from_state(g.run_stages(s, x, None, 2)) - target).square().sum()
        grads.append(torch.autograd.grad(loss, (x, *s)))
    for a, b in zip(*grads):
        assert relative(a, b) <= 1e-4


def test_kernel_engine_fused_step_equals_torch(kernel_engine, sg2):
    from ilo.engine.problems.operators import Inpainting

    assert_fused_step_equals_torch(sg2, kernel_engine, Inpainting.centre_box(sg2.resolution, 2))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA compiler (nvcc); no GPU needed")
def test_cuda_library_compiles_for_sm80_and_sm90_and_loads(tmp_path):
    """CMake builds the CUDA kernels for A100 and H100/H200; the library loads and checks its ABI
    without a GPU (the static CUDA runtime only looks for one at the first kernel call)."""
    from ilo.kernels.library import CUDA_LIBRARY

    lib = cmake_build(tmp_path, "-DILO_KERNELS_EMULATION=OFF", "-DCMAKE_CUDA_ARCHITECTURES=80;90")
    library = open_library(lib / CUDA_LIBRARY)
    assert library.build_info == "cuda sm_80 sm_90" and library.device_type == "cuda"


def test_kernel_benchmark_runs_end_to_end_on_the_emulation(emulated_kernels, tmp_path):
    """benchmarks/kernels.py is run on a GPU by hand; this runs the same code at tiny sizes on
    the emulation so the device run does not fail on the script itself."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_kernels", Path(__file__).parents[1] / "benchmarks" / "kernels.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = [
        "--device",
        "cpu",
        "--library",
        str(emulated_kernels.path),
        "--smoke",
        "--max-res",
        "16",
        "--batch",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "kernels_smoke.json").read_text())
    assert [b["res"] for b in result["blocks"]] == [8, 16]
    assert len(result["layers"]) == 8  # conv + rgb at 4px, then up, conv, rgb per block
    assert all(r["max relative error kernels (fp32)"] <= 1e-5 for r in result["layers"])
    assert all(r["max relative error kernels (TF32)"] <= 5e-3 for r in result["layers"])
    assert "| block | batch |" in (tmp_path / "kernels_smoke.md").read_text()
