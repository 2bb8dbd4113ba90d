"""Packetbeat's memcache pcaps (text and binary, TCP and UDP) through the CLI."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import corpus, replay

MEMCACHE = [{"type": "memcache", "ports": [11211], "udptransactiontimeout": "10ms"}]


def events(name: str, **options: Any) -> list[dict[str, Any]]:
    found, _ = replay(corpus(name), [{**MEMCACHE[0], **options}])
    assert all(e["type"] == "memcache" for e in found)
    return found


def test_text_tcp_store_load_and_byte_counts() -> None:
    store, load, quit_ = events("memcache_text_tcp_single_load_store.pcap")
    assert store["memcache"]["request"]["bytes"] == 2046 and store["memcache"]["response"]["type"] == "Success"
    # Packetbeat's quirk: source.bytes = response size, destination.bytes = request size.
    assert (store["source"]["bytes"], store["destination"]["bytes"]) == (8, 2071)
    assert (load["source"]["bytes"], load["destination"]["bytes"]) == (2076, 14)
    assert store["client"]["ip"] == "192.168.188.37" and store["server"]["port"] == 11211
    assert store["event"]["action"] == "memcache.store" and store["event"]["outcome"] == "success"
    assert quit_["memcache"]["request"]["command"] == "quit" and "response" not in quit_["memcache"]


def test_text_tcp_values_with_maxvalues() -> None:
    found = events("memcache_text_tcp_multi_store_load.pcap", maxvalues=-1, maxbytespervalue=4)
    multi = found[3]["memcache"]["response"]
    assert multi["keys"] == ["k1", "k2", "k3"] and multi["bytes"] == 130 and len(multi["values"]) == 3
    assert multi["values"][0] == "YWFhYQ=="  # 4 bytes kept, base64


def test_binary_tcp_stats_merged() -> None:
    found = events("memcache_bin_tcp_stats.pcap")
    stats = found[2]["memcache"]["response"]["stats"]
    assert len(stats) > 40 and {"name": "pid", "value": "1"} in stats
    assert found[2]["source"]["bytes"] == 2005


def test_binary_udp_quiet_stores() -> None:
    found = events("memcache_bin_udp_multi_store.pcap")
    assert sorted(e["memcache"]["request"]["keys"][0] for e in found) == ["k1", "k2", "k3"]
    assert all(e["network"]["transport"] == "udp" and e["status"] == "OK" and "response" not in e["memcache"]
               and e["memcache"]["request"]["quiet"] is True for e in found)
    assert {e["memcache"]["request"]["keys"][0]: e["destination"]["bytes"] for e in found} == {
        "k1": 134, "k2": 54, "k3": 44}


def test_text_udp_noreply() -> None:
    found = events("memcache_text_udp_counter_ops.pcap")
    assert sorted(e["memcache"]["request"]["command"] for e in found) == ["decr", "incr", "set"]
    assert all(e["memcache"]["request"]["noreply"] is True for e in found)
