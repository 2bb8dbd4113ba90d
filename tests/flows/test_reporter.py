"""The reporter against a kernel-style source: cumulative counters it cannot reset, flows that vanish."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from agent.capture.packet import IPPROTO_TCP, IPPROTO_UDP
from agent.flows.reporter import FlowReporter
from agent.flows.schedule import ReportSchedule
from agent.flows.types import FlowKey, FlowSnapshot
from tests.flows.packets import MAC_A, MAC_B, T0, S, flows_config, ip

KEY = FlowKey(4, IPPROTO_TCP, ip("10.0.0.1"), 40000, ip("10.0.0.2"), 80)
DNS = FlowKey(4, IPPROTO_UDP, ip("10.0.0.1"), 5353, ip("10.0.0.53"), 53)


class KernelLikeSource:
    """Like the kernel LRU map: counters only grow, every dump returns fresh objects, keys may vanish."""

    def __init__(self) -> None:
        self.flows: dict[FlowKey, FlowSnapshot] = {}
        self.forgotten: list[FlowKey] = []

    def add(self, key: FlowKey, ts: int, *, src: tuple[int, int] = (0, 0), dst: tuple[int, int] = (0, 0),
            macs: bool = True) -> None:
        snap = self.flows.get(key)
        if snap is None:
            snap = self.flows[key] = FlowSnapshot(key, True, ts, ts, source_mac=MAC_A if macs else b"",
                                                  dest_mac=MAC_B if macs else b"")
        snap.last_ns = max(snap.last_ns, ts)
        snap.source_packets += src[0]
        snap.source_bytes += src[1]
        snap.dest_packets += dst[0]
        snap.dest_bytes += dst[1]

    def snapshot(self) -> list[FlowSnapshot]:
        return [dataclasses.replace(s) for s in sorted(self.flows.values(), key=lambda s: s.first_ns)]

    def forget(self, keys: Any) -> None:
        for key in keys:
            self.forgotten.append(key)
            self.flows.pop(key, None)


def reporter(**settings: Any) -> tuple[FlowReporter, KernelLikeSource, list[dict[str, Any]]]:
    source = KernelLikeSource()
    events: list[dict[str, Any]] = []
    rep = FlowReporter(flows_config(**settings), source, events.append)
    rep.tick(T0)
    return rep, source, events


def test_delta_reports_subtract_what_was_last_reported() -> None:
    rep, source, events = reporter(timeout="30s", period="1s", enable_delta_flow_reports=True)
    source.add(KEY, T0 + 1, src=(3, 300), dst=(2, 2000))
    rep.tick(T0 + S)
    source.add(KEY, T0 + S + 1, src=(1, 100))
    rep.tick(T0 + 2 * S)
    source.add(KEY, T0 + 2 * S + 1, src=(2, 50), dst=(5, 7000))
    rep.tick(T0 + 3 * S)
    assert [(e["source"]["packets"], e["source"]["bytes"]) for e in events] == [(3, 300), (1, 100), (2, 50)]
    assert [(e["destination"]["packets"], e["destination"]["bytes"]) for e in events] == [
        (2, 2000), (0, 0), (5, 7000)]
    assert [e["network"]["packets"] for e in events] == [5, 1, 7]
    assert source.flows[KEY].source_packets == 6  # the source itself was never reset


def test_without_delta_the_cumulative_counters_are_reported() -> None:
    rep, source, events = reporter(timeout="30s", period="1s")
    source.add(KEY, T0 + 1, src=(3, 300))
    rep.tick(T0 + S)
    source.add(KEY, T0 + S + 1, src=(1, 100))
    rep.tick(T0 + 2 * S)
    assert [e["source"]["packets"] for e in events] == [3, 4]
    assert [e["source"]["bytes"] for e in events] == [300, 400]


def test_timeout_reports_final_and_tells_the_source_to_forget() -> None:
    rep, source, events = reporter(timeout="2s", period="-1s", enable_delta_flow_reports=True)
    source.add(KEY, T0 + 1, src=(1, 60))
    source.add(DNS, T0 + S + S // 2, src=(1, 80), dst=(1, 120))
    rep.tick(T0 + 2 * S)  # KEY idle 2 s - 1 ns: not more than the timeout yet
    assert events == []
    rep.tick(T0 + 4 * S)
    assert source.forgotten == [KEY, DNS]
    assert [e["flow"]["final"] for e in events] == [True, True]
    assert [e["event"]["type"] for e in events] == [["connection", "end"]] * 2
    assert events[1]["network"]["transport"] == "udp"


def test_a_key_reused_after_the_kernel_evicted_it_starts_from_zero() -> None:
    rep, source, events = reporter(timeout="30s", period="1s", enable_delta_flow_reports=True)
    source.add(KEY, T0 + 1, src=(10, 1000))
    rep.tick(T0 + S)
    del source.flows[KEY]  # the LRU map dropped it on its own
    rep.tick(T0 + 2 * S)
    source.add(KEY, T0 + 2 * S + 5, src=(2, 120))  # same 5-tuple, new incarnation
    rep.tick(T0 + 3 * S)
    assert [e["source"]["packets"] for e in events] == [10, 2]
    assert events[1]["event"]["start"] > events[0]["event"]["start"]


def test_counters_that_go_backwards_are_reported_whole_and_counted() -> None:
    rep, source, events = reporter(timeout="30s", period="1s", enable_delta_flow_reports=True)
    source.add(KEY, T0 + 1, src=(10, 1000))
    rep.tick(T0 + S)
    source.flows[KEY].source_packets = 4  # e.g. a per-CPU counter summed over fewer CPUs
    source.flows[KEY].source_bytes = 400
    resets = rep.stats["counter_resets"]
    rep.tick(T0 + 2 * S)
    assert events[1]["source"]["packets"] == 4
    assert rep.stats["counter_resets"] == resets + 1


def test_final_reports_everything_and_forgets_it() -> None:
    rep, source, events = reporter(timeout="30s", period="10s")
    source.add(KEY, T0 + 1, src=(1, 60))
    source.add(DNS, T0 + 2, src=(1, 80))
    rep.final(T0 + 3)
    assert [e["flow"]["final"] for e in events] == [True, True]
    assert source.flows == {}


def test_flows_are_reported_grouped_by_id_layout_then_in_source_order() -> None:
    rep, source, events = reporter(timeout="30s", period="-1s")
    other_tcp = KEY._replace(port_lo=40001)
    source.add(KEY, T0 + 1, src=(1, 60))
    source.add(DNS, T0 + 2, src=(1, 60))
    source.add(other_tcp, T0 + 3, src=(1, 60))
    rep.final(T0 + S)
    assert [e["source"]["port"] for e in events] == [40000, 40001, 5353]


def test_a_source_without_link_addresses_gives_no_macs() -> None:
    rep, source, events = reporter(timeout="30s", period="-1s")
    source.add(KEY, T0 + 1, src=(1, 60), macs=False)
    rep.final(T0 + S)
    assert "mac" not in events[0]["source"]
    # flags IPv4|TCP, only the IPv4 (0) and TCP (8) offsets set, 0 eth / 0 vlan / 1 ip layer,
    # then 10.0.0.1, 10.0.0.2 and the ports 40000, 80 little endian.
    raw = bytes.fromhex("1004" "ffffffff00ffffffffff08ff" "000001" "0a000001" "0a000002" "409c" "5000")
    assert events[0]["flow"]["id"] == base64.b64encode(raw).decode().rstrip("=")


def test_the_timer_follows_packetbeat_cadence() -> None:
    sched = ReportSchedule(30.0, 10.0)
    assert (sched.tick_ns, sched.ticks_timeout, sched.ticks_period) == (10 * S, 3, 1)
    sched = ReportSchedule(7.0, 3.0)
    assert (sched.tick_ns, sched.ticks_timeout, sched.ticks_period) == (S, 7, 3)
    sched = ReportSchedule(2.0, -1.0)
    assert (sched.tick_ns, sched.ticks_timeout, sched.ticks_period) == (2 * S, 1, 0)
    sched = ReportSchedule(30.0, 10.0)
    ticks = list(sched.due(T0 + 3 * S))  # starts on the next 10 s boundary, first tick one period later
    assert ticks == []
    ticks = list(sched.due(T0 + 40 * S))
    assert [(t.at_ns - T0) // S for t in ticks] == [20, 30, 40]
    assert [(t.check_timeout, t.report) for t in ticks] == [(False, True), (False, True), (True, True)]
