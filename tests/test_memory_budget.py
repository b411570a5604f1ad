"""The memory budget: reading it, what a row costs (measured once and cached), micro-batches
that fit and give the results of one big batch, and a refusal with the numbers where not
even one image fits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ilo
from ilo.engine.runtimes import memory_budget
from ilo.engine.runtimes.memory_budget import GiB, MemoryBudget, MemoryBudgetError, PeakMemory, RowCost
from ilo.engine.api.restorer import method_config
from ilo.errors import IloError
from tests.conftest import run_fail

MiB = 1024**2
FAST = dict(steps=[6, 3], restarts=2, end_stage=1)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12G", MemoryBudget(bytes=12 * GiB)),
        ("12GiB", MemoryBudget(bytes=12 * GiB)),
        ("800M", MemoryBudget(bytes=800 * MiB)),
        ("2048mb", MemoryBudget(bytes=2048 * MiB)),
        ("1.5g", MemoryBudget(bytes=int(1.5 * GiB))),
        ("4096", MemoryBudget(bytes=4096)),
        ("60%", MemoryBudget(share=0.6)),
        ("auto", MemoryBudget()),
        ("off", MemoryBudget(share=0.0)),
    ],
)
def test_budgets_are_read_as_people_write_them(text, expected):
    assert MemoryBudget.parse(text) == expected


@pytest.mark.parametrize("text", ["12X", "lots", "0%", "150%", "0", "-3G"])
def test_unreadable_budgets_are_refused(text):
    with pytest.raises(IloError, match="memory budget"):
        MemoryBudget.parse(text)


def test_the_default_budget_is_a_share_of_what_is_available():
    budget, how = MemoryBudget().resolve(torch.device("cpu"))
    free, _ = memory_budget.available_memory(torch.device("cpu"))
    assert 0.15 * free < budget <= 0.2 * free * 1.05 and "20%" in how


@pytest.mark.parametrize("version", [2, 1])
def test_a_containers_memory_limit_counts_where_it_is_below_what_the_host_has(tmp_path, monkeypatch, version):
    # in a pod MemAvailable is the host's: the budget of a solve and the export workers must
    # count against the cgroup's limit, or the container is killed
    from ilo import host_memory
    from ilo.export import parallel

    (tmp_path / "meminfo").write_text("MemTotal: 134217728 kB\nMemAvailable: 67108864 kB\n")  # 64 GiB
    limit, usage = tmp_path / ("memory.max" if version == 2 else "memory.limit_in_bytes"), tmp_path / "usage"
    limit.write_text(f"{8 * GiB}\n")
    usage.write_text(f"{2 * GiB}\n")
    missing = (tmp_path / "none", tmp_path / "none")
    files = ((limit, usage), missing) if version == 2 else (missing, (limit, usage))
    monkeypatch.setattr(host_memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(host_memory, "CGROUP_FILES", files)
    assert memory_budget.available_memory(torch.device("cpu")) == (6 * GiB, f"left under the cgroup's {limit.name}")
    budget, how = MemoryBudget().resolve(torch.device("cpu"))
    assert budget == int(6 * GiB * 0.2) and "cgroup" in how
    # page cache the kernel can take back (a checkpoint just read) is not counted as used
    stat_line = "inactive_file" if version == 2 else "total_inactive_file"
    (tmp_path / "memory.stat").write_text(f"anon 1000\n{stat_line} {GiB}\nactive_file 5\n")
    assert memory_budget.available_memory(torch.device("cpu"))[0] == 7 * GiB
    (tmp_path / "memory.stat").unlink()
    monkeypatch.delenv("ILO_EXPORT_JOBS", raising=False)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 16)
    assert (
        parallel.default_jobs(8, 256, int(5.5 * GiB)) == 1
    )  # the cgroup's 6 GiB: one worker at least, not the host's 9
    limit.write_text("max\n" if version == 2 else "9223372036854771712\n")  # no limit
    assert memory_budget.available_memory(torch.device("cpu")) == (64 * GiB, "available (MemAvailable)")
    assert parallel.default_jobs(8, 256, int(5.5 * GiB)) == 8


def test_a_platform_that_tells_no_free_memory_asks_for_a_budget(tmp_path, monkeypatch):
    # no /proc/meminfo and no sysconf (Windows): the default budget cannot be worked out, so it
    # is a clear request for one; a size still works, and export workers follow the cores
    from ilo import host_memory
    from ilo.export import parallel

    monkeypatch.setattr(host_memory, "MEMINFO", tmp_path / "none")
    monkeypatch.setattr(host_memory, "CGROUP_FILES", ())
    monkeypatch.delattr(host_memory.os, "sysconf")
    with pytest.raises(IloError, match="give --memory-budget a size"):
        MemoryBudget().resolve(torch.device("cpu"))
    assert MemoryBudget.parse("8G").resolve(torch.device("cpu"))[0] == 8 * GiB
    monkeypatch.delenv("ILO_EXPORT_JOBS", raising=False)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    assert parallel.default_jobs(8, 256, int(5.5 * GiB)) == 4


def test_where_two_rows_would_not_fit_one_row_is_probed_and_split_as_the_estimate_splits(monkeypatch):
    _available(monkeypatch, 10)
    trials = []
    estimate = RowCost(1 * GiB, 5 * GiB, {})  # two rows: 11 GiB, more than 80% of 10 GiB
    cost = memory_budget.measure_row_cost(trials.append, torch.device("cpu"), estimate)
    assert trials == [1, 1] and set(cost.probes) == {"1"}  # the untimed run, then one probe at 1 row
    assert cost.per_row == max(int(5 / 6 * int(cost.probes["1"])), 1)
    trials.clear()
    memory_budget.measure_row_cost(trials.append, torch.device("cpu"), RowCost(1 * GiB, 2 * GiB, {}))
    assert trials == [1, 1, 2]


def test_a_row_cost_is_fitted_to_two_probes():
    cost = RowCost.from_probes({1: 300 * MiB, 2: 500 * MiB})
    assert (cost.fixed, cost.per_row) == (100 * MiB, 200 * MiB)
    assert cost.peak(16) == 100 * MiB + 16 * 200 * MiB
    assert cost.rows_within(1000 * MiB) == 4 and cost.rows_within(250 * MiB) == 0


def test_peak_memory_sees_an_allocation_it_frees_again():
    with PeakMemory(torch.device("cpu")) as memory:
        block = np.ones(300 * MiB // 8)
        del block
    assert 290 * MiB < memory.peak < 400 * MiB


@pytest.fixture
def fake_cost(monkeypatch, tmp_path):
    """Row costs as if measured (100 MiB per row): what the solver does with them is under test,
    not this machine's allocator. Counts the measurements."""
    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))
    calls = []

    def measure(trial, device, estimate=None):
        trial(1)  # the real probe's trial steps, so the sessions it would load are loaded
        calls.append(device)
        return RowCost(0, 100 * MiB, {"1": 100 * MiB, "2": 200 * MiB})

    monkeypatch.setattr(memory_budget, "measure_row_cost", measure)
    return calls


