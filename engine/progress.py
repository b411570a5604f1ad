"""Progress on stderr for long work: one updating line on a terminal, periodic lines in logs."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, log_every_s: float = 2.0):
        self.total, self.label, self.done = total, label, 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.log_every_s = log_every_s
        self.start = self.last = time.perf_counter()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        line = f"{self.label}: {self.done}/{self.total} ({now - self.start:.1f}s) {note}".rstrip()
        if self.tty:
            print("\r" + line, end="\n" if finished else "", file=sys.stderr, flush=True)
        elif finished or now - self.last >= self.log_every_s:
            print(line, file=sys.stderr, flush=True)
            self.last = now
