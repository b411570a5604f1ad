"""Latency of the engine's backends on one model: per-stage forward and VJP, ms per ILO step per
round, images per second of a default ILO solve, and peak memory.

Machines are noisy, so backends are timed interleaved in one process (each repetition runs
every backend once, in turn) and compared as ratios of medians. `torch` here is what a user
runs without the engine: the eager generator under autograd for the ILO step, and the stage
graph functions for the per-stage numbers.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import flop_registry

from ilo.engine.runtimes.memory_budget import PeakMemory
from ilo.engine.problems.operators import Inpainting
from ilo.engine.runtimes.bridge import EngineGenerator
from ilo.engine.solver.generator_view import GeneratorView
from ilo.engine.solver.ilo_solver import ILOConfig, last_round, solve
from ilo.export.graphs import stage_graphs
from ilo.generators.staged import StagedGenerator


@dataclass
class LatencySettings:
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    batches: tuple[int, ...] = (1, 4, 16)
    repeats: int = 3  # interleaved repetitions; each times every backend once
    steps: int = 4  # ILO steps per round per repetition; the first of each round is warm-up
    rounds: int = 3  # rounds 0..rounds-1 (the default ILO optimises stages 0-2)
    stage_repeats: int = 5  # per-stage calls per backend after one warm-up call
    device: str = "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_times(
    gen: GeneratorView, batch: int, settings: LatencySettings, device: torch.device
) -> tuple[dict[int, list[float]], int]:
    """Seconds per ILO step of each round (warm-up steps dropped) and the peak memory of one
    short solve on `gen` (inpainting, the task of the README's first command)."""
    res = gen.resolution
    op = Inpainting.centre_box(res, batch).to(device)
    y = op.A(torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(batch)).to(device) * 2 - 1)
    stamps: dict[int, list[float]] = {}

    def progress(k, step, steps, measured):
        _sync(device)
        stamps.setdefault(k, []).append(time.perf_counter())

    config = ILOConfig(steps=[settings.steps] * settings.rounds, end_stage=settings.rounds - 1, restarts=1)
    with PeakMemory(device) as memory:
        solve(y, op, gen, config, progress=progress)
    return {k: [b - a for a, b in zip(t, t[1:])] for k, t in stamps.items()}, memory.peak


def _stage_times(
    runners: dict[str, Callable], graphs, batch: int, settings: LatencySettings, device
) -> dict[str, list[float]]:
    """Seconds per call of each stage graph, backends interleaved call by call."""
    times: dict[str, dict[str, list[float]]] = {name: {} for name in runners}
    for graph in graphs:
        inputs = [t.to(device) for t in graph.example(batch, seed=batch)]
        for rep in range(settings.stage_repeats + 1):
            for name, engine in runners.items():
                run = engine(graph.name)
                _sync(device)
                t0 = time.perf_counter()
                run(*inputs)
                _sync(device)
                if rep:  # the first call warms up
                    times[name].setdefault(graph.name, []).append(time.perf_counter() - t0)
    return times


def default_solve_seconds(round_ms: dict[int, float], config: ILOConfig | None = None) -> float:
    """Seconds per batch of a default ILO solve, from the ms of a step at the batch's size:
    round 0 for every start, halved where the starts are pruned, then the later rounds; an
    ensemble's K members as K solves."""
    config = config or ILOConfig()
    total = 0.0
    for k in range(last_round(config, max(round_ms) + 1) + 1):
        steps = int(config.steps[min(k, len(config.steps) - 1)] if isinstance(config.steps, list) else config.steps)
        ms = round_ms.get(k, round_ms[max(round_ms)])
        total += (start_steps(config, steps) if k == 0 else steps) * ms / 1e3
    return total * config.ensemble


def start_steps(config: ILOConfig, steps: int) -> float:
    """Steps x starts of a round 0 of `steps` steps: every start until the first pruning, then
    the better half (rounded up) until the next (the solver's successive halving)."""
    starts, done, total = config.restarts, 0, 0.0
    for fraction in config.prune_starts_at:
        at = int(fraction * steps)
        if at >= 1 and starts > 1:
            total += starts * (at - done)
            done, starts = at, math.ceil(starts / 2)
    return total + starts * (steps - done)


