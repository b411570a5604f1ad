"""The learned start: the encoder's view of each task's measurements, its output on the sphere
round 0 expects, deterministic and resumable training, and a start that beats a random one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import small_dcgan

from ilo.engine.problems.measurement_view import VIEW_CHANNELS, measurement_view
from ilo.engine.problems.operators import DenseGaussianCS, Downsample, Inpainting, Noise, PartialCirculantCS
from ilo.engine.solver.encoder import EncoderShape, LatentEncoder, learned_starts
from ilo.engine.solver.encoder_training import FAMILIES, TrainingSettings, random_operator, train_encoder
from ilo.errors import IloError


def _operators(res: int) -> dict:
    n = 3 * res * res
    return {
        "inpaint": Inpainting.centre_box(res, 2),
        "sr": Downsample(4),
        "denoise": Noise(0.1),
        "cs": DenseGaussianCS(n, n // 10, seed=1),
        "cs-circulant": PartialCirculantCS(n, n // 10, batch=2),
    }


@pytest.mark.parametrize("name", list(_operators(16)))
def test_every_task_gives_a_view_that_looks_like_the_image(name):
    # the back-projection must resemble x (the encoder's whole input); a wrong adjoint or a
    # missing upsampling shows as a correlation near 0
    res, g = 16, torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g) * 2 - 1, size=(res, res), mode="bilinear")
    op = _operators(res)[name]
    view = measurement_view(op, op.A(x), res)
    assert view.shape == (2, VIEW_CHANNELS, res, res)
    image, observed, family = view[:, :3], view[:, 3:4], view[:, 4:]
    kept = (observed > 0).expand_as(image)
    corr = torch.corrcoef(torch.stack([image[kept], x[kept]]))[0, 1]
    assert corr > (0.2 if name.startswith("cs") else 0.95), float(corr)  # CS: about sqrt(m / n) = 0.32
    assert torch.equal(family.sum(1), torch.ones(2, res, res))  # exactly one family plane set
    if name == "inpaint":
        assert torch.equal(observed, op.mask.expand(2, -1, -1, -1))


def test_the_encoder_puts_every_row_on_the_sphere_round_0_expects(sg2):
    shape = EncoderShape.of(sg2, width=8, max_width=16)
    encoder = LatentEncoder(shape)
    op = Inpainting.centre_box(sg2.resolution, 3)
    y = op.A(torch.rand(3, 3, sg2.resolution, sg2.resolution) * 2 - 1)
    z = learned_starts(encoder, op, y, sg2)
    assert z.shape == (3, sg2.n_latent, sg2.style_dim) and shape.rows == sg2.n_latent
    assert torch.allclose(z.norm(dim=2), torch.full((3, sg2.n_latent), math.sqrt(sg2.style_dim)), rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_degradations_are_drawn_reproducibly(family):
    ops = [random_operator(family, 3, 16, torch.Generator().manual_seed(5)) for _ in range(2)]
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(
        ops[0].measure(x, torch.Generator().manual_seed(1)), ops[1].measure(x, torch.Generator().manual_seed(1))
    )
    with pytest.raises(IloError, match="unknown task family"):
        random_operator("deblur", 3, 16, torch.Generator())


def test_training_learns_is_deterministic_and_resumes_where_it_stopped(tmp_path):
    gen = small_dcgan().requires_grad_(False)
    shape = EncoderShape.of(gen, width=8, max_width=16)
    settings = TrainingSettings(steps=8, batch=4, checkpoint_every=4)
    whole, losses = train_encoder(gen, shape, settings)
    # stopped during step 5 (its last checkpoint is step 4's), then resumed: the same weights
    # as the run in one go
    halfway = tmp_path / "encoder.ckpt"

    class Stopped(Exception):
        pass

    def stop_in_step_5(step, total, loss):
        if step == 5:
            raise Stopped

    with pytest.raises(Stopped):
        train_encoder(gen, shape, settings, checkpoint=halfway, progress=stop_in_step_5)
    assert int(torch.load(halfway, weights_only=True)["step"]) == 4
    resumed, resumed_losses = train_encoder(gen, shape, settings, checkpoint=halfway)
    assert resumed_losses == losses
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(IloError, match="other settings"):
        train_encoder(gen, shape, TrainingSettings(steps=8, batch=2), checkpoint=halfway)
    halfway.write_bytes(b"damaged")
    with pytest.raises(IloError, match="cannot resume"):
        train_encoder(gen, shape, settings, checkpoint=halfway)


def test_the_exported_encoder_agrees_with_torch_on_onnxruntime(tmp_path):
    from ilo.export.artifacts import export_bundle
    from ilo.export.ort_session import ort_session
    from ilo.engine.solver.encoder import encoder_bundle

    torch.manual_seed(0)
    encoder = LatentEncoder(EncoderShape(32, 4, 16, width=8, max_width=16)).eval().requires_grad_(False)
    result = export_bundle(encoder_bundle(encoder), tmp_path)
    [graph] = result.manifest["graphs"]
    assert graph["lint"] == [] and graph["passed"], graph
    view = torch.randn(3, VIEW_CHANNELS, 32, 32, generator=torch.Generator().manual_seed(1))
    [got] = ort_session(result.folder / graph["file"]).run(None, {"measurement": view.numpy()})
    assert torch.allclose(torch.from_numpy(got), encoder(view), rtol=1e-4, atol=1e-5)
    assert export_bundle(encoder_bundle(encoder), tmp_path).cache_hit
    encoder.head.bias.data += 1  # other weights: another bundle
    assert not export_bundle(encoder_bundle(encoder), tmp_path).cache_hit


def test_an_encoder_file_is_refused_for_another_generator_another_format_or_damage(tmp_path):
    from safetensors.torch import load_file, save_file

    from ilo.engine.solver.encoder_files import load_encoder, save_encoder
    from ilo.errors import InputError

    torch.manual_seed(0)
    encoder = LatentEncoder(EncoderShape(16, 1, 8, width=4, max_width=8))
    path = tmp_path / "encoder.safetensors"
    save_encoder(encoder, "a" * 64, path, {"steps": 3})
    loaded = load_encoder(path, "a" * 64)
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(InputError, match="trained for another generator"):
        load_encoder(path, "b" * 64)
    save_file(
        load_file(path),
        tmp_path / "old.safetensors",
        metadata={"format": "ilo-encoder-0", "generator_sha256": "a" * 64},
    )
    with pytest.raises(InputError, match="format 'ilo-encoder-0'"):
        load_encoder(tmp_path / "old.safetensors", "a" * 64)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable encoder file"):
        load_encoder(tmp_path / "cut.safetensors", "a" * 64)
    flipped = bytearray(path.read_bytes())
    flipped[-3] ^= 0xFF  # a weight's byte: the header still reads
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="do not match the hash recorded"):
        load_encoder(tmp_path / "flipped.safetensors", "a" * 64)


def test_the_shipped_encoder_is_the_embedded_models_and_its_hash_is_its_weights(dcgan):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ilo.engine.solver.encoder_cache import SHIPPED, model_encoder
    from ilo.engine.solver.encoder_files import weights_sha256

    with safe_open(str(SHIPPED), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["generator_sha256"] == dcgan.fingerprint()
    assert metadata["weights_sha256"] == weights_sha256(load_file(SHIPPED))
    assert SHIPPED.stat().st_size < 6 * 2**20  # a few MB inside the package
    assert model_encoder(dcgan) is not None


def test_a_restore_from_the_learned_start_beats_a_random_start_at_the_same_steps(dcgan, tmp_path, monkeypatch):
    # faces the encoder never saw in training (other seeds than its samples and the benchmark's),
    # 30 + 10 + 10 steps from one start: measured +3 to +4 dB for the learned start on these tasks
    import ilo
    from ilo.engine.api.restorer import method_config
    from ilo.engine.problems.metrics import restoration_metrics
    from ilo.engine.problems.tasks import TaskSpec

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))  # the shipped encoder, not one a developer cached
    with torch.no_grad():
        truth = torch.cat(
            [
                dcgan.synthesize(torch.randn(1, 1, dcgan.z_dim, generator=torch.Generator().manual_seed(72_000 + i)))
                for i in range(3)
            ]
        )
    config = method_config("ilo", steps=[30, 10], restarts=1, prune_starts_at=[])
    for task in (TaskSpec("inpaint", centre_box=0.5), TaskSpec("sr", factor=4)):
        names = [f"face{i}" for i in range(3)]
        masks = torch.stack([task.built_in_mask(64, n) for n in names]) if task.kind.takes_masks else None
        op = task.operator(64, masks)
        y = task.measure(op, truth, names)
        pictures = (y.clamp(-1, 1) + 1) / 2
        psnr = {}
        for encoder in ("none", "auto"):
            restorer = ilo.Restorer(
                dcgan, task=task, backend="torch", config=config, encoder=encoder, memory_budget="off"
            )
            out = restorer.restore(list(pictures), masks=list(masks) if masks is not None else None, names=names)
            restored = torch.stack([o.tensor for o in out]) * 2 - 1
            psnr[encoder] = float(restoration_metrics(restored, truth, op.observed)["psnr"].mean())
        assert psnr["auto"] > psnr["none"] + 1.5, (task.task, psnr)


def test_the_command_line_refuses_an_encoder_that_is_not_the_models(capsys, tmp_path, monkeypatch):
    from conftest import STYLEGAN2_32, run_fail

    from ilo.engine.solver.encoder_cache import SHIPPED

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    faces = Path(__file__).parents[1] / "examples" / "faces"
    common = ["restore", faces, "--clean", "--task", "denoise", "--model", STYLEGAN2_32]
    err = run_fail(capsys, *common, "--encoder", SHIPPED, "--out", tmp_path / "a")
    assert "trained for another generator" in err and not (tmp_path / "a").exists()
    err = run_fail(capsys, *common, "--encoder", "auto", "--out", tmp_path / "b")
    assert "no encoder yet: train one with `ilo export --model MODEL --encoder`" in err
    err = run_fail(
        capsys, "restore", faces, "--task", "denoise", "--method", "bm3d", "--encoder", "auto", "--out", tmp_path / "c"
    )
    assert "BM3D searches nothing" in err


def test_a_folder_restored_from_a_learned_start_does_not_resume_without_it(capsys, tmp_path, monkeypatch, dcgan):
    from conftest import run_fail, run_ok, write_generated_faces

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    faces = write_generated_faces(tmp_path / "faces", dcgan, 1, seed=3)
    run = [
        "restore",
        faces,
        "--clean",
        "--task",
        "denoise",
        "--steps",
        "2,1",
        "--end-stage",
        "1",
        "--restarts",
        "1",
        "--backend",
        "torch",
        "--quiet",
        "--out",
        tmp_path / "out",
    ]
    run_ok(capsys, *run, "--encoder", "auto")
    # (its solver settings differ too: the default schedule is the learned start's)
    assert "holds a run with other settings (encoder, solver)" in run_fail(capsys, *run, "--encoder", "none")
    assert "restored 0 image(s), 1 already finished" in run_ok(capsys, *run)  # the default takes it too: resumes
    # a folder begun from random starts is told how to go on as it began
    began = [*run[:-1], tmp_path / "random"]
    run_ok(capsys, *began, "--encoder", "none")
    assert "--encoder none to go on as it began" in run_fail(capsys, *began)
    assert "restored 0 image(s), 1 already finished" in run_ok(capsys, *began, "--encoder", "none")


def test_the_encoder_alone_is_a_method_one_pass_and_nothing_optimised(dcgan, capsys, tmp_path, monkeypatch):
    import ilo
    from conftest import run_ok, write_generated_faces

    from ilo.engine.solver.encoder_cache import SHIPPED
    from ilo.engine.problems.metrics import restoration_metrics
    from ilo.engine.solver.encoder import encoded_images
    from ilo.engine.solver.encoder_files import load_encoder

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    restorer = ilo.Restorer(dcgan, task="sr", factor=4, method="encoder")
    assert restorer.settings.config is None and restorer.backend_name == "torch"  # nothing exported
    with torch.no_grad():
        truth = dcgan.synthesize(torch.randn(2, 1, dcgan.z_dim, generator=torch.Generator().manual_seed(73_000)))
    op = restorer.task.operator(64)
    y = op.A(truth)
    [a, b] = restorer.restore(list((y.clamp(-1, 1) + 1) / 2), names=["a", "b"])
    assert a.best_round is None and a.to_numpy().shape == (64, 64, 3)
    # what it returns is G(E(y)) of the model's own encoder
    seen = torch.cat(
        [p.y for p in restorer.prepare(list((y.clamp(-1, 1) + 1) / 2), names=["a", "b"])]
    )  # as 8-bit pictures
    want = encoded_images(load_encoder(SHIPPED, dcgan.fingerprint()), op, seen, dcgan)
    got = torch.stack([a.tensor, b.tensor]) * 2 - 1
    assert (got - want.clamp(-1, 1)).abs().max() < 1e-5
    # a rough guess (about 20 dB here, behind bicubic upsampling's 25-27 at x4), yet a face:
    # better than the best flat picture, the truth's own mean colour (17-20 dB against 15 here)
    flat = truth.mean((2, 3), keepdim=True).expand_as(truth)
    psnr = restoration_metrics(got, truth, None)["psnr"]
    assert (psnr > restoration_metrics(flat, truth, None)["psnr"] + 1).all(), psnr
    faces = write_generated_faces(tmp_path / "faces", dcgan, 2, seed=4)
    out = run_ok(capsys, "restore", faces, "--clean", "--task", "sr", "--method", "encoder", "--out", tmp_path / "out")
    assert "restored 2 image(s)" in out and (tmp_path / "out" / "face1.png").is_file()


def test_the_default_method_starts_from_the_models_encoder_with_its_shorter_schedule(
    dcgan, tmp_path, monkeypatch, capsys
):
    import ilo
    from conftest import STYLEGAN2_32

    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.solver.ilo_solver import AUTO_DEPTH, LEARNED_AUTO, LEARNED_FAST, ILOConfig

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    learned = ilo.Restorer(dcgan, task="denoise", sigma=0.1, backend="torch", warm=False, quiet=False)
    assert learned.settings.config == ILOConfig(**LEARNED_AUTO) and learned._encoder is not None
    assert "no encoder" not in capsys.readouterr().err
    fast = ilo.Restorer(dcgan, task="denoise", backend="torch", fast=True, warm=False)
    assert fast.settings.config == ILOConfig(**LEARNED_FAST)
    # an override replaces that one setting of the learned schedule, nothing else
    overridden = ilo.RestorerSettings(dcgan, TaskSpec("denoise"), solver_overrides={"steps": [50, 10]})
    assert ilo.Restorer(settings=overridden, warm=False).settings.config == ILOConfig(
        **{**LEARNED_AUTO, "steps": [50, 10]}
    )
    # random starts only where asked, or where the model has no encoder (said once, with the way out)
    assert ilo.Restorer(dcgan, task="denoise", encoder="none", warm=False).settings.config == ILOConfig(**AUTO_DEPTH)
    bare = ilo.Restorer(STYLEGAN2_32, task="denoise", backend="torch", warm=False, quiet=False)
    assert bare._encoder is None and bare.settings.config == ILOConfig(**AUTO_DEPTH)
    err = capsys.readouterr().err
    assert err.count("this model has no encoder") == 1 and "ilo export --model MODEL --encoder" in err
    with pytest.raises(IloError, match="needs the model's encoder|this model has none"):
        ilo.Restorer(STYLEGAN2_32, task="denoise", fast=True, warm=False)
    with pytest.raises(IloError, match="not csgm's"):
        ilo.Restorer(dcgan, task="denoise", method="csgm", fast=True, warm=False)
    with pytest.raises(IloError, match="cannot run with --encoder none"):
        ilo.Restorer(dcgan, task="denoise", fast=True, encoder="none", warm=False)
    # decided once, into the settings a Ray actor or Serve replica is built from: the model's own
    # encoder (refused on a node that lacks it) or none, never each machine's own choice
    assert learned.settings.encoder == "auto" and bare.settings.encoder == "none"
    # a DeepInverse physics is not a task the encoder was trained on: random starts unless asked
    pytest.importorskip("deepinv")
    from ilo.engine.api.deepinv_model import ILOReconstructor

    assert ILOReconstructor(model=dcgan, backend="torch", warm=False).restorer._encoder is None
    # the baselines and plain ILO start at random unless an encoder is named
    assert ilo.Restorer(dcgan, task="denoise", method="ilo", warm=False)._encoder is None


def test_on_the_engine_the_learned_start_runs_as_the_exported_graph_and_matches_the_module(
    dcgan, tmp_path, monkeypatch
):
    import ilo
    from ilo.engine.api.encoder_engine import EngineEncoder
    from ilo.engine.solver.encoder import learned_starts
    from ilo.engine.solver.ilo_solver import ILOConfig

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    restorer = ilo.Restorer(
        dcgan,
        task="sr",
        factor=4,
        backend="onnxruntime",
        encoder="auto",
        memory_budget="off",
        config=ILOConfig(steps=1, restarts=1, prune_starts_at=[], end_stage=0),
    )
    assert isinstance(restorer._start_encoder, EngineEncoder)
    assert "encoder" in [b.name for b in restorer.export_plan()]  # exported with the solve's graphs
    op = restorer.task.operator(64)
    with torch.no_grad():
        y = op.A(dcgan.synthesize(torch.randn(3, 1, dcgan.z_dim, generator=torch.Generator().manual_seed(74_000))))
    on_engine = learned_starts(restorer._start_encoder, op, y, dcgan)
    reference = learned_starts(restorer._encoder, op, y, dcgan)
    # float32 graph against the module: measured 2e-6 here
    assert (on_engine - reference).abs().max() < 1e-4
