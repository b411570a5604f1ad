"""Bundles exported side by side in worker processes (export/parallel.py) against the same
bundles exported in this process, and the engine exporting ahead what a solve will load."""

from __future__ import annotations

import pickle
from functools import partial

import pytest
import torch
from conftest import small_dcgan

from ilo.engine.problems.operators import every_loss_head
from ilo.errors import IloError
from ilo.export import parallel
from ilo.export.artifacts import generator_bundle, loss_head_bundle
from ilo.export.parallel import default_jobs, export_bundles, run_worker


def test_every_loss_head_survives_pickling():
    # a worker receives its bundle pickled: a head's loss must be a function it can import
    x, torch_rng = torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(0)
    for name, head in every_loss_head(8).items():
        copy = pickle.loads(pickle.dumps(head))
        y = torch.rand(2, *head.y_shape, generator=torch_rng)
        extra = [
            torch.rand(*([] if n in head.shared else [2]), *shape, generator=torch_rng).round()
            for n, shape in head.extra
        ]
        assert torch.equal(copy.loss(x, y, *extra), head.loss(x, y, *extra)), name


def test_workers_write_the_graphs_this_process_writes(tmp_path):
    heads = every_loss_head(8)
    makers = [partial(loss_head_bundle, [heads[name]], 8) for name in ("inpaint", "cs_gaussian")]
    seen = []
    in_workers = export_bundles(makers, tmp_path / "workers", jobs=2, progress=lambda i, n, name: seen.append(name))
    here = export_bundles(makers[:1], tmp_path / "here", jobs=1)  # the reference, for one of them
    assert all("in a worker" in name for name in seen) and len(seen) == 2
    assert not any(r.cache_hit for r in in_workers + here)
    for a, b in zip(in_workers, here):  # the same bytes: tracing does not depend on the process
        assert [g["sha256"] for g in a.manifest["graphs"]] == [g["sha256"] for g in b.manifest["graphs"]]
    again = export_bundles(makers, tmp_path / "workers", jobs=2, progress=lambda *a: pytest.fail("exported again"))
    assert all(r.cache_hit for r in again)


