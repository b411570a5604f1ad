"""Graph export: frozen convolutions, BatchNorm folding, per-stage forward and VJP ONNX graphs
(checked against torch in float64 at batch 1, and at batch 2 from the same file), the TensorRT lint, and the
artifact cache."""

import contextlib
import json
import re

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import run_fail, run_ok
from onnx import TensorProto, helper

from ilo.export.artifacts import (
    MAX_RELATIVE_ERROR,
    cache_key,
    export_bundle,
    export_generator,
    generator_bundle,
    loss_head_bundle,
    lpips_bundle,
)
from ilo.export.graphs import generator_graphs
from ilo.export.lint import lint
from ilo.export.ort_session import ort_session
from ilo.generators import frozen_ops


@pytest.mark.parametrize("graph_forms", [False, True])
@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 1, 1), (2, 0, 4), (1, 2, 4)])
def test_frozen_conv2d_gradient_matches_autograd(stride, padding, groups, graph_forms):
    g = torch.Generator().manual_seed(stride * 10 + padding + groups)
    x = torch.randn(3, 8, 9, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6 if groups == 1 else 8, 8 // groups, 3, 3, generator=g, dtype=torch.float64)
    with frozen_ops.graph_forms() if graph_forms else contextlib.nullcontext():  # stride 1: backward as a conv
        out = frozen_ops.conv2d(x, w, None, stride, padding, 1, groups)
        ref = F.conv2d(x, w, None, stride, padding, 1, groups)
        cot = torch.randn(out.shape, generator=g, dtype=torch.float64)
        (fast,) = torch.autograd.grad(out, x, cot)
    (slow,) = torch.autograd.grad(ref, x, cot)
    assert torch.equal(out, ref) and torch.allclose(fast, slow, atol=1e-12)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_frozen_conv_transpose2d_gradient_matches_autograd(stride, padding):
    g = torch.Generator().manual_seed(stride + padding)
    x = torch.randn(2, 5, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 7, 4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    out = frozen_ops.conv_transpose2d(x, w, b, stride, padding)
    ref = F.conv_transpose2d(x, w, b, stride, padding)
    cot = torch.randn(out.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.autograd.grad(out, x, cot)[0], torch.autograd.grad(ref, x, cot)[0], atol=1e-12)


@pytest.mark.parametrize(
    "stride,padding,output_padding,groups,k", [(1, 1, 0, 1, 3), (1, 0, 0, 1, 1), (1, 2, 0, 3, 4), (2, 1, 1, 1, 3)]
)
def test_conv_transpose_as_conv_equals_conv_transpose(stride, padding, output_padding, groups, k):
    g = torch.Generator().manual_seed(k + groups)
    x = torch.randn(2, 6, 7, 7, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(4 * groups, generator=g, dtype=torch.float64)
    pair, op = [stride, stride], [output_padding, output_padding]
    got = frozen_ops.conv_transpose_as_conv(x, w, b, pair, [padding, padding], op, groups, [1, 1])
    want = F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_masked_leaky_relu_equals_leaky_relu(slope):
    x = torch.randn(1000, dtype=torch.float64)
    x[:10] = 0.0  # at zero both take the negative side's slope
    cot = torch.randn(1000, dtype=torch.float64)
    with frozen_ops.graph_forms():
        a = x.clone().requires_grad_(True)
        fast = frozen_ops.leaky_relu(a, slope)
        (grad_fast,) = torch.autograd.grad(fast, a, cot)
    b = x.clone().requires_grad_(True)
    ref = F.leaky_relu(b, slope)
    assert torch.equal(fast, ref) and torch.equal(grad_fast, torch.autograd.grad(ref, b, cot)[0])


def test_trainable_weights_take_the_plain_path():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    frozen_ops.conv2d(torch.randn(1, 3, 5, 5), w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_batchnorm_folding_keeps_every_dcgan_stage(dcgan):
    state = ()
    z = torch.randn(2, 1, dcgan.z_dim, generator=torch.Generator().manual_seed(0))
    for stage, folded in zip(dcgan.stages, dcgan.export_stages()):
        ref, got = stage(state, z, []), folded(state, z, [])
        assert folded.norm is None and torch.allclose(got[0], ref[0], atol=1e-5, rtol=1e-5)
        state = ref


@pytest.fixture(scope="module")
def dcgan_export(tmp_path_factory, dcgan):
    return export_generator(dcgan, tmp_path_factory.mktemp("graphs"))


@pytest.fixture(scope="module")
def loss_heads(dcgan_export):
    """The default model's loss heads, beside its generator graphs (as `ilo export` writes them)."""
    from ilo.engine.problems.operators import every_loss_head

    return export_bundle(loss_head_bundle(list(every_loss_head(64).values()), 64), dcgan_export.folder.parent)


@pytest.fixture(scope="module")
def sg2_export(tmp_path_factory, sg2):
    return export_generator(sg2, tmp_path_factory.mktemp("graphs"))


@pytest.mark.parametrize("which", ["dcgan_export", "sg2_export"])
def test_every_stage_has_verified_forward_and_vjp_graphs(which, request):
    result = request.getfixturevalue(which)
    m = result.manifest
    names = [g["name"] for g in m["graphs"]]
    n_stages = 5 if m["family"] == "dcgan" else 4
    for k in range(n_stages):
        assert f"stage{k}.fwd" in names and f"stage{k}.vjp" in names
    assert ("mapping.fwd" in names) == (m["family"] == "stylegan2")
    for g in m["graphs"]:
        assert g["lint"] == [], (g["name"], g["lint"])
        # one file, two batch sizes: the second image of a pair is checked against itself alone
        assert set(g["max_relative_error"]) == {"batch1", "batch2", "batch2_second_vs_alone"}
        assert max(g["max_relative_error"].values()) <= MAX_RELATIVE_ERROR, g["name"]
        assert not g["kink_limited"]  # the float64 bound holds outright for these two generators
        model = onnx.load(str(result.folder / g["file"]))
        assert all(i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input)  # dynamic batch
        assert not [i for i in model.graph.input if i.name in {t.name for t in model.graph.initializer}]
    assert m["opset"] >= 17 and len(m["checkpoint_sha256"]) == 64


def test_dcgan_graphs_fold_batchnorm_and_vjp_uses_plain_convolutions(dcgan_export):
    graphs = {g["name"]: g for g in dcgan_export.manifest["graphs"]}
    assert "BatchNormalization" not in graphs["stage1.fwd"]["ops"]
    assert {"ConvTranspose", "Conv"} <= set(graphs["stage2.vjp"]["ops"])


def test_stylegan2_vjp_gives_state_latent_and_noise_gradients(sg2_export, sg2):
    graph = {g["name"]: g for g in sg2_export.manifest["graphs"]}["stage2.vjp"]
    outputs = [o["name"] for o in graph["outputs"]]
    assert outputs == ["grad_state_in_0", "grad_state_in_1", "grad_w", "grad_noise_3", "grad_noise_4"]
    # the graph agrees with torch autograd through the generator as the solver uses it
    session = ort_session(sg2_export.folder / graph["file"])
    fn = {g.name: g for g in generator_graphs(sg2)}["stage2.vjp"]
    inputs = fn.example(3, seed=7)
    got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})
    want = fn.fn(*inputs)
    for a, b in zip(got, want):
        assert np.abs(a - b.detach().numpy()).max() <= 1e-4 * max(1.0, float(b.abs().max()))


def test_export_is_cached_and_weights_change_misses(dcgan_export, loss_heads, dcgan, capsys):
    first, root = dcgan_export, dcgan_export.folder.parent  # exported once by the fixture
    again = export_generator(dcgan, root)
    assert not first.cache_hit and again.cache_hit and again.folder == first.folder
    import copy

    changed = copy.deepcopy(dcgan)
    with torch.no_grad():
        changed.stages[4].conv.weight.mul_(1.01)
    # the folder is named by the key (checked above): other weights, another key, a miss
    assert cache_key(generator_bundle(changed)) != cache_key(generator_bundle(dcgan))
    assert not loss_heads.cache_hit
    out = run_ok(capsys, "export", "--model", "default", "--cache", root)  # the two parts the engine loads
    assert "generator-forward: exported" in out and "loss-heads: cache hit" in out and "stage4.vjp" in out
    out = run_ok(capsys, "export", "--model", "default", "--cache", root)
    assert "generator-forward: cache hit" in out and "generator-vjp: cache hit" in out
    manifest = json.loads((first.folder / "manifest.json").read_text())
    assert manifest["graphs"][0]["sha256"] and manifest["versions"]["torch"] == torch.__version__


def test_export_of_an_unsupported_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    torch.save({"something": torch.zeros(3)}, bad)
    assert "model.pt" in run_fail(capsys, "export", "--model", bad, "--cache", tmp_path)


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_lint_rejects_gather_on_a_differentiated_tensor():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    idx = helper.make_tensor("idx", TensorProto.INT64, [], [1])
    bad = _model([helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)], [x], [y], [idx])
    assert any("Gather" in p and "differentiated" in p for p in lint(bad))
    starts, ends, axes = (helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 1), ("e", 2), ("a", 1)))
    sliced = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 1, 8])
    good = _model([helper.make_node("Slice", ["x", "s", "e", "a"], ["z"])], [x], [sliced], [starts, ends, axes])
    assert lint(good) == []


