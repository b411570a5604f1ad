"""Fleet throughput, all in one run on this machine:

1. Batch: a folder of 32 default-model faces (clean, centre hole), restored with the default ILO
   settings by `ilo restore` in one process (torch's 2 threads) against `ilo restore --ray` with
   2 single-threaded Ray Data actors, on a Ray that is already up (as on a cluster): the actors'
   start-up and warm-up are counted. Starting a Ray of its own (`--ray` without an address) adds
   the `ray.init` time, measured here too. Target: Ray >= 1.0x local.
2. Online: `ilo serve` (one replica, 2 CPUs) under 1, 4 and 16 concurrent clients, batching on
   (max batch 16) and off (max batch 1): latency p50/p95/p99 and images/s. Target: batching
   >= 2x images/s at concurrency 16. The service runs a shortened ILO (steps 100,50, 2 restarts,
   about a quarter of the defaults' work) so that 100-odd requests take minutes.

    python benchmarks/fleet.py            # about 15 minutes; writes benchmarks/results/fleet.{md,json}
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, comma_ints, machine_line

SERVE_SOLVER = {"steps": [100, 50], "restarts": 2}
TASK = ["--clean", "--task", "inpaint", "--centre-box", "0.5"]
BATCH_TARGET, SERVE_TARGET = 1.0, 2.0


def make_faces(folder: Path, n: int) -> None:
    """n faces the default model makes (seeded), as PNGs."""
    import torch

    from ilo.engine.inputs.image_files import save_png, to_uint8
    from ilo.generators.checkpoints.files import load_generator

    gen = load_generator("default")
    with torch.no_grad():
        images = gen.synthesize(
            gen.latents_from_z(torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(1234)))
        )
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(to_uint8(images)):
        save_png(folder / f"face{i:02d}.png", pixels)


def restore(faces: Path, out: Path, *extra: str) -> float:
    """Seconds for one `ilo restore` of the folder (in this process, as the command runs it)."""
    from ilo.engine.cli.main import main

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    assert main(["restore", str(faces), *TASK, "--out", str(out), "--quiet", *extra]) == 0
    return time.perf_counter() - t0


def batch_benchmark(faces: Path, work: Path, n: int) -> dict:
    import ray
    import torch

    torch.set_num_threads(2)
    # the graphs go into the cache first (the step count does not change them): not timed
    restore(faces, work / "warm", "--batch-size", "8", "--steps", "1", "--restarts", "1")
    local = restore(faces, work / "local", "--batch-size", "8")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_init = time.perf_counter() - t0
    try:
        on_cluster = restore(faces, work / "ray", "--batch-size", "8", "--ray", "--workers", "2")
    finally:
        ray.shutdown()
    end_to_end = ray_init + on_cluster
    same = all(
        np.array_equal(_png(work / "local" / p.name), _png(work / "ray" / p.name))
        for p in (work / "local").glob("*.png")
    )
    rows = {
        "local, 1 process x 2 threads": local,
        "Ray Data, 2 actors x 1 thread (Ray already up)": on_cluster,
        "Ray Data, 2 actors x 1 thread, plus starting Ray (ray.init, measured)": end_to_end,
    }
    return {
        "images": n,
        "batch_size": 8,
        "runs": {k: {"seconds": round(v, 2), "images_per_s": round(n / v, 3)} for k, v in rows.items()},
        "ray_vs_local": round(local / on_cluster, 3),
        "ray_end_to_end_vs_local": round(local / end_to_end, 3),
        "ray_init_seconds": round(ray_init, 2),
        "solver": "ILO defaults (steps 300,100; 3 restarts)",
        "outputs_identical": same,
        "target": BATCH_TARGET,
    }


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def serve_benchmark(faces: Path, concurrencies: list[int]) -> dict:
    import ray
    import requests

    from ilo.engine.api.restorer import RestorerSettings, method_config
    from ilo.engine.fleet.service import ServiceConfig, start, stop
    from ilo.engine.problems.tasks import TaskSpec

    pngs = [p.read_bytes() for p in sorted(faces.glob("*.png"))]
    config = method_config("ilo", **SERVE_SOLVER)
    settings = RestorerSettings(model="default", task=TaskSpec("denoise", sigma=0.1), config=config)
    results: dict = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for batching, max_batch in (("on", 16), ("off", 1)):
            app = f"batching-{batching}"
            service = ServiceConfig(port=8777, max_batch_size=max_batch, cpus_per_replica=2, max_queued=256)
            url, _ = start(settings, service, app_name=app, route_prefix=f"/{app}")
            for c in concurrencies:
                n = max(8, 2 * c)
                results[f"{batching}/c{c}"] = _load(requests, url, pngs, c, n, batching, max_batch)
                print(f"serve batching {batching}, concurrency {c}: {results[f'{batching}/c{c}']}", file=sys.stderr)
            stop(False, app)  # this app only; Ray (and Serve with it) stops below
    finally:
        ray.shutdown()
    top = max(concurrencies)
    ratio = results[f"on/c{top}"]["images_per_s"] / results[f"off/c{top}"]["images_per_s"]
    return {
        "levels": results,
        "batching_gain_at_top": round(ratio, 3),
        "top_concurrency": top,
        "target": SERVE_TARGET,
        "batch_wait_ms": ServiceConfig().batch_wait_s * 1000,
        "task": "denoise (sigma 0.1); the uploads are the 32 faces (a solve costs the same whatever the picture)",
    }


def _load(requests, url: str, pngs: list[bytes], concurrency: int, n: int, batching: str, max_batch: int) -> dict:
    def one(i: int) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        r = requests.post(f"{url}/restore?name=req-{i}", data=pngs[i % len(pngs)], timeout=900)
        size = r.json()["metrics"]["batch_size"] if r.status_code == 200 else 0
        return time.perf_counter() - t0, r.status_code, size

    one(10_000)  # one request before timing: the first solve of a batch size builds its buffers
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    latencies = np.array([a[0] for a in answers])
    assert all(a[1] == 200 for a in answers), [a[1] for a in answers]
    return {
        "requests": n,
        "images_per_s": round(n / wall, 3),
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "p99_s": round(float(np.percentile(latencies, 99)), 3),
        "mean_batch": round(float(np.mean([a[2] for a in answers])), 2),
    }


def machine() -> str:
    import ray

    return machine_line("auto backend (onnxruntime on the CPU)", ray=ray.__version__)


def report(result: dict) -> str:
    b, s = result["batch"], result["serve"]
    lines = [
        "# Fleet throughput (benchmarks/fleet.py)",
        "",
        f"## Batch: {b['images']} faces, inpainting a centre hole, batch size {b['batch_size']}, {b['solver']}",
        "",
        "| run | seconds | images/s |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {k} | {v['seconds']} | {v['images_per_s']} |" for k, v in b["runs"].items()]
    verdict = "met" if b["ray_vs_local"] >= b["target"] else "MISSED"
    lines += [
        "",
        f"Ray / local, Ray already up: **{b['ray_vs_local']}x** (target >= {b['target']}x: {verdict}); "
        f"with `--ray` starting its own Ray ({b['ray_init_seconds']} s): {b['ray_end_to_end_vs_local']}x. "
        f"Ray's PNGs identical to the local run's: {b['outputs_identical']}.",
        "",
        f"## Online: `ilo serve`, one replica with 2 CPUs, denoising, ILO steps 100,50 and 2 restarts, "
        f"batch wait {s['batch_wait_ms']} ms",
        "",
        "| batching | clients | requests | images/s | p50 s | p95 s | p99 s | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, v in s["levels"].items():
        batching, c = key.split("/c")
        lines.append(
            f"| {batching} | {c} | {v['requests']} | {v['images_per_s']} | {v['p50_s']} | {v['p95_s']} | "
            f"{v['p99_s']} | {v['mean_batch']} |"
        )
    verdict = "met" if s["batching_gain_at_top"] >= s["target"] else "MISSED"
    lines += [
        "",
        f"Batching on / off at {s['top_concurrency']} clients: **{s['batching_gain_at_top']}x** images/s "
        f"(target >= {s['target']}x: {verdict}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    script = Script(__file__, __doc__, quick={"images": 2, "concurrency": "1"})
    script.parser.add_argument("--images", type=int, default=32)
    script.parser.add_argument("--concurrency", type=comma_ints, default="1,4,16")
    args = script.parse(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="ilo-fleet-") as tmp:
        work = Path(tmp)
        make_faces(work / "faces", args.images)
        result = {"batch": batch_benchmark(work / "faces", work, args.images)}
        print(json.dumps(result["batch"], indent=1), file=sys.stderr)
        result["serve"] = serve_benchmark(work / "faces", args.concurrency)
    script.write("fleet", report(result), result, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
