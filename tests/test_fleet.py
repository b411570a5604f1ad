"""The fleet against the real thing: a local Ray (the machine's 2 CPUs) started here, `ilo
restore --ray` on Ray Data actors, and `ilo serve`'s HTTP API on Ray Serve with a real client.

One file, so the tests share one Ray and run in one pytest worker: the Ray Data tests first
(they need both CPUs for their actors), then the service's."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="the [ray] extra (in the test extra) is not installed")
requests = pytest.importorskip("requests")

from ilo.engine.api.restorer import RestorerSettings, method_config
from ilo.engine.problems.tasks import TaskSpec
from tests.conftest import run_ok

FACES = Path(__file__).parents[1] / "examples" / "faces"
SOLVER = ["--steps", "12,6", "--end-stage", "2", "--restarts", "2", "--backend", "torch"]
CLEAN_INPAINT = ["--clean", "--task", "inpaint", "--centre-box", "0.5"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "ilo-cache"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"ILO_CACHE_DIR": str(cache)}},
    )
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Six inputs, so two actors each get several batches."""
    folder = tmp_path_factory.mktemp("faces")
    for i, source in enumerate(sorted(FACES.glob("generated_*.png")) * 2):
        shutil.copy(source, folder / f"face{i}.png")
    return folder


@pytest.fixture(scope="module")
def local_run(faces, tmp_path_factory):
    from ilo.engine.cli.main import main

    out = tmp_path_factory.mktemp("local")
    assert (
        main(["restore", str(faces), *CLEAN_INPAINT, *SOLVER, "--batch-size", "2", "--out", str(out), "--quiet"]) == 0
    )
    return out


def _records(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((out / "metrics.json").read_text())["images"]}


def _assert_same_outputs(ray_out: Path, local_out: Path, batch_size: int | None = None) -> None:
    """Same files, same pictures, same numbers (the actors run torch on one thread, the local run
    on two; measured here the files are identical and the metrics agree to float rounding).
    `batch_size`: the Ray run's, where it is not the local run's."""

    def pictures(out: Path) -> list[Path]:  # loss plots (--plot) are checked by the test that asks for them
        return sorted(p for p in out.glob("*.png") if not p.name.endswith(".loss.png"))

    assert [p.name for p in pictures(ray_out)] == [p.name for p in pictures(local_out)]
    for png in pictures(local_out):
        a, b = np.asarray(Image.open(png), dtype=int), np.asarray(Image.open(ray_out / png.name), dtype=int)
        assert np.abs(a - b).max() <= 1, png.name  # one 8-bit level at most, from rounding
    ray_records, local_records = _records(ray_out), _records(local_out)
    assert ray_records.keys() == local_records.keys()
    for name, local in local_records.items():
        mine = ray_records[name]
        for key in ("psnr", "ssim", "measurement_mse"):
            assert mine[key] == pytest.approx(local[key], rel=1e-3, abs=1e-5), (name, key)
        assert mine["sources"] == local["sources"] and mine["batch_size"] == (batch_size or local["batch_size"])
    assert not list(ray_out.rglob("*.partial*"))


