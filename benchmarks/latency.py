"""Engine latency (issue #5): per-stage forward and VJP, ms per ILO step, images per second and
peak memory for each backend at batch 1, 4 and 16, on the embedded DCGAN and on StyleGAN2 at
256² (config-f widths, random weights). Backends are timed interleaved in one process and
compared as speed-ups over torch eager; no timing is ever asserted in a test.

    python benchmarks/latency.py                       # both models, writes benchmarks/results/
    python benchmarks/latency.py --models dcgan --batches 1,4
    python benchmarks/latency.py --device cuda --backends torch,onnxruntime,tensorrt

Targets on the 2-core CPU machine: onnxruntime's ILO step at least 1.5x torch at batch 1 and
1.2x at batch 16, for both models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
TARGETS = {1: 2.0, 16: 1.2}  # onnxruntime's round-0 step over torch eager's, per batch (issue #16: 2x at batch 1)
PEAK_TARGET = {"stylegan2-256": 0.8}  # share of the measured fp32 peak at batch 4 and 16 (issue #16)


def model(name: str):
    from ilo.generators.checkpoints.files import load_generator
    from ilo.generators.stylegan2 import config_f, random_stylegan2

    if name == "dcgan":
        return load_generator("default")
    if name.startswith("stylegan2-"):
        return random_stylegan2(config_f(int(name.split("-")[1])), seed=1)
    raise SystemExit(f"unknown model {name} (dcgan, stylegan2-256, ...)")


def verdicts(name: str, result: dict, peak_gflops: float | None = None) -> list[str]:
    lines = []
    for r in result["ratios"]:
        target = TARGETS.get(r["batch"])
        if r["backend"] == "onnxruntime" and target is not None:
            ok = "meets" if r["speedup_round0"] >= target else "MISSES"
            lines.append(
                f"- {name}, batch {r['batch']}: onnxruntime ILO step {r['speedup_round0']:.2f}× torch "
                f"(round 0; target {target}×: {ok}); default solve {r['speedup_default_solve']:.2f}×"
            )
    for r in result["rows"]:
        if peak_gflops and r["backend"] == "onnxruntime" and r["batch"] > 1:
            share = r["gflops"][0] / peak_gflops
            target = PEAK_TARGET.get(name)
            verdict = "" if target is None else f"; target {target:.0%}: {'meets' if share >= target else 'MISSES'}"
            lines.append(
                f"- {name}, batch {r['batch']}: onnxruntime at {share:.0%} of the measured fp32 peak "
                f"({r['gflops'][0]:.1f} of {peak_gflops:.1f} GFLOP/s{verdict})"
            )
    return lines


def plot(results: dict, path: Path) -> None:
    """Speed-up of each backend over torch per model and batch, as a bar chart (PIL only)."""
    from PIL import Image, ImageDraw

    bars = [(f"{m} b{r['batch']}", r["speedup_round0"]) for m, res in results.items() for r in res["ratios"]]
    width, height, left, bottom = 120 + 70 * len(bars), 360, 60, 60
    top = max([2.5] + [v for _, v in bars])
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)

    def y(v):
        return height - bottom - (height - bottom - 20) * v / top

    for v in (0.5, 1.0, 1.5, 2.0, 2.5):
        if v <= top:
            d.line([(left, y(v)), (width - 10, y(v))], fill=(200, 200, 200) if v != 1.0 else (0, 0, 0))
            d.text((10, y(v) - 6), f"{v:.1f}x", fill="black")
    for i, (label, v) in enumerate(bars):
        x0 = left + 20 + 70 * i
        d.rectangle([x0, y(v), x0 + 40, y(0)], fill=(60, 120, 200))
        d.text((x0, y(v) - 14), f"{v:.2f}", fill="black")
        d.text((x0 - 10, height - bottom + 8 + 12 * (i % 2)), label, fill="black")
    d.text((left, height - 20), "ILO step (round 0): speed-up of onnxruntime over torch eager", fill="black")
    img.save(path)


def available_backends(names: list[str], device: str) -> tuple[str, ...]:
    """The named backends that load here; the others are skipped with the reason (a device
    image may lack onnxruntime-gpu or TensorRT), so one missing package costs one row, not the run."""
    from ilo.engine.runtimes.backends import BackendUnavailable, get_backend

    usable = []
    for name in names:
        try:
            get_backend(name, device)
            usable.append(name)
        except BackendUnavailable as e:
            print(f"latency: skipping {name}: {e}", file=sys.stderr)
    if "torch" not in usable:
        raise SystemExit("latency: torch is the baseline every speed-up is measured against; include it")
    return tuple(usable)


def main(argv=None) -> int:
    from ilo.engine.bench.latency import LatencySettings, fp32_peak, markdown, measure, save
    from ilo.engine.cli.bench import machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="dcgan,stylegan2-256")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--stage-repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = available_backends(args.backends.split(","), args.device)
    results, text = {}, ["# Engine latency", ""]
    peak = None
    if args.device == "cpu":  # the GPU's peak is benchmarks/kernels.py's
        peak = fp32_peak(args.threads)
        products = ", ".join(f"{k} {v:.0f}" for k, v in peak["products"].items())
        text += [
            f"fp32 peak of this machine, {args.threads} threads: {peak['measured']:.1f} GFLOP/s measured (the best "
            f"large matrix product: {products}); theoretical FMA peak {peak['theoretical']:.1f} GFLOP/s "
            "(cores x 2 FMA units x fp32 lanes x 2 x clock). GFLOP/step: convolutions and matrix products of one "
            "fused round-0 step (forward and gradient), counted by torch's FLOP formulas; of peak = GFLOP/s over "
            "the measured peak.",
            "",
        ]
    for name in args.models.split(","):
        settings = LatencySettings(
            backends=backends,
            batches=tuple(int(b) for b in args.batches.split(",")),
            repeats=args.repeats,
            steps=args.steps,
            stage_repeats=args.stage_repeats,
            device=args.device,
        )
        results[name] = measure(
            model(name), settings, report=lambda line, n=name: print(f"{n}: {line}", file=sys.stderr, flush=True)
        )
        text += [
            markdown(name, results[name], machine(args.device), peak and peak["measured"]),
            *verdicts(name, results[name], peak and peak["measured"]),
            "",
        ]
        suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
        args.out.mkdir(parents=True, exist_ok=True)  # written after each model: a long run keeps what it measured
        save(args.out / f"latency{suffix}.md", "\n".join(text) + "\n")
        save(
            args.out / f"latency{suffix}.json",
            json.dumps({"machine": machine(args.device), "fp32_peak": peak, "results": results}, indent=2) + "\n",
        )
        plot(results, args.out / f"latency{suffix}.png")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
