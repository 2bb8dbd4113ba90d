"""What a live run tells its operator: counters, the status line, periodic and exit reports.

`LiveCounters` gathers the three sources of numbers (the kernel's per-interface
counters, what each worker last reported, the parent's own registry) into one
flat snapshot, which the metrics log line, the SIGUSR1/exit reports and the
monitoring endpoint all read.  `StatusLine` shows rates on one line of stderr:
rewritten in place on a terminal, one line per second otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import metrics
from agent.capture.record import COUNTER_NAMES, DROP_COUNTERS
from agent.publisher.pipeline import DROP_COUNTERS as PIPELINE_DROPS
from agent.runtime.interfaces import Counters, Interfaces, format_counters

if TYPE_CHECKING:
    from agent.capture.kernel import KernelProgram
    from agent.capture.kernel_flows import KernelFlowSource
    from agent.runtime.worker import WorkerPool

log = logging.getLogger("pktbeat")

PARENT_COUNTERS = ("events_received", "worker_failures")


class LiveCounters:
    """Every counter of a live run, and the reports made from them."""

    def __init__(self, interfaces: Interfaces, max_flows: int) -> None:
        self.interfaces = interfaces
        self.pool: WorkerPool | None = None  # set once the workers are forked
        self.max_flows = max_flows
        self.parent = metrics.register("live", PARENT_COUNTERS)
        self.kernel_procs = metrics.register("kernel.procs")  # bpf/sockets.bpf.c's counters
        self.kernel_tls = metrics.register("kernel.tls_plaintext")  # bpf/tls.bpf.c's counters
        self.kernel: KernelProgram | None = None
        self.flow_source: KernelFlowSource | None = None
        self.kernel_totals: Counters = [0] * len(COUNTER_NAMES)  # every interface, including those gone
        self.kernel_by_if: dict[int, Counters] = {}
        self._metrics_prev: dict[str, int] = {}

    def poll(self, now: float) -> bool:
        """Read the kernel's counters; False when they could not be read."""
        if self.kernel is None:
            return False
        try:
            by_if = self.kernel.counters()
        except Exception as exc:
            log.debug("reading kernel counters failed: %s", exc)
            return False
        self.kernel_by_if = by_if
        sockets = self.kernel.sockets
        if sockets is not None:
            with contextlib.suppress(Exception):
                self.kernel_procs.update(sockets.counters())
        tls = self.kernel.tls
        if tls is not None:
            with contextlib.suppress(Exception):
                self.kernel_tls.update(tls.kernel_counters())
        totals = [0] * len(COUNTER_NAMES)
        for values in (*by_if.values(), *self.interfaces.history.values()):
            for i, v in enumerate(values):
                totals[i] += v
        self.kernel_totals = totals
        self.interfaces.check_silence(by_if, now)
        return True

    def kernel_value(self, name: str) -> int:
        return self.kernel_totals[COUNTER_NAMES.index(name)]

    def live_flows(self) -> int | None:
        """Entries in the kernel's flow table: created minus forgotten, at most its size (LRU)."""
        if self.flow_source is None:
            return None
        created = self.kernel_value("flow_new")
        return min(max(0, created - self.flow_source.forgotten), self.max_flows)

    def worker_totals(self) -> dict[str, int]:
        return self.pool.totals() if self.pool is not None else {}

    def drops(self) -> int:
        """Everything lost between the wire and the publisher's queue."""
        ring = sum(self.kernel_value(n) for n in DROP_COUNTERS)
        pipeline = metrics.register("pipeline")
        return (ring + self.worker_totals().get("capture.events_dropped", 0)
                + sum(pipeline[name] for name in PIPELINE_DROPS))

    def snapshot(self) -> dict[str, int]:
        """Kernel, worker and parent counters together (the metrics log and the /stats endpoint)."""
        current = {f"kernel.{n}": v for n, v in zip(COUNTER_NAMES, self.kernel_totals, strict=True)}
        metrics.merge(current, self.worker_totals())
        metrics.merge(current, metrics.snapshot())
        return current

    def log_metrics(self, period: float) -> None:
        """libbeat's "Non-zero metrics in the last 30s" line."""
        self.poll(time.monotonic())
        current = self.snapshot()
        delta = {k: v - self._metrics_prev.get(k, 0) for k, v in current.items() if v != self._metrics_prev.get(k, 0)}
        self._metrics_prev = current
        if delta:
            log.info("Non-zero metrics in the last %gs: %s", period,
                     ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))

    def log_report(self, when: str) -> None:
        """Every counter, by interface, by worker and for the agent (on SIGUSR1 and at exit)."""
        self.poll(time.monotonic())
        for name, values in sorted(self.interfaces.per_interface(self.kernel_by_if).items()):
            log.info("capture counters %s, %s: %s", when, name, format_counters(values))
        work = self.worker_totals()
        log.info("worker counters %s: %s", when,
                 ", ".join(f"{k}={v}" for k, v in sorted(work.items()) if v) or "none")
        if self.pool is not None and len(self.pool.workers) > 1:
            log.info("records per worker %s: %s", when,
                     ", ".join(f"{w.index}={w.stats.get('capture.records', 0)}" for w in self.pool.workers))
        if self.flow_source is not None:
            created = self.kernel_value("flow_new")
            evicted = self.flow_source.evicted(created)
            log.info("flows %s: %d in the kernel table, %d created, %d ended and forgotten, %d evicted by "
                     "packetbeat.flows.max_flows (%d)%s", when, self.flow_source.last_count, created,
                     self.flow_source.forgotten, evicted, self.max_flows,
                     "" if not evicted else ": raise it, their counts were lost")
        parent = {k: v for k, v in metrics.snapshot().items() if v}
        log.info("agent counters %s: %s", when, ", ".join(f"{k}={v}" for k, v in sorted(parent.items())) or "none")


