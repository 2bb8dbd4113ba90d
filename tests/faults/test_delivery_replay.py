"""Issue 15, defect 9: `-l N` gives the same transactions in every loop, and event ids keep genuinely distinct
transactions apart while staying the same on every run and whatever the number of workers."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import metrics
from agent.capture.packet import IPPROTO_TCP
from agent.config.load import from_tree
from agent.config.yamlload import normalize
from agent.protocols.base import Transaction
from agent.runtime import wiring
from bench.gen_traffic_pcap import TcpConn, Writer, generate
from tests.helpers.inprocess import read_packets
from tests.helpers.replay import corpus, replay

HTTP = [{"type": "http", "ports": [80, 5000]}, {"type": "dns", "ports": [53]}]
VOLATILE = ("agent", "host", "ecs", "@timestamp", "event")


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    metrics.reset_for_tests()
    yield


def _stable(event: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in event.items() if k not in VOLATILE}, sort_keys=True)


def test_every_loop_gives_the_same_transactions() -> None:
    once, _ = replay(corpus("http_minitwit.pcap"), HTTP)
    looped, log = replay(corpus("http_minitwit.pcap"), HTTP, extra_args=["-l", "3"])
    assert len(once) == 6
    assert len(looped) == 18, log[-2000:]
    assert Counter(_stable(e) for e in looped) == Counter({k: 3 * v for k, v in
                                                           Counter(_stable(e) for e in once).items()})


def ids_for(packets: list[Any], shards: int = 1) -> list[str]:
    """Event ids of `packets` decoded by `shards` builders, each fed the connections a worker would get."""
    config = from_tree(normalize({"packetbeat.protocols": HTTP, "output.discard": {}}))
    identity = wiring.AgentIdentity.create("test", "fixed-id")
    ids: list[str] = []
    for shard in range(shards):
        builder = wiring.event_builder(config, identity)

        def emit(txn: Transaction, builder: Any = builder) -> None:
            built = builder.encode_transaction(txn)
            if built is not None:
                ids.append(built[1].event_id)

        dispatcher = wiring.dispatcher(config, emit)
        last = 0
        for pkt in packets:
            if (pkt.sport ^ pkt.dport) % shards != shard:  # both directions of a connection in one shard
                continue
            dispatcher.handle(pkt)
            if pkt.ts_ns - last > 100_000_000:
                dispatcher.expire(pkt.ts_ns)
                last = pkt.ts_ns
        dispatcher.close_all(last + 10**12)
    return sorted(ids)


def test_ids_are_the_same_on_every_run_and_whatever_the_number_of_workers(tmp_path: Path) -> None:
    pcap = tmp_path / "traffic.pcap"
    generate(pcap, 4000, seed=7)
    packets = read_packets(pcap)
    one = ids_for(packets)
    assert len(one) > 300
    assert ids_for(packets) == one
    assert ids_for(packets, shards=3) == one
    assert len(set(one)) == len(one)


def test_identical_looking_transactions_get_distinct_ids(tmp_path: Path) -> None:
    """Two identical pipelined requests in one segment, answered in one segment: two identical events."""
    pcap = tmp_path / "twins.pcap"
    writer = Writer(pcap)
    conn = TcpConn(writer, bytes([10, 2, 0, 9]), 40000, bytes([10, 1, 0, 80]), 80, random.Random(1))
    conn.open()
    request = b"GET /same HTTP/1.1\r\nHost: twins.test\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    conn.send(True, request * 2)
    conn.send(False, response * 2)
    conn.close()
    writer.close()
    packets = [p for p in read_packets(pcap) if p.l4proto == IPPROTO_TCP]
    config = from_tree(normalize({"packetbeat.protocols": HTTP, "output.discard": {}}))
    builder = wiring.event_builder(config, wiring.AgentIdentity.create("test", "fixed-id"))
    encoded = []

    def emit(txn: Transaction) -> None:
        built = builder.encode_transaction(txn)
        if built is not None:
            encoded.append(built[1])

    dispatcher = wiring.dispatcher(config, emit)
    for pkt in packets:
        dispatcher.handle(pkt)
    dispatcher.close_all(packets[-1].ts_ns + 10**12)
    assert len(encoded) == 2
    assert encoded[0].data == encoded[1].data  # byte for byte the same event...
    assert encoded[0].event_id != encoded[1].event_id  # ...but two transactions: two documents
