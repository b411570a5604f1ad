"""Progress on stderr for long work: a live tqdm bar on a terminal, periodic plain lines in logs,
nothing when quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts `total` items done. On a terminal, a tqdm bar whose postfix is the latest note; off
    one (CI logs, files), `label: done/total (elapsed) note` lines at most every `log_every_s`
    plus the last one, since a bar's carriage returns make logs unreadable; disabled, nothing."""

    def __init__(self, total: int, label: str, enabled: bool = True, log_every_s: float = 2.0, unit: str = "image"):
        self.total, self.label, self.done = total, label, 0
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.log_every_s = log_every_s
        self.start = self.last = time.perf_counter()
        self.bar = None
        if self.tty and total > 0:  # with nothing to do, no bar is left on the screen
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def note(self, text: str, every_s: float = 0.5) -> None:
        """Show what the current item is doing without counting it done (rate-limited)."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < (every_s if self.tty else self.log_every_s):
            return
        self.last = now
        if self.bar is not None:
            self.bar.set_postfix_str(text)  # redraws now: a note may come long before the next advance
        elif not self.tty:
            print(self._line(now, text), file=sys.stderr, flush=True)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)  # an empty note clears the last item's
            self.bar.update(n)
            if finished:
                self.close()
        elif not self.tty and (finished or now - self.last >= self.log_every_s):
            print(self._line(now, note), file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        """End the bar's line (also done on finishing), so what is printed next starts a new one."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, now: float, text: str) -> str:
        return f"{self.label}: {self.done}/{self.total} ({now - self.start:.1f}s) {text}".rstrip()