def test_ray_writes_what_the_local_run_writes(local_ray, faces, local_run, tmp_path, capsys):
    from ilo.engine.cli.main import main

    out = tmp_path / "ray"
    argv = [
        "restore",
        str(faces),
        *CLEAN_INPAINT,
        *SOLVER,
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--ray",
        "--workers",
        "2",
        "--plot",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "restored 6 image(s)" in captured.out
    assert (
        "3 batch(es) on 2 Ray actor(s)" in captured.err and "restore: 6/6" in captured.err
    )  # progress across the fleet
    _assert_same_outputs(out, local_run)
    plots = sorted(out.glob("*.loss.png"))  # the actors send the loss curves back with the images
    assert len(plots) == 6 and all(Image.open(p).size[0] > 100 for p in plots)


def test_ray_resumes_a_half_finished_local_run(local_ray, faces, local_run, tmp_path, capsys):
    out = tmp_path / "resumed"
    first_half = sorted(faces.glob("*.png"))[:2]
    run_ok(capsys, "restore", *first_half, *CLEAN_INPAINT, *SOLVER, "--batch-size", "2", "--out", out, "--quiet")
    stdout = run_ok(
        capsys,
        "restore",
        faces,
        *CLEAN_INPAINT,
        *SOLVER,
        "--batch-size",
        "2",
        "--out",
        out,
        "--ray",
        "--workers",
        "2",
        "--quiet",
    )
    assert "restored 4 image(s), 2 already finished" in stdout
    _assert_same_outputs(out, local_run)


def _restore_workers() -> list[int]:
    """Pids of the Ray Data actors holding a Restorer (Ray titles its workers by class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RestoreWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def test_a_killed_worker_costs_a_retry_not_an_output(local_ray, faces, local_run, tmp_path, capsys, monkeypatch):
    """SIGKILL one actor once the run is under way: Ray starts another and solves its batch again;
    every output is written once, whole, and equals the local run's."""
    from ilo.engine.runs.result_files import ResultWriter
    from ilo.engine.runs.run_dir import RunDir
    from ilo.engine.cli.main import main

    # this process writes every output and record (the actors send results back): count them
    written: dict[str, list[str]] = {"outputs": [], "records": []}
    write, write_record = ResultWriter.write, RunDir.write_record

    def counted_write(self, batch, *args):
        written["outputs"].append(batch.stem)
        return write(self, batch, *args)

    def counted_record(self, stem, *args):
        written["records"].append(stem)
        return write_record(self, stem, *args)

    monkeypatch.setattr(ResultWriter, "write", counted_write)
    monkeypatch.setattr(RunDir, "write_record", counted_record)
    out = tmp_path / "killed"
    argv = [
        "restore",
        str(faces),
        *CLEAN_INPAINT,
        *SOLVER,
        "--batch-size",
        "1",
        "--out",
        str(out),
        "--ray",
        "--workers",
        "2",
        "--quiet",
    ]
    result: dict = {}
    run = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    run.start()
    victim, deadline = None, time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and run.is_alive():
        workers = _restore_workers()
        if workers and len(list(out.glob("records/*.json"))) >= 1:  # under way: at least one image finished
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    run.join(timeout=600)
    assert victim is not None, "the run finished before a worker could be killed"
    assert result.get("rc") == 0
    assert victim not in _restore_workers()
    faces_written = sorted(p.stem for p in faces.glob("*.png"))
    assert sorted(written["outputs"]) == sorted(written["records"]) == faces_written  # each once, the retried one too
    # one image per batch here, two in the local run: solved alone or in pairs on the CPU the
    # images come out the same (measured: identical files), so the local run's bounds hold
    _assert_same_outputs(out, local_run, batch_size=1)


def test_ray_flags_and_addresses_are_checked_before_anything_is_written(local_ray, faces, tmp_path, capsys):
    import subprocess
    import sys

    from tests.conftest import run_fail

    out = tmp_path / "x"
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, "--ray", "--workers", "0")
    assert "--workers must be at least 1" in err
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, "--ray", "--gpus-per-worker", "1")
    assert "--device cuda" in err
    first, second = sorted(faces.glob("*.png"))[:2]
    err = run_fail(capsys, "restore", *CLEAN_INPAINT, "--out", out, "--ray", first, second)
    assert f"--ray took '{first}'" in err
    err = run_fail(capsys, "restore", faces, *CLEAN_INPAINT, "--out", out, "--quiet", "--ray", "--workers", "3")
    assert "--workers 3 with 1 CPU each does not fit this Ray cluster (2 CPUs" in err
    assert not out.exists()
    # a fresh process (this one's Ray is up): an address Ray cannot parse is one line, nothing written
    done = subprocess.run(
        [sys.executable, "-m", "ilo", "restore", str(faces), *CLEAN_INPAINT, "--out", str(out), "--ray=not-an-address"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ilo: error: no Ray cluster at 'not-an-address'")
    assert "Traceback" not in done.stderr and not out.exists()


# --- the service -------------------------------------------------------------------------------

SERVE_SOLVER = method_config("ilo", steps=[12, 6], restarts=2)
MAX_BODY = 256 << 10


@pytest.fixture(scope="module")
def service(local_ray):
    from ilo.engine.fleet.service import ServiceConfig, start

    settings = RestorerSettings(model="default", task=TaskSpec("denoise"), backend="torch", config=SERVE_SOLVER)
    config = ServiceConfig(port=8765, max_batch_size=8, batch_wait_s=0.1, max_body_bytes=MAX_BODY, cpus_per_replica=1)
    url, _ = start(settings, config)
    return url


@pytest.fixture(scope="module")
def noisy_pngs(tmp_path_factory) -> dict[str, bytes]:
    from ilo.engine.cli.main import main

    out = tmp_path_factory.mktemp("noisy")
    assert (
        main(["degrade", *map(str, sorted(FACES.glob("generated_*.png"))), "--task", "denoise", "--out", str(out)]) == 0
    )
    return {p.stem: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_health_says_ready_and_what_is_served(service):
    r = requests.get(f"{service}/healthz", timeout=30)
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ready" and health["task"]["task"] == "denoise" and health["backend"] == "torch"


def test_a_restore_matches_the_embedding_api(service, noisy_pngs, dcgan):
    """What the endpoint returns is what `ilo.Restorer` gives for the same picture and name."""
    import ilo

    name, png = next(iter(noisy_pngs.items()))
    r = requests.post(f"{service}/restore?name={name}", data=png, headers={"Content-Type": "image/png"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    served = np.asarray(Image.open(__import__("io").BytesIO(base64.b64decode(body["image_png"]))))
    [local] = ilo.Restorer(dcgan, task="denoise", backend="torch", config=SERVE_SOLVER).restore(png, names=[name])
    assert body["name"] == name and body["metrics"]["measurement_mse"] == pytest.approx(local.measurement_mse, rel=1e-3)
    assert np.abs(served.astype(int) - local.to_numpy().astype(int)).max() <= 1
    r = requests.post(f"{service}/restore?name={name}&format=png", data=png, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert json.loads(r.headers["x-ilo-metrics"])["name"] == name


def test_32_requests_from_8_clients_are_answered_in_batches(service, noisy_pngs):
    pngs = list(noisy_pngs.values())

    def one(i):
        r = requests.post(
            f"{service}/restore?name=load-{i}",
            data=pngs[i % len(pngs)],
            headers={"Content-Type": "image/png"},
            timeout=300,
        )
        return r.status_code, r.json()

    with futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(32)))
    assert [status for status, _ in answers] == [200] * 32
    assert sorted(body["name"] for _, body in answers) == sorted(f"load-{i}" for i in range(32))
    sizes = [body["metrics"]["batch_size"] for _, body in answers]
    assert max(sizes) > 1, sizes  # concurrent requests shared solves
    for _, body in answers:
        assert np.isfinite(body["metrics"]["measurement_mse"])


def _bad_requests(png: bytes) -> list[tuple[str, dict, int, str]]:
    small = Image.new("RGB", (50, 50))
    buffer = __import__("io").BytesIO()
    small.save(buffer, format="PNG")
    return [
        ("not an image", dict(data=b"hello", headers={"Content-Type": "image/png"}), 400, "not a readable image"),
        ("empty body", dict(data=b"", headers={"Content-Type": "image/png"}), 400, "the body is empty"),
        (
            "wrong size, no fit",
            dict(data=buffer.getvalue(), headers={"Content-Type": "image/png"}),
            400,
            "50x50 but this task needs 64x64",
        ),
        (
            "oversized",
            dict(data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "image/png"}),
            413,
            "over this service's limit",
        ),
        ("bad parameter", dict(data=png, params={"steps": "9"}), 400, "unknown parameter(s) steps"),
        ("bad format", dict(data=png, params={"format": "gif"}), 400, "'format' must be json or png"),
        ("not JSON", dict(data=b"{oops", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
        ("bad base64", dict(json={"image": "%%%"}), 400, "'image' is not valid base64"),
        (
            "mask for denoising",
            dict(json={"image": base64.b64encode(png).decode(), "mask": base64.b64encode(png).decode()}),
            400,
            "masks belong to the inpaint task",
        ),
        ("text", dict(data=b"hi", headers={"Content-Type": "text/plain"}), 415, "is not a picture"),
    ]


def test_bad_requests_get_one_line_4xx_and_the_replica_lives_on(service, noisy_pngs):
    png = next(iter(noisy_pngs.values()))
    for what, kwargs, status, message in _bad_requests(png):
        r = requests.post(f"{service}/restore", timeout=60, **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert r.text.count("\n") == 1 and message in r.json()["error"], (what, r.text)
    assert requests.get(f"{service}/nowhere", timeout=30).status_code == 404
    assert requests.get(f"{service}/restore", timeout=30).status_code == 405
    r = requests.post(f"{service}/restore?name=after", data=png, timeout=120)
    assert r.status_code == 200  # the replica answered everything above and still works


def test_overload_is_refused_with_503_and_slow_requests_with_408(local_ray, service, noisy_pngs):
    """A second app on the same Serve with one request in flight, one queued and a 50 ms limit:
    a burst gets 503s (a bounded queue, not unbounded memory) and 408s (no solve is that fast),
    each a one-line answer, and the replica still answers its health check."""
    from ilo.engine.fleet.service import ServiceConfig, start

    settings = RestorerSettings(model="default", task=TaskSpec("denoise"), backend="torch", config=SERVE_SOLVER)
    config = ServiceConfig(port=8765, max_batch_size=1, max_queued=1, timeout_s=0.05, cpus_per_replica=0.5)
    url, _ = start(settings, config, app_name="tight", route_prefix="/tight")
    png = next(iter(noisy_pngs.values()))

    def one(i):
        r = requests.post(f"{url}/restore?name=burst-{i}", data=png, timeout=300)
        return r.status_code, r.text

    with futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(12)))
    statuses = [status for status, _ in answers]
    assert 503 in statuses and 408 in statuses and set(statuses) <= {408, 503}, statuses
    for status, text in answers:
        assert text.strip() and "\n" not in text.strip()
        if status == 408:  # ours: JSON (Serve's proxy answers 503 itself, in plain text)
            assert "not answered within this service's limit of 0.05 s" in json.loads(text)["error"]
    assert requests.get(f"{url}/healthz", timeout=60).json()["status"] == "ready"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gpus-per-replica", "1"], "--device cuda"),
        (["--replicas", "0"], "--replicas must be at least 1"),
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["--port", "70000"], "--port 70000 is not a port number"),
        (["--model", "missing.pt"], "missing.pt"),
        (["--method", "bm3d", "--task", "sr"], "BM3D is a denoiser"),
    ],
)
def test_ilo_serve_refuses_bad_settings_before_starting(flags, message, capsys):
    """Each in one line, before any Ray or Serve is started."""
    from tests.conftest import run_fail

    argv = ["serve", "--task", "denoise", *flags]
    if "--task" in flags:
        argv = ["serve", *flags]
    assert message in run_fail(capsys, *argv)


def test_ilo_serve_refuses_compressed_sensing_and_bad_task_settings(capsys):
    from tests.conftest import run_fail

    assert "compressed-sensing measurements are vectors" in run_fail(capsys, "serve", "--task", "cs")
    assert "--fit pad invents pixels" in run_fail(capsys, "serve", "--task", "denoise", "--fit", "pad")
    assert "does not fit a 64px image" in run_fail(capsys, "serve", "--task", "inpaint", "--box", "0,0,99,99")
