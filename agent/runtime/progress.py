"""A one-line progress bar on stderr for file replay (only on a terminal)."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = os.path.basename(label)
        self.total = max(total, 1)
        self.enabled = enabled
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width)
        rate = done / max(now - self._start, 1e-6) / 1e6
        sys.stderr.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}% {rate:6.1f} MB/s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self.update(self.total)
            self._last = 0
            sys.stderr.write("\n")
            sys.stderr.flush()
