"""Replay's progress bar on stderr (only on a terminal), drawn by rich.progress.

It shows the file, a bar over the bytes read, packets per second, the events made so far and the
time left.  Updates are throttled (at most five a second) so the bar costs nothing per packet.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

MIN_INTERVAL_S = 0.2


def wanted(option: bool | None) -> bool:
    """Whether to draw: as `option` says, or (None) when stderr is a terminal that can take it."""
    if option is not None:
        return option
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class Progress:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = os.path.basename(label)
        self.total = max(total, 1)
        self.enabled = enabled
        self._last = 0.0
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            self._open()

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
            TextColumn("{task.fields[pps]} pkt/s"), TextColumn("events {task.fields[events]}"),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False, auto_refresh=False)
        self._task = self._bar.add_task(self.label, total=self.total, pps="0", events="0")
        self._bar.start()

    def update(self, done: int, packets: int | None = None, events: int | None = None, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        fields: dict[str, str] = {}
        if packets is not None:
            fields["pps"] = _si(packets / max(now - self._start, 1e-6))
        if events is not None:
            fields["events"] = _si(events)
        self._bar.update(self._task, completed=min(done, self.total), **fields)
        self._bar.refresh()

    def done(self, packets: int | None = None, events: int | None = None) -> None:
        if self.enabled and self._bar is not None:
            self.update(self.total, packets, events, force=True)
            self._bar.stop()
            self._bar = None
            self.enabled = False


def _si(value: float) -> str:
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"
