"""`ilo bench`: latency of the engine's backends on a model — per-stage forward and VJP, ms per
ILO step, images per second of a default ILO solve and peak memory, for each backend and batch
size, timed interleaved in one process and reported as speed-ups over torch."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("batch sizes must be at least 1")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time the engine's backends (per stage, per ILO step, images/s)", description=__doc__
    )
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="comma-separated: torch, cuda (the fused kernels), onnxruntime, onnxruntime-tensorrt, tensorrt",
    )
    p.add_argument("--batch", type=_ints, default=(1, 4, 16), help="batch sizes, e.g. 1,4,16")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per backend")
    p.add_argument("--steps", type=int, default=4, help="ILO steps per round per repetition (the first is warm-up)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--json", type=Path, help="also write the results as JSON (rewritten as each batch size finishes)")
    p.add_argument(
        "--memory-budget",
        default="auto",
        metavar="SIZE",
        help="memory a step may take, as for ilo restore: a batch size whose step cannot fit is refused "
        "before anything is exported or timed. 'auto' (default) = 80%% of the available RAM (90%% of the free "
        "GPU memory), '60%%', a size such as 12G, or 'off'",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    import os

    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores, torch {torch.__version__}"


def run(args: argparse.Namespace) -> int:
    import torch

    from ilo.engine.bench.bench_budget import check_batches_fit
    from ilo.engine.bench.latency import LatencySettings, markdown, measure, save
    from ilo.engine.runtimes.memory_budget import MemoryBudget
    from ilo.engine.runs.outputs import check_output_file
    from ilo.engine.runtimes.backends import get_backend
    from ilo.errors import IloError
    from ilo.generators.checkpoints.files import load_generator

    if args.threads is not None:
        if args.threads < 1:
            raise IloError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends:
        raise IloError("--backends names no backend")
    for name in backends:
        get_backend(name, args.device)  # a missing backend fails here, before any work
    if args.repeats < 1 or args.steps < 2:
        raise IloError("--repeats must be at least 1 and --steps at least 2 (the first step of a round is warm-up)")
    settings = LatencySettings(
        backends=backends, batches=args.batch, repeats=args.repeats, steps=args.steps, device=args.device
    )
    budget = MemoryBudget.parse(args.memory_budget)
    if args.json is not None:
        check_output_file(args.json, "--json")
    gen = load_generator(args.model)
    check_batches_fit(gen, args.batch, budget, torch.device(args.device))

    def report(line: str) -> None:
        if not args.quiet:
            print(f"bench: {line}", file=sys.stderr, flush=True)

    def write_json(result: dict, complete: bool) -> None:
        if args.json:
            record = {"model": str(args.model), "machine": machine(args.device), "complete": complete, **result}
            save(args.json, json.dumps(record, indent=2) + "\n")

    def finished(result: dict) -> None:  # a batch size is done: a killed run keeps what it measured
        for r in result["rows"][-len(backends) :]:
            report(
                f"batch {r['batch']} on {r['backend']}: {r['ms_per_step']:.1f} ms/step, {r['images_per_s']:.3g} images/s, "
                f"peak {r['peak_mb']:.0f} MB"
            )
        write_json(result, complete=False)

    result = measure(gen, settings, report=report, on_batch=finished)
    print(markdown(str(args.model), result, machine(args.device)))
    write_json(result, complete=True)
    return 0
