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

    def note(self, text: str, every_s: float = 0.5) -> None:
        """Show what the current item is doing without counting it done (rate-limited)."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < (every_s if self.tty else self.log_every_s):
            return
        self.last = now
        line = f"{self.label}: {self.done}/{self.total} ({now - self.start:.1f}s) {text}".rstrip()
        print(("\r" + line + "\x1b[K") if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        line = f"{self.label}: {self.done}/{self.total} ({now - self.start:.1f}s) {note}".rstrip()
        if self.tty:
            print("\r" + line + "\x1b[K", end="\n" if finished else "", file=sys.stderr, flush=True)
        elif finished or now - self.last >= self.log_every_s:
            print(line, file=sys.stderr, flush=True)
            self.last = now
