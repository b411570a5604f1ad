"""How much memory a solve may use, and how many rows of one generator call fit in it.

A row is one image at one random start: round 0 runs images x starts rows, later rounds one
row per image. What a row costs is measured once per (model, backend, device, task, rounds):
one step of every round at 1 and at 2 rows, the peak above the level before each. The two
peaks give a fixed part and a per-row part; the numbers are cached beside the exported graphs,
so a node pays the probe once. The solver then splits a batch into micro-batches of at most
`rows_within(budget)` rows (ilo.engine.solver.ilo_solver.solve's `max_rows`).

The budget is what a solve may add to what the process already holds: by default a share of
the memory available now (the kernel's MemAvailable, or the cgroup's limit if lower; on a GPU,
the device's free memory), or what `--memory-budget` says.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ilo.atomic import atomic_write_bytes
from ilo.choices import DEFAULT_MEMORY_SHARE
from ilo.engine.problems.tasks import TaskSpec
from ilo.errors import IloError
from ilo.host_memory import available_host_memory
from ilo.paths import cache_dir

# Of the memory available when a solve starts, the share it may use by default. On a CPU bigger
# micro-batches buy no speed (small calls ran faster, benchmarks/results/memory.md), so a fifth
# leaves the rest of the machine alone at no cost. A GPU needs big batches to be busy, and nothing
# else should be on it.
DEFAULT_SHARE = DEFAULT_MEMORY_SHARE
# The default share sizes batches; it must not refuse the one image that fits. Where one row is
# more than the share, the default still runs one at a time if it takes at most this much of
# what is available (the rest is the margin for the process's own growth and the machine).
ONE_ROW_SHARE = {"cpu": 0.8, "cuda": 0.9}
GiB = 1024**3


class MemoryBudgetError(IloError):
    """Not even one row fits in the budget: refused before anything runs."""


@dataclass(frozen=True)
class MemoryBudget:
    """`bytes` (a fixed amount), `share` (of the memory available when a solve starts), or
    neither: no budget (one call for the whole batch, as before there were budgets)."""

    bytes: int | None = None
    share: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> MemoryBudget:
        """'auto' (the default share), 'off', '60%' (of what is available) or a size: '12G',
        '12GiB', '800M', '2048MB', or plain bytes. Sizes are binary (G = 2^30)."""
        if text is None or text.strip().lower() == "auto":
            return cls()
        value = text.strip().lower()
        if value in ("off", "none"):
            return cls(share=0.0)
        if value.endswith("%"):
            share = _number(value[:-1], text) / 100
            if not 0 < share <= 1:
                raise IloError(f"a memory budget in percent must be in (0, 100], got '{text}'")
            return cls(share=share)
        match = re.fullmatch(r"([0-9.]+)\s*([kmgt]?)(i?b)?", value)
        if not match:
            raise IloError(
                f"cannot read the memory budget '{text}': give a size such as 12G or 800M, a share such as 60%, "
                "auto or off"
            )
        size = _number(match.group(1), text) * 1024 ** "_kmgt".index(match.group(2) or "_")
        if size < 1:
            raise IloError(f"a memory budget must be positive, got '{text}'")
        return cls(bytes=int(size))

    @property
    def off(self) -> bool:
        return self.share == 0.0

    @property
    def default(self) -> bool:
        return self.bytes is None and self.share is None

    def rows(self, cost: RowCost, device: torch.device, where: str, estimated: bool = False) -> int:
        """Rows (images x starts) one call may take at `cost` on `device`: as many as the
        budget holds, and with the default budget at least one wherever one row fits in
        ONE_ROW_SHARE of what is available. Where not even one row fits, a MemoryBudgetError
        with the numbers; `where` names the engine, `estimated` says the cost is an estimate."""
        budget, how = self.resolve(device)
        rows = cost.rows_within(budget)
        if rows >= 1:
            return rows
        if self.default:
            free, what = available_memory(device)
            share = ONE_ROW_SHARE[device.type]
            budget = int(free * share)
            how = f"{share:.0%} of the {free / GiB:.2f} GiB {what}, the most one image may take"
            if cost.peak(1) <= budget:
                return 1
        way_out = (
            "free memory or use a smaller model (or, to try anyway, give --memory-budget a size or off)"
            if self.default
            else "free memory or raise --memory-budget"
        )
        raise MemoryBudgetError(
            f"one image needs {'an estimated' if estimated else 'about'} {cost.peak(1) / GiB:.2f} GiB for a step "
            f"({cost.fixed / GiB:.2f} GiB fixed + {cost.per_row / GiB:.2f} GiB per image and start) on {where}, but the "
            f"memory budget is {budget / GiB:.2f} GiB ({how}); {way_out}"
        )

    def resolve(self, device: torch.device) -> tuple[int, str]:
        """The budget in bytes now, and how it was arrived at (for messages)."""
        if self.bytes is not None:
            return self.bytes, f"--memory-budget {self.bytes / GiB:.2f} GiB"
        share = self.share if self.share is not None else DEFAULT_SHARE[device.type]
        free, where = available_memory(device)
        return int(free * share), f"{share:.0%} of the {free / GiB:.2f} GiB {where}"


def _number(text: str, whole: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise IloError(f"cannot read the memory budget '{whole}'") from None


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes that can be taken now, and what they are (for messages)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    host = available_host_memory()
    if host is None:
        raise IloError(
            "cannot tell how much memory is free on this platform: give --memory-budget a size (e.g. 8G) or off"
        )
    return host


@dataclass(frozen=True)
class RowCost:
    """Peak memory of one step at `rows` rows ≈ fixed + rows * per_row (bytes above the level
    before the step), from probes at 1 and 2 rows."""

    fixed: int
    per_row: int
    probes: dict  # rows -> measured peak bytes

    def peak(self, rows: int) -> int:
        return self.fixed + rows * self.per_row

    def rows_within(self, budget: int) -> int:
        return max(0, (budget - self.fixed) // max(self.per_row, 1))

    @classmethod
    def from_probes(cls, probes: dict[int, int], estimate: RowCost | None = None) -> RowCost:
        """From peaks at 1 and 2 rows; from the peak at 1 row alone, split as `estimate` splits
        its own, where 2 rows were not probed."""
        one = probes[1]
        if 2 not in probes:
            assert estimate is not None, "one probe is split as the estimate splits"
            per_row = max(int(estimate.per_row * one / max(estimate.peak(1), 1)), 1)
        else:
            per_row = max(probes[2] - one, 1)  # memory that grows with the batch
        return cls(max(one - per_row, 0), per_row, {str(k): v for k, v in probes.items()})


def measure_row_cost(trial: Callable[[int], None], device: torch.device, estimate: RowCost | None = None) -> RowCost:
    """Run `trial(rows)` (one step of every round at that many rows) at 1 and 2 rows after one
    untimed run (which loads what loads lazily), and fit the row cost to the two peaks. Where
    `estimate` says two rows would not fit in ONE_ROW_SHARE of what is available, only one row
    is probed (the machine runs one image at a time anyway), split as the estimate splits."""
    from ilo.engine.runtimes.ort_runner import arena_released_after_runs

    probes = {}
    rows_probed = (1, 2)
    if estimate is not None and estimate.peak(2) > ONE_ROW_SHARE[device.type] * available_memory(device)[0]:
        rows_probed = (1,)
    with arena_released_after_runs(device):  # each run gives back what it took, the first one too
        trial(1)
        for rows in rows_probed:
            gc.collect()
            _trim_heap()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
            with PeakMemory(device) as memory:
                trial(rows)
            probes[rows] = memory.peak
    return RowCost.from_probes(probes, estimate)


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc), so a probe's allocations show as
    growth of the resident set instead of reusing what an earlier run left free."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the probe may then read low for small models, where memory is no concern


def row_cost_key(model: str, engine: str, device: torch.device, task: TaskSpec, rounds: dict, versions: dict) -> dict:
    """What a row's cost depends on: the model, the engine (and its libraries' `versions`), the
    device, the operator's kind and the solve's round structure (`rounds`, the caller's)."""
    return {
        "model": model,
        "backend": engine,
        "device": str(device),
        **task.step_key(),  # the operator's kind and shape, not its mask or noise level
        **rounds,
        **versions,
    }


class RowCosts:
    """The row costs this process knows, by key: each found in the cache beside the graphs or
    measured (`measure_row_cost`) once. `probed` says whether the last `cost` ran trial steps."""

    def __init__(self):
        self.known: dict[str, RowCost] = {}
        self.probed = False

    def cost(
        self, key: dict, trial: Callable[[int], None], device: torch.device, estimate: RowCost | None = None
    ) -> RowCost:
        """The cost for `key`; `trial(rows)` runs one step of every round at that many rows."""
        self.probed = False
        name = str(sorted(key.items()))
        if name not in self.known:

            def run(rows: int) -> None:
                trial(rows)
                self.probed = True

            self.known[name] = cached_row_cost(key, lambda: measure_row_cost(run, device, estimate))
        return self.known[name]


def cached_row_cost(key: dict, measure: Callable[[], RowCost]) -> RowCost:
    """The row cost for `key` (what it depends on), from the cache or measured and cached."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir() / "memory" / f"{digest}.json"
    try:
        saved = json.loads(path.read_text())
        return RowCost(int(saved["fixed"]), int(saved["per_row"]), dict(saved["probes"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not measured yet, or a damaged file: measure again
    cost = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps({**asdict(cost), "key": key}, indent=1, default=str) + "\n").encode())
    return cost


class PeakMemory:
    """Peak memory above the level at entry. On the CPU, the kernel's own high-water mark
    (VmHWM, reset through /proc/self/clear_refs) where it can be reset, else the resident set
    sampled every 2 ms from a thread; on CUDA, the device's used memory sampled (which sees ONNX
    Runtime's and TensorRT's allocations, not only torch's)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()
        self._high_water = device.type == "cpu" and _reset_high_water()

    def _used(self) -> int:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            return total - free
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used() - self.start)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        self.start = self._used()
        if self._high_water:
            _reset_high_water()
            return self
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._high_water:
            self.peak = max(self.peak, _high_water() - self.start)
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used() - self.start)


def _reset_high_water() -> bool:
    """Reset this process's peak resident set to its current one (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _high_water() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
