"""Packetbeat's flow timer: when to look for idle flows and when to send periodic reports.

Packetbeat's flow worker ticks every gcd(timeout, period) (at least 1 s; the
timeout alone when `period` is -1), starting one tick after the next 10 s
boundary of the clock.  Every `timeout / tick` ticks it ends flows idle for
more than `timeout`; every `period / tick` ticks it reports every live flow.
This class replays that cadence on whatever clock it is given, catching up
tick by tick when the clock jumps (a gap in a capture).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

NS = 1_000_000_000
ALIGN_NS = 10 * NS


class Tick(NamedTuple):
    at_ns: int
    check_timeout: bool
    report: bool


class ReportSchedule:
    def __init__(self, timeout_s: float, period_s: float) -> None:
        self.timeout_ns = max(NS, round(timeout_s * NS))
        period_ns = round(period_s * NS)
        self.periodic = period_ns > 0
        if self.periodic:
            self.tick_ns = max(NS, math.gcd(self.timeout_ns, period_ns))
            self.ticks_timeout = max(1, self.timeout_ns // self.tick_ns)
            self.ticks_period = max(1, period_ns // self.tick_ns)
        else:
            self.tick_ns = self.timeout_ns
            self.ticks_timeout = 1
            self.ticks_period = 0
        self.next_ns: int | None = None
        self._count = 0

    def start(self, now_ns: int) -> None:
        if self.next_ns is None:
            self.next_ns = -(-now_ns // ALIGN_NS) * ALIGN_NS + self.tick_ns

    def due(self, now_ns: int) -> Iterator[Tick]:
        """The ticks that fell due up to `now_ns`, oldest first."""
        self.start(now_ns)
        assert self.next_ns is not None
        while self.next_ns <= now_ns:
            self._count += 1
            at = self.next_ns
            self.next_ns += self.tick_ns
            yield Tick(at, self._count % self.ticks_timeout == 0,
                       self.periodic and self._count % self.ticks_period == 0)

    def skip_to(self, now_ns: int) -> None:
        """Jump over the ticks due up to `now_ns` (nothing is live, so they would do nothing)."""
        if self.next_ns is None or self.next_ns > now_ns:
            return
        skipped = (now_ns - self.next_ns) // self.tick_ns + 1
        self._count += skipped
        self.next_ns += skipped * self.tick_ns