def test_lint_rejects_per_sample_weights_random_ops_and_old_opsets():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])
    conv = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [x, w], [y])
    assert any("per-sample weights" in p for p in lint(conv))
    noise = helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 2])
    rand = _model([helper.make_node("RandomNormal", [], ["n"], shape=[1, 2])], [], [noise])
    assert any("random" in p for p in lint(rand))
    old = helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 13)])
    assert any("opset 13" in p for p in lint(old))


@pytest.mark.parametrize("kernel,stride,size", [(2, 2, 8), (3, 2, 15), (3, 2, 13), (2, 1, 5)])
def test_frozen_max_pool_gradient_matches_autograd(kernel, stride, size):
    x = torch.randn(
        2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size), requires_grad=True
    )
    out = frozen_ops.max_pool2d(x, kernel, stride)
    ref = F.max_pool2d(x, kernel, stride)
    cot = torch.randn(out.shape, dtype=torch.float64)
    assert torch.equal(out, ref)
    assert torch.allclose(torch.autograd.grad(out, x, cot)[0], torch.autograd.grad(ref, x, cot)[0], atol=1e-12)


def test_frozen_weights_mode_reroutes_module_calls():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2)).requires_grad_(False)
    x = torch.randn(1, 3, 10, 10, requires_grad=True)
    with frozen_ops.frozen_weights():
        out = net(x)
    assert out.grad_fn is not None and "FrozenMaxPool2d" in type(out.grad_fn).__name__
    (fast,) = torch.autograd.grad(out.sum(), x)
    (slow,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.allclose(fast, slow, atol=1e-6)


def test_loss_head_graphs(loss_heads):
    result = loss_heads
    graphs = {g["name"]: g for g in result.manifest["graphs"]}
    assert {"loss_inpaint.vjp", "loss_denoise.vjp", "loss_sr2.vjp", "loss_sr4.vjp", "loss_sr8.vjp"} <= set(graphs)
    for g in graphs.values():
        assert g["lint"] == [] and g["error"] <= MAX_RELATIVE_ERROR, g["name"]
    assert [o["name"] for o in graphs["loss_inpaint.vjp"]["outputs"]] == ["grad_image"]  # not the mask's
    assert "GatherND" not in graphs["loss_sr4.vjp"]["ops"]  # reflect padding as slices
    # dense CS: the matrix is shared by the batch and m is dynamic; equals the operator's loss
    from ilo.engine.problems.operators import DenseGaussianCS

    op = DenseGaussianCS(3 * 64 * 64, 100, seed=1)
    x, y = torch.randn(4, 3, 64, 64), torch.randn(4, 100)
    session = ort_session(result.folder / graphs["loss_cs_gaussian.fwd"]["file"])
    (got,) = session.run(None, {"image": x.numpy(), "y": y.numpy(), "matrix": op.matrix.numpy()})
    assert np.allclose(got, op.data_fit(x, y).numpy(), rtol=1e-4)


def test_lpips_graphs_cache_target_features():
    from ilo.engine.problems.losses import LPIPS

    lp = LPIPS("alex", backbone="random")  # test_engine's LPIPS: one export in the shared test cache
    result = export_bundle(lpips_bundle(lp, 64))
    graphs = {g["name"]: g for g in result.manifest["graphs"]}
    assert set(graphs) == {"lpips_features.fwd", "lpips.fwd", "lpips.vjp"}
    for g in graphs.values():
        assert g["lint"] == [] and g["error"] <= MAX_RELATIVE_ERROR, g["name"]
    assert "MaxPool" in graphs["lpips.fwd"]["ops"] and [o["name"] for o in graphs["lpips.vjp"]["outputs"]] == [
        "grad_image"
    ]
    # the three graphs chain: features once, then distance, equal to LPIPS itself
    feats = ort_session(result.folder / graphs["lpips_features.fwd"]["file"])
    dist = ort_session(result.folder / graphs["lpips.fwd"]["file"])
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    target = feats.run(None, {"target": b.numpy()})
    got = dist.run(None, {"image": a.numpy(), **{f"feat_{i}": f for i, f in enumerate(target)}})[0]
    assert np.allclose(got, lp(a, b).detach().numpy(), rtol=1e-4)


def test_export_warm_with_a_cache_folder_is_refused_before_exporting(tmp_path):
    """--warm fills the engine's own cache; the clash is known from the arguments, so it costs
    no export (the folder is never made)."""
    from ilo.engine.cli.main import main

    cache = tmp_path / "cache"
    with pytest.raises(SystemExit, match="leave out --cache"):
        main(["export", "--warm", "inpaint", "--cache", str(cache)])
    assert not cache.exists()


@pytest.mark.parametrize("mixes", [False, True])
def test_check_catches_a_graph_that_mixes_the_images_of_a_batch(tmp_path, mixes):
    # the float64 reference runs at batch 1 only; the batch-2 run must still catch a graph
    # whose images leak into each other (here through a batch mean) and pass one that does not
    from ilo.export.graphs import GraphFn
    from ilo.export.onnx_export import export_onnx
    from ilo.export.verify import check_graph

    def fn(x):
        return (torch.tanh(x) - (x.mean(0, keepdim=True) if mixes else 0.5 * x),)

    graph = GraphFn("toy.fwd", fn, inputs=[("x", (3, 4))], outputs=[("y", (3, 4))])
    export_onnx(graph, tmp_path / "toy.onnx")
    errors = check_graph(tmp_path / "toy.onnx", graph, graph)
    assert errors["max"]["batch1"] < 1e-6  # at batch 1 a batch mean is the image itself
    assert (errors["max"]["batch2_second_vs_alone"] > 0.1) == mixes


def test_the_export_plan_and_step_estimate_at_1024_export_nothing(capsys, tmp_path, monkeypatch):
    # what `ilo export` would do for a 1024² StyleGAN2, worked out from the checkpoint's shapes
    from ilo.generators.checkpoints.rosinality import to_rosinality
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    from ilo.engine.runtimes import memory_budget

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    # as on a 24 GiB machine, whatever this one has free now
    monkeypatch.setattr(memory_budget, "available_memory", lambda device: (19 * 2**30, "available (test)"))
    checkpoint = tmp_path / "sg2_1024.pt"
    torch.save(to_rosinality(random_stylegan2(config_f(1024), seed=3)), checkpoint)
    out = run_ok(capsys, "export", "--model", checkpoint, "--warm", "inpaint", "--dry-run")
    steps = ", ".join(f"step-round{k}-inpaint" for k in range(4))  # ilo-auto's four rounds
    assert f"warm inpaint (ilo-auto) would export: generator-forward, {steps}\n" in out
    assert re.search(r"one image's step: an estimated 3\.\d\d GiB \(1\.\d\d GiB fixed \+ 2\.\d\d GiB per image", out)
    # without --warm: the generator's graphs and every loss head, the dense CS one at a small example
    assert "would export: generator-forward, generator-vjp, loss-heads\n" in run_ok(
        capsys, "export", "--model", checkpoint, "--dry-run"
    )
    assert not (tmp_path / "cache").exists()


def test_the_plan_has_the_stage_vjps_only_where_a_round_runs_chained(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))
    # circulant CS has no loss head: its rounds chain the stage graphs, whose VJPs are exported
    # ahead (with the encoder the default model's learned start runs on)
    out = run_ok(capsys, "export", "--warm", "cs", "--warm", "inpaint", "--dry-run")
    assert "warm cs (ilo-auto) would export: generator-forward, generator-vjp, encoder\n" in out
    assert re.search(r"warm inpaint \(ilo-auto\) would export: generator-forward, step-round0-inpaint[^\n]*\n", out)
    assert "generator-vjp" not in out.split("warm inpaint")[1] and not any(tmp_path.iterdir())


def test_export_warm_fails_where_its_export_fails_instead_of_falling_back_to_torch(capsys, tmp_path, monkeypatch):
    from ilo.export import parallel

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(parallel, "available_host_memory", lambda: (2**20, "available (test)"))
    err = run_fail(capsys, "export", "--warm", "inpaint")
    assert "exporting a 64² dcgan's graphs needs about" in err and "torch" not in err
    assert len(err.strip().splitlines()) == 1