@dataclass
class _Sample:
    at: float
    kernel: Counters
    events: int


class StatusLine:
    """Rates on one line of stderr, once per counter poll."""

    def __init__(self, enabled: bool | None) -> None:
        # None: on when stderr is a terminal that can take it
        if enabled is None:
            enabled = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
        self.enabled = enabled
        self._prev: _Sample | None = None
        self._filter: _ClearBeforeLog | None = None

    def start(self) -> None:
        """On a terminal the line is rewritten in place: log lines must clear it first."""
        if self.enabled and sys.stderr.isatty():
            self._filter = _ClearBeforeLog()
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._filter)

    def stop(self) -> None:
        if self._filter is not None:
            _ClearBeforeLog.clear()
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._filter)
            self._filter = None

    def erase(self) -> None:
        if self.enabled and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")

    def show(self, now: float, counters: LiveCounters) -> None:
        if not self.enabled:
            return
        events = counters.parent["events_received"]
        prev = self._prev
        self._prev = _Sample(now, list(counters.kernel_totals), events)
        if prev is None or now <= prev.at:
            return
        line = self.render(now - prev.at, prev, counters)
        width = shutil.get_terminal_size((100, 20)).columns
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line[: max(10, width - 1)] + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    @staticmethod
    def render(span: float, prev: _Sample, counters: LiveCounters) -> str:
        totals = counters.kernel_totals
        seen_i, matched_i = COUNTER_NAMES.index("seen"), COUNTER_NAMES.index("matched")
        bytes_i = COUNTER_NAMES.index("bytes")
        events = counters.parent["events_received"]
        parts = [
            f"pktbeat {len(counters.interfaces.attached)} if",
            f"{si((totals[seen_i] - prev.kernel[seen_i]) / span)} pkt/s "
            f"{si((totals[bytes_i] - prev.kernel[bytes_i]) * 8 / span)}b/s",
            f"matched {si((totals[matched_i] - prev.kernel[matched_i]) / span)}/s",
            f"decoded {si(counters.worker_totals().get('capture.packets', 0))}",
            f"events {si(events)} ({si((events - prev.events) / span)}/s)",
        ]
        flows = counters.live_flows()
        if flows is not None:
            parts.append(f"flows {si(flows)}")
        parts.append(f"drops {si(counters.drops())}")
        return " | ".join(parts)


class _ClearBeforeLog(logging.Filter):
    """Clears the status line before a log line is written over it."""

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True

    @staticmethod
    def clear() -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write("\r\x1b[K")


def si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if isinstance(value, float) else str(value)
