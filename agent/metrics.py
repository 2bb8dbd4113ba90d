"""Named counters: every limit in pktbeat has one for what it dropped.

A `Counters` group is a plain dict of ints (cheap on the hot path) registered
under a dotted prefix, so the agent can log or serve every group at once.
Groups in worker processes are shipped to the parent as snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

_lock = threading.Lock()
_groups: dict[str, Counters] = {}
# Dotted names whose value is a level (a depth, bytes pending), not a running total: /metrics exports
# them as gauges.
_gauges: set[str] = {"capture.ring_pending_bytes"}


class Counters(dict[str, int]):
    """A group of named counters; missing names read as 0."""

    def __init__(self, prefix: str, names: tuple[str, ...] = ()) -> None:
        super().__init__((name, 0) for name in names)
        self.prefix = prefix

    def __missing__(self, key: str) -> int:
        return 0

    def inc(self, name: str, amount: int = 1) -> None:
        self[name] = self.get(name, 0) + amount

    def nonzero(self) -> dict[str, int]:
        return {f"{self.prefix}.{k}": v for k, v in self.items() if v}


def register(prefix: str, names: tuple[str, ...] = ()) -> Counters:
    """The group for `prefix`, created on first use (one per process)."""
    with _lock:
        group = _groups.get(prefix)
        if group is None:
            group = _groups[prefix] = Counters(prefix, names)
        return group


def declare_gauge(dotted: str) -> None:
    """Mark `prefix.name` as a gauge (a current level), so that /metrics does not call it a total."""
    with _lock:
        _gauges.add(dotted)


def is_gauge(dotted: str) -> bool:
    return dotted in _gauges


def groups() -> Iterator[Counters]:
    with _lock:
        return iter(list(_groups.values()))


def snapshot() -> dict[str, int]:
    """Every non-zero counter of this process, by dotted name."""
    out: dict[str, int] = {}
    for group in groups():
        out.update(group.nonzero())
    return out


def merge(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def reset_for_tests() -> None:
    with _lock:
        for group in _groups.values():
            for key in list(group):
                group[key] = 0
