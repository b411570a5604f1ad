"""Memory this process can still take on the host: the kernel's MemAvailable, or what is left
under the cgroup's limit where that is lower. In a container (a Kubernetes pod, a Ray worker
with a memory limit) MemAvailable is the whole host's, and going past the cgroup's limit gets
the process killed, so both the memory budget of a solve and the number of export workers
must count against the limit."""

from __future__ import annotations

import os
import re
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
# (limit, usage) files of cgroup v2 and of v1's memory controller; v2 writes "max" for no limit,
# v1 a number near 2^63
CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)


def available_host_memory() -> tuple[int, str] | None:
    """Bytes that can be taken now, and what they are (for messages); None where the platform
    tells neither (Windows)."""
    try:
        match = re.search(r"MemAvailable:\s+(\d+) kB", MEMINFO.read_text())
    except OSError:
        match = None
    if match:
        free, where = int(match.group(1)) * 1024, "available (MemAvailable)"
    else:  # no /proc (macOS): the physical memory is all there is to go on
        try:
            free, where = (
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                "of physical memory (no MemAvailable here)",
            )
        except (AttributeError, ValueError, OSError):
            return None
    for limit, usage in CGROUP_FILES:
        headroom = _cgroup_headroom(limit, usage)
        if headroom is not None and headroom < free:
            free, where = headroom, f"left under the cgroup's {limit.name}"
    return free, where


def _cgroup_headroom(limit: Path, usage: Path) -> int | None:
    try:
        cap, used = limit.read_text().strip(), usage.read_text().strip()
    except OSError:
        return None
    if cap == "max" or not cap.isdigit() or not used.isdigit():
        return None
    # the usage counts the page cache too, and a container that just read a checkpoint or wrote
    # graphs holds gigabytes of it; its inactive part is given back before anything is killed
    return max(0, int(cap) - int(used) + _inactive_file(limit.parent / "memory.stat"))


def _inactive_file(stat: Path) -> int:
    """The cgroup's reclaimable page cache: v2's inactive_file, v1's total_inactive_file."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(None, 1) for line in lines if " " in line)
    value = values.get("inactive_file", values.get("total_inactive_file", "0")).strip()
    return int(value) if value.isdigit() else 0
