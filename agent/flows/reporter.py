"""Flow reporting: periodic reports, final reports after `timeout` idle and at the end, delta counters.

Works on any `FlowSource` (the kernel's LRU map live, the user-space table in
replay).  Sources keep cumulative counters; with `enable_delta_flow_reports`
the reporter remembers what it last reported per flow and subtracts, because
the kernel's counters cannot be read and reset atomically.

Clock: `tick(now_ns)` and `final(now_ns)` run on the caller's clock (the
wall clock live; in replay, see `agent.flows.table`), reports carry that
time as @timestamp, and event.start/end/duration come from the packets'
timestamps.  Packetbeat runs its flow timer and stamps event.start/end on
the wall clock even when replaying a file, so its replays depend on the
machine's speed; pktbeat's do not.  A tick that falls due while the clock
jumps over a quiet gap is run at its own due time, as a live agent would
have run it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from agent import metrics
from agent.config.model import FlowsConfig
from agent.events.timefmt import format_ns
from agent.flows.event import FlowDescriptor, describe, flow_event
from agent.flows.schedule import ReportSchedule
from agent.flows.types import FlowKey, FlowSnapshot, FlowSource

log = logging.getLogger("pktbeat.flows")

Publish = Callable[[dict[str, Any]], None]

REPORTER_COUNTERS = ("reports", "final_reports", "timed_out", "evicted_reported", "publish_errors",
                     "counter_resets")


class _FlowState:
    """What the reporter remembers about one live flow between ticks."""

    __slots__ = ("db", "desc", "dp", "first_ns", "sb", "sp")

    def __init__(self, first_ns: int, desc: FlowDescriptor) -> None:
        self.first_ns = first_ns
        self.desc = desc
        self.sp = self.sb = self.dp = self.db = 0  # totals at the last report (delta mode)


class FlowReporter:
    def __init__(self, config: FlowsConfig, source: FlowSource, publish: Publish, timestamp_digits: int = 3) -> None:
        self.config = config
        self.source = source
        self.publish = publish
        self.digits = timestamp_digits
        self.delta = config.enable_delta_flow_reports
        self.schedule = ReportSchedule(config.timeout, config.period)
        self.timeout_ns = self.schedule.timeout_ns
        self.stats = metrics.register("flows.reporter", REPORTER_COUNTERS)
        self._states: dict[FlowKey, _FlowState] = {}
        self._layout_rank: dict[bytes, int] = {}

    # -- clock ------------------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        """Run every timer tick that fell due up to `now_ns` (cheap when none did)."""
        nxt = self.schedule.next_ns
        if nxt is not None and now_ns < nxt:
            return
        for tick in self.schedule.due(now_ns):
            live = self._execute(tick.at_ns, tick.check_timeout, tick.report)
            if not live:
                self.schedule.skip_to(now_ns)
                break

    def final(self, now_ns: int) -> None:
        """Report every live flow once more as final and forget them all (shutdown, end of input)."""
        snaps = list(self.source.snapshot())
        self._publish_all(self._ordered(snaps), now_ns, final=True)
        self.source.forget([s.key for s in snaps])
        self._states.clear()

    def report_evicted(self, snaps: Iterable[FlowSnapshot], now_ns: int) -> None:
        """Final reports for flows a bounded source had to drop to make room."""
        done = list(snaps)
        self._publish_all(self._ordered(done), now_ns, final=True)
        for snap in done:
            self._states.pop(snap.key, None)
        self.stats["evicted_reported"] += len(done)

    # -- one tick ------------------------------------------------------------------

    def _execute(self, at_ns: int, check_timeout: bool, report: bool) -> int:
        """One timer tick; returns how many flows are still live after it."""
        if not check_timeout and not report:
            return 1  # nothing to do, and no reason to think the table is empty
        snaps = list(self.source.snapshot())
        ordered = self._ordered(snaps)
        ended: list[FlowKey] = []
        timeout = self.timeout_ns
        timestamp = format_ns(at_ns, self.digits)
        # One pass in table order, as Packetbeat does: an ended flow reports final in its place.
        for snap in ordered:
            if check_timeout and at_ns - snap.last_ns > timeout:
                self._publish_one(snap, timestamp, final=True)
                ended.append(snap.key)
            elif report:
                self._publish_one(snap, timestamp, final=False)
        if ended:
            self.stats["timed_out"] += len(ended)
            self.source.forget(ended)
            for key in ended:
                self._states.pop(key, None)
        live_count = len(snaps) - len(ended)
        if len(self._states) > live_count:
            # Flows the source dropped on its own (kernel LRU eviction) leave no state behind.
            live = {s.key for s in snaps}.difference(ended)
            self._states = {k: v for k, v in self._states.items() if k in live}
        return live_count

    # -- helpers ---------------------------------------------------------------

    def _state(self, snap: FlowSnapshot) -> _FlowState:
        state = self._states.get(snap.key)
        if state is None or state.first_ns != snap.first_ns:  # new flow, or the key was reused
            state = self._states[snap.key] = _FlowState(snap.first_ns, describe(snap))
        return state

    def _ordered(self, snaps: list[FlowSnapshot]) -> list[FlowSnapshot]:
        """Packetbeat's report order: flows grouped by id layout (groups in order of first sight),
        creation order within a group."""
        ranks = self._layout_rank
        keyed: list[tuple[int, FlowSnapshot]] = []
        for snap in snaps:
            layout = self._state(snap).desc.layout
            rank = ranks.get(layout)
            if rank is None:
                rank = ranks[layout] = len(ranks)
            keyed.append((rank, snap))
        if len(ranks) == 1:
            return snaps
        keyed.sort(key=lambda item: item[0])
        return [snap for _, snap in keyed]

    def _publish_all(self, snaps: list[FlowSnapshot], now_ns: int, final: bool) -> None:
        timestamp = format_ns(now_ns, self.digits)
        for snap in snaps:
            self._publish_one(snap, timestamp, final)

    def _publish_one(self, snap: FlowSnapshot, timestamp: str, final: bool) -> None:
        state = self._state(snap)
        sp, sb, dp, db = snap.source_packets, snap.source_bytes, snap.dest_packets, snap.dest_bytes
        if self.delta:
            counts = (sp - state.sp, sb - state.sb, dp - state.dp, db - state.db)
            if min(counts) < 0:  # the source restarted its counters under the same incarnation
                self.stats["counter_resets"] += 1
                counts = (sp, sb, dp, db)
            state.sp, state.sb, state.dp, state.db = sp, sb, dp, db
        else:
            counts = (sp, sb, dp, db)
        event = flow_event(state.desc, snap, counts, final, timestamp, self.digits)
        self.stats["reports"] += 1
        if final:
            self.stats["final_reports"] += 1
        try:
            self.publish(event)
        except Exception:  # a failing output must not stop flow accounting
            self.stats["publish_errors"] += 1
            log.exception("publishing a flow event failed")