def measure(
    gen: StagedGenerator,
    settings: LatencySettings,
    report: Callable[[str], None] = print,
    on_batch: Callable[[dict], None] | None = None,
) -> dict:
    """Every backend at every batch size; returns rows and the ratios to torch. `on_batch` gets
    the results so far each time a batch size is finished."""
    device = torch.device(settings.device)
    gen = gen.to(device)
    engines, load_seconds = {}, {}
    for name in settings.backends:
        t0 = time.perf_counter()
        engines[name] = EngineGenerator(gen, name, progress=lambda i, n, what: report(f"export {i + 1}/{n} {what}"))
        for k in range(settings.rounds):  # export and load the step graphs before any timing
            engines[name].fused_step(k, Inpainting.centre_box(gen.resolution, 1), 1, ILOConfig().noise_maps)
        load_seconds[name] = time.perf_counter() - t0
    graphs = stage_graphs(gen)
    flops_one = step_flops(gen, 1, settings.rounds, device)  # exactly linear in the batch: every product is per image
    stage_runner = {name: (lambda graph_name, e=e: _runner(e, graph_name)) for name, e in engines.items()}
    rows = []
    for batch in settings.batches:
        steps: dict[str, dict[int, list[float]]] = {name: {} for name in engines}
        peaks: dict[str, int] = {name: 0 for name in engines}
        for rep in range(settings.repeats):
            for name, engine in engines.items():
                report(f"batch {batch}: ILO steps on {name} (repetition {rep + 1}/{settings.repeats})")
                solver_gen = gen if name == "torch" else engine  # torch: the plain eager generator
                times, peak = _step_times(solver_gen, batch, settings, device)
                for k, t in times.items():
                    steps[name].setdefault(k, []).extend(t)
                peaks[name] = max(peaks[name], peak)
        report(f"batch {batch}: per-stage forward and VJP")
        stages = _stage_times(stage_runner, graphs, batch, settings, device)
        for name in engines:
            round_ms = {k: 1e3 * statistics.median(t) for k, t in steps[name].items()}
            solve_s = default_solve_seconds(round_ms)
            rows.append(
                {
                    "backend": name,
                    "batch": batch,
                    "step_ms": round_ms,
                    "ms_per_step": round_ms[0],
                    "images_per_s": batch / solve_s,
                    "default_solve_s": solve_s,
                    "peak_mb": peaks[name] / 2**20,
                    "stages_ms": {g: 1e3 * statistics.median(t) for g, t in stages[name].items()},
                    "load_s": load_seconds[name],
                    "gflop_per_step": {k: batch * f / 1e9 for k, f in flops_one.items()},
                    "gflops": {k: batch * flops_one[k] / 1e6 / ms for k, ms in round_ms.items() if k in flops_one},
                }
            )
        if on_batch is not None:
            on_batch({"rows": list(rows), "ratios": _ratios(rows)})
    return {"rows": rows, "ratios": _ratios(rows)}


def _runner(engine: EngineGenerator, graph_name: str) -> Callable:
    k = int(graph_name.split(".")[0].removeprefix("stage"))
    pair = engine.stage_pairs[k]
    return pair.forward if graph_name.endswith(".fwd") else pair.vjp


def _ratios(rows: list[dict]) -> list[dict]:
    """Speed-up of each backend over torch per batch: torch's ms per step / the backend's."""
    torch_rows = {r["batch"]: r for r in rows if r["backend"] == "torch"}
    out = []
    for r in rows:
        base = torch_rows.get(r["batch"])
        if base is None or r["backend"] == "torch":
            continue
        out.append(
            {
                "backend": r["backend"],
                "batch": r["batch"],
                "speedup_round0": base["ms_per_step"] / r["ms_per_step"],
                "speedup_rounds": {k: base["step_ms"][k] / v for k, v in r["step_ms"].items() if k in base["step_ms"]},
                "speedup_default_solve": base["default_solve_s"] / r["default_solve_s"],
            }
        )
    return out