def _pictures(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return [torch.rand(3, 64, 64, generator=g) for _ in range(n)]


def test_a_batch_over_budget_runs_in_micro_batches_with_the_same_results(dcgan, fake_cost):
    whole = ilo.Restorer(
        dcgan, task="denoise", backend="torch", config=method_config("ilo", **FAST), memory_budget="off"
    )
    split = ilo.Restorer(
        dcgan, task="denoise", backend="torch", config=method_config("ilo", **FAST), memory_budget="250M"
    )
    assert len(fake_cost) == 1  # measured once, when the budget restorer was warmed
    rows = []
    prepared = split.prepare(_pictures(3), names=["a", "b", "c"])
    result = split.solve(prepared, progress=lambda k, step, steps, measured: rows.append(measured.shape[0]))
    reference = whole.solve(whole.prepare(_pictures(3), names=["a", "b", "c"]))
    assert max(rows) == 2  # 250 MiB / 100 MiB per row: one image's 2 starts at a time
    assert torch.allclose(result.images, reference.images, atol=1e-3)  # tests/test_solver.py's batch rounding bound
    assert len(fake_cost) == 1


def test_a_backend_with_a_batch_limit_gets_micro_batches_within_it(dcgan, monkeypatch):
    # TensorRT's engines take at most 64 rows a call; images x ensemble members x starts can be
    # more. Here onnxruntime stands in with a limit of 3 rows: 2 images x 2 members x 2 starts
    # (8 rows) run in calls of at most 3, with the results of the whole batch.
    from ilo.engine.runtimes.backends import OnnxRuntimeBackend

    config = method_config("ilo", **FAST, ensemble=2)
    names, pictures = ["a", "b"], _pictures(2)
    whole = ilo.Restorer(dcgan, task="denoise", backend="onnxruntime", config=config, memory_budget="off")
    reference = whole.solve(whole.prepare(pictures, names=names))
    monkeypatch.setattr(OnnxRuntimeBackend, "max_rows", 3)
    limited = ilo.Restorer(dcgan, task="denoise", backend="onnxruntime", config=config, memory_budget="off")
    rows = []
    result = limited.solve(
        limited.prepare(pictures, names=names), progress=lambda k, step, steps, measured: rows.append(measured.shape[0])
    )
    assert max(rows) == 2  # 3 rows: one image's 2 starts a call (a member of an image is an image to the solver)
    assert torch.allclose(result.images, reference.images, atol=1e-3)  # tests/test_solver.py's batch rounding bound


def test_the_row_cost_is_cached_beside_the_graphs(dcgan, fake_cost, tmp_path):
    config = method_config("ilo", **FAST)
    ilo.Restorer(dcgan, task="inpaint", centre_box=0.5, backend="torch", config=config, memory_budget="1G")
    ilo.Restorer(dcgan, task="inpaint", centre_box=0.5, backend="torch", config=config, memory_budget="2G")
    assert len(fake_cost) == 1
    [saved] = (tmp_path / "memory").glob("*.json")
    assert json.loads(saved.read_text())["per_row"] == 100 * MiB
    saved.write_text("{ damaged")  # a damaged record is measured again, not trusted
    ilo.Restorer(dcgan, task="inpaint", centre_box=0.5, backend="torch", config=config, memory_budget="1G")
    assert len(fake_cost) == 2


def test_a_budget_below_one_image_is_refused_up_front_with_the_numbers(dcgan, fake_cost):
    with pytest.raises(MemoryBudgetError, match=r"0\.10 GiB per image and start.*budget is 0\.05 GiB"):
        ilo.Restorer(dcgan, task="denoise", backend="torch", config=method_config("ilo", **FAST), memory_budget="50M")


def test_the_command_line_refuses_a_budget_it_cannot_read(capsys, tmp_path):
    faces = Path(__file__).parents[1] / "examples" / "faces"
    err = run_fail(capsys, "restore", faces, "--task", "denoise", "--out", tmp_path / "o", "--memory-budget", "12X")
    assert "cannot read the memory budget '12X'" in err and not (tmp_path / "o").exists()


def _available(monkeypatch, gib: float) -> None:
    """This machine as if `gib` GiB were available now."""
    monkeypatch.setattr(memory_budget, "available_memory", lambda device: (int(gib * GiB), "available (test)"))


def test_the_default_budget_runs_one_image_that_fits_though_its_share_is_smaller(monkeypatch):
    # a budget keeps batches from being killed; it must not refuse the one image that fits
    _available(monkeypatch, 10)
    cpu = torch.device("cpu")
    one_fits = RowCost(1 * GiB, 3 * GiB, {})  # one row: 4 GiB, more than 20% of 10 GiB
    assert MemoryBudget().rows(one_fits, cpu, "test") == 1
    assert MemoryBudget().rows(RowCost(0, GiB // 2, {}), cpu, "test") == 4  # larger batches: by the share
    with pytest.raises(MemoryBudgetError, match=r"budget is 3\.00 GiB \(--memory-budget"):
        MemoryBudget.parse("3G").rows(one_fits, cpu, "test")  # a budget the user gave is theirs
    with pytest.raises(
        MemoryBudgetError,
        match=r"9\.00 GiB for a step.*8\.00 GiB \(80% of the 10\.00 GiB available \(test\), the most one image",
    ):
        MemoryBudget().rows(RowCost(1 * GiB, 8 * GiB, {}), cpu, "test")


def test_a_model_too_big_for_the_machine_is_refused_before_anything_is_exported(monkeypatch, tmp_path):
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path))
    gen = random_stylegan2(config_f(1024), seed=1)
    _available(monkeypatch, 3)  # one 1024² image's step is estimated at 3.65 GiB
    with pytest.raises(
        MemoryBudgetError, match=r"an estimated 3\.\d\d GiB .*before exporting anything.*the most one image"
    ):
        ilo.Restorer(gen, task="inpaint", centre_box=0.5, backend="onnxruntime")
    assert not any(tmp_path.iterdir())  # not a graph exported, not a probe run


def test_the_step_estimate_at_1024_is_close_below_what_the_probe_measured():
    # the estimate refuses only what clearly cannot fit: it must err low, but not by much, against
    # the row costs real_resolutions.py measured at 256² and 1024²
    from ilo.engine.runtimes.memory_estimate import estimated_row_cost
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    saved = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "real_resolutions.json").read_text())
    runs = saved["rows"] if isinstance(saved, dict) else saved  # the benchmark harness's layout, or the older list
    assert {r["resolution"] for r in runs} >= {256, 1024}
    for run in runs:
        with torch.device("meta"):  # shapes only: not a weight is made
            gen = random_stylegan2(config_f(run["resolution"]), seed=0)
        estimate = estimated_row_cost(gen)
        for measured in run["measured_step_gib"]:
            fixed_plus_one = measured["fixed"] + measured["per_row"]
            assert 0.75 * fixed_plus_one <= estimate.peak(1) / GiB <= fixed_plus_one, run["resolution"]
            assert 0.75 * measured["per_row"] <= estimate.per_row / GiB <= measured["per_row"], run["resolution"]