def test_a_workers_error_is_raised_with_its_message(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    bogus = partial(generator_bundle, None, "bogus")  # type: ignore[arg-type]  # fails before it needs a generator
    (job / "job.pkl").write_bytes(pickle.dumps((bogus, tmp_path, 1, False)))
    with pytest.raises(IloError, match="unknown part of the generator's graphs 'bogus'"):
        run_worker(job)
    (job / "job.pkl").write_bytes(b"not a pickle")
    with pytest.raises(IloError) as failed:
        run_worker(job, "generator-forward")
    # one line that names the bundle and the cause; the worker's traceback is chained for --debug
    assert str(failed.value).startswith("exporting generator-forward failed: UnpicklingError") and "\n" not in str(
        failed.value
    )
    assert "Traceback" in str(failed.value.__cause__)


def test_a_killed_worker_is_one_line_naming_its_bundle(tmp_path):
    import os

    job = tmp_path / "job"
    job.mkdir()
    (job / "job.pkl").write_bytes(pickle.dumps((partial(os.abort), tmp_path, 1, False)))  # dies by SIGABRT
    with pytest.raises(IloError, match=r"^exporting step-round0-inpaint failed: the worker was killed by signal 6$"):
        run_worker(job, "step-round0-inpaint")


def test_running_out_of_memory_here_is_one_line_naming_the_bundle(tmp_path):
    from ilo.export.artifacts import Bundle

    def build(error):
        raise error

    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 30924079104 bytes.\nmore")
    with pytest.raises(IloError, match=r"^exporting loss-heads failed: out of memory \(DefaultCPUAllocator: [^\n]*\)$"):
        export_bundles([partial(Bundle, "loss-heads", {}, partial(build, oom))], tmp_path, jobs=1)
    with pytest.raises(RuntimeError, match="a bug"):  # anything else keeps its traceback
        export_bundles([partial(Bundle, "loss-heads", {}, partial(build, RuntimeError("a bug")))], tmp_path, jobs=1)


def test_default_jobs_follow_cores_memory_and_the_environment(monkeypatch):
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    monkeypatch.delenv("ILO_EXPORT_JOBS", raising=False)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    monkeypatch.setattr(parallel, "available_host_memory", lambda: (64 * parallel.GiB, "test"))
    with torch.device("meta"):  # shapes only
        at_256, at_1024 = (parallel.export_job_bytes(random_stylegan2(config_f(r))) for r in (256, 1024))
    # the estimate against what real_resolutions.py measured: 5.0 GiB a worker at 256², 8.8 in process at 1024²
    assert 5.0 <= at_256 / parallel.GiB <= 6.0 and 8.8 <= at_1024 / parallel.GiB <= 10.5
    assert default_jobs(3, 256, at_256) == 3  # one per bundle
    assert default_jobs(12, 256, at_256) == 8  # one per core
    assert default_jobs(4, 64, 1) == 1  # small bundles export faster than a worker starts
    assert default_jobs(4, 1024, at_1024) == 4
    monkeypatch.setattr(parallel, "available_host_memory", lambda: (18 * parallel.GiB, "test"))  # this 24 GiB machine
    assert default_jobs(4, 256, at_256) == 2 and default_jobs(4, 1024, at_1024) == 1
    monkeypatch.setenv("ILO_EXPORT_JOBS", "2")
    assert default_jobs(4, 64, 1) == 2
    monkeypatch.setenv("ILO_EXPORT_JOBS", "two")
    with pytest.raises(IloError, match="ILO_EXPORT_JOBS"):
        default_jobs(4, 64, 1)


def test_an_export_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
    gen = small_dcgan()
    makers = [partial(generator_bundle, gen, "forward")]
    monkeypatch.setattr(
        parallel, "available_host_memory", lambda: (parallel.export_job_bytes(gen) // 2, "available (test)")
    )
    with pytest.raises(
        IloError, match=r"exporting a 16² dcgan's graphs needs about .* GiB a bundle \(estimated from its shapes\)"
    ):
        export_bundles(makers, tmp_path, gen=gen)
    assert not any(tmp_path.iterdir())


def test_the_engine_exports_ahead_every_step_graph_a_solve_loads(tmp_path, monkeypatch):
    from ilo.engine.api.restorer import Restorer
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.runtimes.bridge import EngineGenerator
    from ilo.engine.solver.ilo_solver import auto_depth_config

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))  # nothing exported yet
    monkeypatch.setenv("ILO_EXPORT_JOBS", "2")
    names: list[str] = []
    # denoising with held-out selection fits an inpainting of the pixels kept: its head, not denoise's
    restorer = Restorer(
        small_dcgan(),
        TaskSpec("denoise"),
        method="ilo-auto",
        config=auto_depth_config(end_stage=1),
        backend="onnxruntime",
        memory_budget="off",
        warm=False,
    )
    restorer.warm(lambda i, n, name: names.append(name))
    engine, config = restorer._solver[0] if restorer._solver else None, restorer.settings.config
    assert isinstance(engine, EngineGenerator) and config is not None
    planned = {(k, head.name, n) for k, head, n in restorer._fused_steps(config)}
    assert {(k, head) for k, head, _ in planned} == {(0, "inpaint"), (1, "inpaint")}
    assert set(engine._steps) == planned  # what the warm-up's solve loaded
    exported = [name.split(" ")[0] for name in names if "in a worker" in name]
    assert sorted(exported) == ["generator-forward", "step-round0-inpaint", "step-round1-inpaint"]
    assert sorted(b.name for b in restorer.export_plan()) == sorted(
        exported
    )  # the plan (`ilo export --dry-run`) is what was exported
    assert all("in a worker" in name for name in names)  # nothing was left to export in this process


def test_processes_sharing_a_cache_export_a_bundle_once(tmp_path):
    # two exporters of one bundle at once (threads here: flock locks apart every open of the
    # lock file, so they stand for two processes): the second waits and finds it cached
    import threading

    from ilo.export.artifacts import Bundle, export_bundle
    from ilo.export.graphs import GraphFn

    builds, started = [], threading.Event()

    def build():
        builds.append(1)
        started.set()
        graph = GraphFn("toy.fwd", lambda x: (torch.tanh(x),), inputs=[("x", (3, 4))], outputs=[("y", (3, 4))])
        return [graph], {graph.name: graph}

    bundle = Bundle("toy", {"n": 1}, build)
    results, waits = {}, []
    first = threading.Thread(target=lambda: results.setdefault("first", export_bundle(bundle, tmp_path)))
    first.start()
    assert started.wait(60)  # the first holds the lock and is exporting
    results["second"] = export_bundle(bundle, tmp_path, progress=lambda i, n, name: waits.append(name))
    first.join()
    assert len(builds) == 1
    assert not results["first"].cache_hit and results["second"].cache_hit
    assert waits == ["toy: waiting for another process exporting it"]
    assert results["second"].manifest == results["first"].manifest
