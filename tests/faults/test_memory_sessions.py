"""Every TCP protocol reports the bytes it holds (`buffered()`), so `packetbeat.tcp.max_buffered` covers it.

Each protocol's capture is replayed packet by packet with an audit after
every one: the worker's account must always equal what the live sessions
report, never go negative, and a message cut in half must show as held bytes.
"""

from __future__ import annotations

import pytest

from agent import metrics
from agent.capture.packet import IPPROTO_TCP
from agent.config.load import from_tree
from agent.config.yamlload import normalize
from agent.runtime import wiring
from tests.helpers.inprocess import read_packets
from tests.helpers.replay import CORPUS

OPTIONS = {"sip": {"transport_protocol": "tcp"}}
CAPTURES = [
    ("http", 80, "http_minitwit.pcap"),
    ("mysql", 3306, "mysql_long_result.pcap"),
    ("pgsql", 5432, "pgsql_long_result.pcap"),
    ("redis", 6380, "redis_session.pcap"),
    ("mongodb", 27017, "mongodb_more_rows.pcap"),
    ("memcache", 11211, "memcache_bin_tcp_multi_store_load.pcap"),
    ("tls", 443, "tls-sample1.pcap"),
    ("cassandra", 9042, "cassandra_select.pcap"),
    ("amqp", 5672, "amqp_publish.pcap"),
    ("thrift", 9090, "thrift_integration.pcap"),
    ("dns", 53, "dns_tcp_axfr.pcap"),
    ("nfs", 2049, "nfs_v3.pcap"),
    ("sip", 5060, "sip_tcp.pcap"),
]


@pytest.mark.parametrize(("protocol", "port", "capture"), CAPTURES, ids=[c[0] for c in CAPTURES])
def test_sessions_report_what_they_hold(protocol: str, port: int, capture: str) -> None:
    metrics.reset_for_tests()
    packets = [p for p in read_packets(CORPUS / capture) if p.l4proto == IPPROTO_TCP]
    options = {"type": protocol, "ports": [port], **OPTIONS.get(protocol, {})}
    config = from_tree(normalize({"packetbeat.protocols": [options], "output.discard": {}}))
    d = wiring.dispatcher(config, lambda _txn: None)
    for pkt in packets:
        d.handle(pkt)
        d.audit(pkt.ts_ns)
        live = [conn for _, conn in d._lru.values()]
        assert d.reassembler.held_total == sum(conn.session.buffered() for conn in live) >= 0
    assert metrics.register("tcp")["internal_errors"] == 0

    # Half of the first segment that carries a message start, on a connection of its own: held, not lost.
    first = next(p for p in packets if len(p.payload) >= 8)
    sport, dport = (first.sport ^ 0x5A5A, first.dport) if first.dport == port else (first.sport, first.dport ^ 0x5A5A)
    fresh = wiring.dispatcher(config, lambda _txn: None)
    fresh.tcp(first.ts_ns, first.src, first.dst, sport, dport, first.seq, first.ack, 0x18,
              first.payload[: len(first.payload) // 2])
    fresh.audit(first.ts_ns)
    assert fresh.reassembler.held_total > 0, f"{protocol}: half a message is not counted as held"