def test_dense_cs_whose_matrix_cannot_fit_is_refused_at_once(dcgan, monkeypatch, tmp_path, capsys):
    from ilo.engine.problems import task_kinds

    monkeypatch.setenv("ILO_CACHE_DIR", str(tmp_path / "cache"))
    # the 64² model's matrix at ratio 0.1: 1229 x 12288 float32, 0.06 GiB, more than 30% of 0.1 GiB
    monkeypatch.setattr(task_kinds, "available_host_memory", lambda: (int(0.1 * GiB), "available (test)"))
    refusal = r"dense Gaussian CS at 64² needs a 0\.1 GiB matrix \(1229 x 12288.*--cs-matrix circulant"
    with pytest.raises(IloError, match=refusal):
        ilo.Restorer(dcgan, task="cs", cs_matrix="gaussian", backend="onnxruntime")
    faces = Path(__file__).parents[1] / "examples" / "faces"
    err = run_fail(
        capsys, "restore", faces, "--clean", "--task", "cs", "--cs-matrix", "gaussian", "--out", tmp_path / "o"
    )
    assert re.search(refusal, err) and not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()
    ilo.Restorer(dcgan, task="cs", cs_matrix="gaussian", ratio=0.02, backend="torch", warm=False)  # 0.01 GiB: it fits
