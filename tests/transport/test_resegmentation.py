"""Cutting every TCP segment of a real capture at random points must not change any event.

This is the property behind "headers split anywhere across segments": the
transport layer and every stream parser must be indifferent to segmentation.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocols import registry
from tests.helpers.inprocess import events_for, read_packets, split_tcp
from tests.helpers.replay import corpus

CASES = [
    ("http", 80, "http_minitwit.pcap"),
    ("http", 8888, "wsgi_loopback.pcap"),
    ("dns", 53, "dns_tcp_axfr.pcap"),
    ("tls", 443, "tls-sample2.pcap"),
    ("mysql", 3306, "mysql_long.pcap"),
    ("pgsql", 5432, "pgsql_long_result.pcap"),
    ("redis", 6380, "redis_session.pcap"),
    ("mongodb", 27017, "mongodb_more_rows.pcap"),
    ("memcache", 11211, "memcache_text_tcp_multi_store_load.pcap"),
]


@pytest.mark.parametrize(("protocol", "port", "pcap"), CASES, ids=[c[2] for c in CASES])
def test_random_resegmentation_gives_the_same_events(protocol: str, port: int, pcap: str) -> None:
    if protocol not in registry.available():
        pytest.fail(f"protocol {protocol} is not available")
    protocols = [{"type": protocol, "ports": [port]}]
    packets = read_packets(corpus(pcap))
    expected = events_for(packets, protocols)
    assert expected, f"{pcap} gives no {protocol} events at all"

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.floats(min_value=0.01, max_value=0.99), min_size=1, max_size=6))
    def check(cuts: list[float]) -> None:
        assert events_for(split_tcp(packets, cuts), protocols) == expected

    check()


def test_byte_by_byte_segments_give_the_same_http_events() -> None:
    if "http" not in registry.available():
        pytest.fail("http is not available")
    protocols = [{"type": "http", "ports": [80]}]
    packets = read_packets(corpus("http_post.pcap"))
    cuts = [i / 400 for i in range(1, 400)]
    assert events_for(split_tcp(packets, cuts), protocols) == events_for(packets, protocols)