def markdown(model: str, result: dict, machine: str, peak_gflops: float | None = None) -> str:
    lines = [
        f"### {model}",
        "",
        f"Machine: {machine}",
        "",
        "| backend | batch | ms/step round 0 | ms/step rounds 1.. | images/s (default ILO) | peak MB | speed-up vs torch "
        "| GFLOP/step | GFLOP/s | of peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    speed = {(r["backend"], r["batch"]): r for r in result["ratios"]}
    for r in result["rows"]:
        later = ", ".join(f"{v:.1f}" for k, v in sorted(r["step_ms"].items()) if k > 0)
        ratio = speed.get((r["backend"], r["batch"]))
        speedup = "—" if ratio is None else f"{ratio['speedup_round0']:.2f}×"
        rate = r.get("gflops", {}).get(0, float("nan"))
        share = f"{rate / peak_gflops:.0%}" if peak_gflops else "–"
        lines.append(
            f"| {r['backend']} | {r['batch']} | {r['ms_per_step']:.1f} | {later} | {r['images_per_s']:.3g} | "
            f"{r['peak_mb']:.0f} | {speedup} | {r.get('gflop_per_step', {}).get(0, float('nan')):.2f} | "
            f"{rate:.1f} | {share} |"
        )
    lines += [
        "",
        "Per-stage latency, ms (forward / VJP):",
        "",
        "| backend | batch | "
        + " | ".join(sorted({g.split(".")[0] for r in result["rows"] for g in r["stages_ms"]}))
        + " |",
    ]
    stages = sorted({g.split(".")[0] for r in result["rows"] for g in r["stages_ms"]})
    lines.append("| --- | ---: |" + " ---: |" * len(stages))
    for r in result["rows"]:
        cells = [
            f"{r['stages_ms'].get(s + '.fwd', float('nan')):.2f} / {r['stages_ms'].get(s + '.vjp', float('nan')):.2f}"
            for s in stages
        ]
        lines.append(f"| {r['backend']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(path: Path, text: str) -> None:
    from ilo.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def step_flops(gen: StagedGenerator, batch: int, rounds: int = 1, device: torch.device | None = None) -> dict[int, int]:
    """Floating-point operations of one fused ILO step (stages, image, loss and the gradient)
    per round at `batch`, counted by torch's FLOP counter while the step graph's function runs:
    the maths every backend runs (convolutions and matrix products, forward and backward; the
    elementwise rest is not counted and is a few percent)."""
    from ilo.export.graphs import step_graph

    head = Inpainting.centre_box(gen.resolution, 1).loss_head(gen.resolution)
    assert head is not None
    out = {}
    for k in range(rounds):
        graph = step_graph(gen, head, k, ILOConfig().noise_maps)
        inputs = [t.to(device or "cpu") for t in graph.example(batch, seed=batch)]
        with _FlopCount() as counter, torch.enable_grad():
            graph.fn(*inputs)
        out[k] = counter.flops
    return out


class _FlopCount(torch.utils._python_dispatch.TorchDispatchMode):
    """torch's FLOP formulas (torch.utils.flop_counter) per aten call, without FlopCounterMode's
    module hooks (which torch.func.vjp's autograd.grad refuses)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def fp32_peak(threads: int, repeats: int = 5) -> dict:
    """This machine's fp32 peak in GFLOP/s: the best large matrix product of torch and of numpy
    (same threads), and the theoretical one from the cores, vector width and clock (x86: AVX-512
    or AVX2 FMA units, two per core on the CPUs seen here)."""

    best: dict[str, float] = {}
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        x, y = a.numpy(), b.numpy()
        products = (("torch", lambda a=a, b=b: torch.mm(a, b)), ("numpy", lambda x=x, y=y: x @ y))
        for name, fn in products:
            fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                rate = 2 * n**3 / (time.perf_counter() - t0) / 1e9
                best[f"{name} {n}²"] = max(best.get(f"{name} {n}²", 0.0), rate)
    return {"measured": max(best.values()), "products": best, "theoretical": _theoretical_peak(threads)}


def _theoretical_peak(threads: int) -> float:
    """cores used x FMA units (2) x fp32 lanes x 2 flops x clock (GHz, from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return float("nan")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    clocks = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    return threads * 2 * lanes * 2 * (max(clocks) / 1e3 if clocks else float("nan"))
