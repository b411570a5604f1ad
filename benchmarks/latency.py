"""Engine latency: per-stage forward and VJP, ms per ILO step, images per second and
peak memory for each backend at batch 1, 4 and 16, on the embedded DCGAN and on StyleGAN2 at
256² (config-f widths, random weights). Backends are timed interleaved in one process and
compared as speed-ups over torch eager; no timing is ever asserted in a test.

    python benchmarks/latency.py                       # both models, writes benchmarks/results/
    python benchmarks/latency.py --models dcgan --batches 1,4
    python benchmarks/latency.py --device cuda --backends torch,onnxruntime,tensorrt
    python benchmarks/latency.py --redraw             # the figure again, from latency.json

Targets on the 2-core CPU machine: onnxruntime's ILO step at least 1.5x torch at batch 1 and
1.2x at batch 16, for both models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import METHOD_COLOURS, Script, comma_ints, comma_list, machine_line

TARGETS = {1: 2.0, 16: 1.2}  # onnxruntime's round-0 step over torch eager's, per batch
PEAK_TARGET = {"stylegan2-256": 0.8}  # share of the measured fp32 peak at batch 4 and 16


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


def plot(results: dict):
    """Each backend's speed-up over torch eager of an ILO step (round 0), grouped by batch, one
    panel per model; the line at 1 is torch itself."""
    from ilo.engine.runs.figures import grouped_bars

    panels: dict = {}
    for model, res in results.items():  # several backends share a batch's group
        for r in res["ratios"]:
            panels.setdefault(model, {}).setdefault(f"batch {r['batch']}", {})[r["backend"]] = r["speedup_round0"]
    return grouped_bars(
        panels,
        "speed-up over torch eager (x)",
        "ILO step (round 0): speed-up over torch eager (the line at 1x)",
        colours=METHOD_COLOURS,
        reference=1.0,
        size=(900, 420),
    )


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
    from ilo.engine.bench.latency import LatencySettings, fp32_peak, markdown, measure

    script = Script(
        __file__,
        __doc__,
        quick={"models": "dcgan", "batches": "1", "repeats": 1, "steps": 2, "stage_repeats": 1},
        redraw="latency",
    )
    p = script.parser
    p.add_argument("--models", type=comma_list, default="dcgan,stylegan2-256")
    p.add_argument("--backends", type=comma_list, default="torch,onnxruntime")
    p.add_argument("--batches", type=comma_ints, default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--stage-repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = script.parse(argv)
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    if args.redraw:
        saved = script.saved(f"latency{suffix}")
        script.save_figure(plot(saved["results"]), f"latency{suffix}.png", saved["machine"])
        return 0
    torch.set_num_threads(args.threads)
    backends = available_backends(args.backends, args.device)
    machine = machine_line("backends timed interleaved in one process", args.device)
    results, text = {}, ["# Engine latency", ""]
    peak = None
    if args.device == "cpu":  # the GPU's peak is benchmarks/kernels.py's
        peak = fp32_peak(args.threads)
        text += [peak_note(peak, args.threads), ""]
    settings = LatencySettings(
        backends=backends,
        batches=tuple(args.batches),
        repeats=args.repeats,
        steps=args.steps,
        stage_repeats=args.stage_repeats,
        device=args.device,
    )
    for name in args.models:
        results[name] = measure(
            model(name), settings, report=lambda line, n=name: print(f"{n}: {line}", file=sys.stderr, flush=True)
        )
        text += [
            markdown(name, results[name], machine, peak and peak["measured"]),
            *verdicts(name, results[name], peak and peak["measured"]),
            "",
        ]
        # written after each model: a long run keeps what it measured
        script.write(f"latency{suffix}", "\n".join(text), {"fp32_peak": peak, "results": results}, machine)
        script.save_figure(plot(results), f"latency{suffix}.png", machine)
    return 0


def peak_note(peak: dict, threads: int) -> str:
    products = ", ".join(f"{k} {v:.0f}" for k, v in peak["products"].items())
    return (
        f"fp32 peak of this machine, {threads} threads: {peak['measured']:.1f} GFLOP/s measured (the best "
        f"large matrix product: {products}); theoretical FMA peak {peak['theoretical']:.1f} GFLOP/s "
        "(cores x 2 FMA units x fp32 lanes x 2 x clock). GFLOP/step: convolutions and matrix products of one "
        "fused round-0 step (forward and gradient), counted by torch's FLOP formulas; of peak = GFLOP/s over "
        "the measured peak."
    )


if __name__ == "__main__":
    sys.exit(main())
