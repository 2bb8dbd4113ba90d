"""Floods against a worker's TCP state (issue 15, item 8): what is retained stays bounded, drops are counted.

Generated captures go through the real layers in-process (decoder, dispatcher,
HTTP sessions), scaled down from the issue's numbers; bench/tcp_flood_bench.py
runs them at full size through `pktbeat run`.  Retained state is counted
(entries, bytes the sessions hold) and measured with tracemalloc.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import metrics
from agent.capture.packet import Packet
from agent.config.load import from_tree
from agent.config.yamlload import normalize
from agent.protocols.base import Transaction
from agent.runtime import wiring
from agent.transport.dispatcher import CONNECTION_COST, HALF_OPEN_COST, Dispatcher
from tests.helpers.floods import (
    SERVER,
    PcapWriter,
    cql_query_frame,
    cql_void_result,
    one_exchange,
    slow_headers,
    syn_flood,
)
from tests.helpers.inprocess import events_for, read_packets

HTTP = [{"type": "http", "ports": [80]}]
REQUEST = b"GET /after HTTP/1.1\r\nHost: victim\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    metrics.reset_for_tests()
    yield


def _pcap(tmp_path: Path, name: str, write: Callable[[PcapWriter], None]) -> list[Packet]:
    path = tmp_path / f"{name}.pcap"
    with PcapWriter(path) as w:
        write(w)
    return read_packets(path)


def _dispatcher(settings: dict[str, Any], emitted: list[Transaction]) -> Dispatcher:
    config = from_tree(normalize({"packetbeat.protocols": HTTP, "output.discard": {}, **settings}))
    return wiring.dispatcher(config, emitted.append)


def _feed(dispatcher: Dispatcher, packets: list[Packet]) -> int:
    """Feed `packets`; the bytes tracemalloc sees retained afterwards."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for pkt in packets:
            dispatcher.handle(pkt)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_syn_flood_keeps_only_small_half_open_records(tmp_path: Path) -> None:
    packets = _pcap(tmp_path, "syn", lambda w: syn_flood(w, 12_000))
    d = _dispatcher({"packetbeat.tcp.max_half_open": 2000}, [])
    retained = _feed(d, packets)
    counters = metrics.register("tcp")
    assert (d.half_open_count, d.connection_count) == (2000, 0)
    assert counters["half_open"] == 12_000 and counters["half_open_evicted"] == 10_000
    # Before: every SYN made a session and two streams, about 5.6 KB; now a record of about 250 bytes
    # (its addresses are the packets' own here, already allocated).
    assert retained < 2000 * HALF_OPEN_COST, retained


def test_default_caps_hold_a_syn_flood_larger_than_them(tmp_path: Path) -> None:
    packets = _pcap(tmp_path, "syn", lambda w: syn_flood(w, 30_000, step_us=1))
    d = _dispatcher({}, [])
    retained = _feed(d, packets)
    assert d.half_open_count == 20_000 and metrics.register("tcp")["half_open_evicted"] == 10_000
    assert retained < 20_000 * HALF_OPEN_COST


def test_slow_unfinished_headers_are_capped_across_connections(tmp_path: Path) -> None:
    def write(w: PcapWriter) -> None:
        slow_headers(w, 40, 120_000)  # 4.8 MB of header lines that never end
        one_exchange(w, REQUEST, RESPONSE, 80)

    packets = _pcap(tmp_path, "slow", write)
    emitted: list[Transaction] = []
    d = _dispatcher({"packetbeat.tcp.max_buffered": "1MiB"}, emitted)
    retained = _feed(d, packets)
    counters = metrics.register("tcp")
    held = d.reassembler.held_total + d.reassembler.ooo_total
    assert held <= (1 << 20) + (1 << 16), held  # the cap, plus what one audit interval may add
    # Shed connections drop what they held, then skip to the next request line without holding it.
    assert counters["buffer_shed"] >= 10 and counters["buffer_shed_bytes"] >= 1 << 20
    assert retained < 4 << 20, retained  # before: all 4.8 MB held, and then some
    # Capture goes on: the exchange after the flood is one transaction.
    assert [t.fields.get("url", {}).get("path") for t in emitted] == ["/after"]


def test_the_memory_budget_sheds_the_connections_idle_longest(tmp_path: Path) -> None:
    def write(w: PcapWriter) -> None:
        for i in range(4000):  # each connection one byte into a request: a session each
            w.tcp(bytes([10, 4, i >> 8, i & 0xFF]), 40000, SERVER, 80, 1, 0, 0x18, b"G")

    packets = _pcap(tmp_path, "many", write)
    d = _dispatcher({"packetbeat.tcp.memory_budget": "16MiB"}, [])
    _feed(d, packets)
    kept = (16 << 20) // CONNECTION_COST
    assert d.connection_count <= kept
    assert metrics.register("tcp")["memory_shed"] == 4000 - d.connection_count
    # The oldest went: the newest connection is still followed.
    assert any(conn.info.client.ip == bytes([10, 4, 15, 159]) for _, conn in d._lru.values())


def test_half_open_connections_become_sessions_with_their_handshake(tmp_path: Path) -> None:
    packets = _pcap(tmp_path, "one", lambda w: one_exchange(w, REQUEST, RESPONSE, 80))
    emitted: list[Transaction] = []
    d = _dispatcher({}, emitted)
    for pkt in packets[:2]:  # SYN, SYN-ACK: no session yet
        d.handle(pkt)
    assert (d.half_open_count, d.connection_count) == (1, 0)
    for pkt in packets[2:]:
        d.handle(pkt)
    counters = metrics.register("tcp")
    assert counters["connections"] == 1 and counters["midstream"] == 0
    assert len(emitted) == 1 and emitted[0].conn.client.ip == bytes([10, 3, 0, 1])


def test_a_16_mb_cassandra_query_is_truncated_with_a_note(tmp_path: Path) -> None:
    query = b"SELECT * FROM t WHERE k = '" + b"x" * (16 * 1024 * 1024 - 64) + b"';"
    packets = _pcap(tmp_path, "cql", lambda w: one_exchange(w, cql_query_frame(query), cql_void_result(), 9042))
    events = events_for(packets, [{"type": "cassandra", "ports": [9042]}])
    assert len(events) == 1
    kept = events[0]["cassandra"]["request"]["query"]
    assert len(kept) == 1 << 20 and kept.startswith("SELECT * FROM t WHERE k = 'xxx")
    assert "The query was truncated" in events[0]["error"]["message"]
