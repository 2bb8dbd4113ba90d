"""Common event fields: community id vectors, timestamps in UTC whatever the TZ, direction, bytes."""

from __future__ import annotations

import socket

import pytest

from agent.events.builder import AgentIdentity, EventBuilder, EventSettings
from agent.events.community_id import community_id
from agent.events.direction import DirectionClassifier, parse_networks
from agent.events.timefmt import format_ns
from agent.processors import build_processors
from agent.protocols.base import Transaction
from agent.transport.types import ConnectionInfo, Endpoint, ip_bytes
from tests.helpers.replay import corpus, replay


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


@pytest.mark.parametrize(("args", "expected"), [
    ((ip("128.232.110.120"), ip("66.35.250.204"), 6, 34855, 80), "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    ((ip("66.35.250.204"), ip("128.232.110.120"), 6, 80, 34855), "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    ((ip("192.168.1.52"), ip("8.8.8.8"), 17, 54585, 53), "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
])
def test_community_id_vectors(args: tuple[bytes, bytes, int, int, int], expected: str) -> None:
    assert community_id(*args) == expected


def test_community_id_icmp_echo_is_direction_independent() -> None:
    request = community_id(ip("192.168.0.89"), ip("192.168.0.1"), 1, icmp_type=8)
    reply = community_id(ip("192.168.0.1"), ip("192.168.0.89"), 1, icmp_type=0)
    assert request == reply == "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="


def test_timestamp_formats() -> None:
    ts = 1_445_287_763_817_123_456
    assert format_ns(ts) == "2015-10-19T20:49:23.817Z"
    assert format_ns(ts, 6) == "2015-10-19T20:49:23.817123Z"
    assert format_ns(ts, 9) == "2015-10-19T20:49:23.817123456Z"
    assert format_ns(1_445_287_763_000_000_000, 9) == "2015-10-19T20:49:23.000Z"


def test_timestamp_is_the_packet_time_in_utc_whatever_the_tz() -> None:
    for tz in ("Asia/Shanghai", "America/Los_Angeles", "UTC"):
        events, _ = replay(corpus("icmp4_ping.pcap"), [{"type": "icmp", "enabled": True}], env={"TZ": tz})
        assert [e["@timestamp"] for e in events] == ["2015-10-19T20:49:23.817Z"], tz
        assert events[0]["event"]["start"] == "2015-10-19T20:49:23.817Z"


def _builder(internal: list[str] | None = None, **kwargs: object) -> EventBuilder:
    return EventBuilder(AgentIdentity.create("test-agent", "id-1"),
                        DirectionClassifier(frozenset({ip("10.9.9.9")}), parse_networks(internal or [])),
                        **kwargs)  # type: ignore[arg-type]


def _txn(client: str = "10.0.0.1", server: str = "10.0.0.2", **kwargs: object) -> Transaction:
    conn = ConnectionInfo(Endpoint(ip_bytes(client), 40000), Endpoint(ip_bytes(server), 80), 4, "tcp", 1)
    txn = Transaction("http", conn, ts_ns=1_000_000_000, end_ns=1_250_000_000, client_bytes=100,
                      server_bytes=200)
    for key, value in kwargs.items():
        setattr(txn, key, value)
    return txn


def test_common_fields() -> None:
    event = _builder(["private"]).transaction_event(_txn(fields={"method": "GET", "related": {"hosts": ["x"]}}))
    assert event is not None
    assert event["event"] == {"kind": "event", "category": ["network"], "type": ["connection", "protocol"],
                              "dataset": "http", "start": "1970-01-01T00:00:01.000Z",
                              "end": "1970-01-01T00:00:01.250Z", "duration": 250_000_000}
    assert event["source"] == event["client"] == {"ip": "10.0.0.1", "port": 40000, "bytes": 100}
    assert event["destination"] == event["server"] == {"ip": "10.0.0.2", "port": 80, "bytes": 200}
    assert event["network"]["bytes"] == 300 and event["network"]["direction"] == "internal"
    assert event["network"]["community_id"].startswith("1:")
    assert event["related"] == {"ip": ["10.0.0.1", "10.0.0.2"], "hosts": ["x"]}
    assert event["agent"]["type"] == "packetbeat" and event["agent"]["id"] == "id-1"
    assert event["method"] == "GET"


def test_direction_host_based_then_perimeter() -> None:
    b = _builder(["10.0.0.0/8"])
    assert b.transaction_event(_txn(server="10.9.9.9"))["network"]["direction"] == "ingress"  # type: ignore[index]
    assert b.transaction_event(_txn(client="10.9.9.9", server="8.8.8.8"))["network"]["direction"] == "egress"  # type: ignore[index]
    assert b.transaction_event(_txn(client="10.0.0.5", server="8.8.8.8"))["network"]["direction"] == "outbound"  # type: ignore[index]
    assert b.transaction_event(_txn(client="8.8.4.4", server="10.0.0.5"))["network"]["direction"] == "inbound"  # type: ignore[index]
    assert b.transaction_event(_txn(client="8.8.4.4", server="1.1.1.1"))["network"]["direction"] == "external"  # type: ignore[index]
    assert _builder().transaction_event(_txn(client="8.8.4.4", server="1.1.1.1"))["network"]["direction"] \
        == "unknown"  # type: ignore[index]


def test_unmatched_response_has_no_start_and_notes_become_error_message() -> None:
    event = _builder().transaction_event(_txn(has_request=False, notes=["Unmatched response"], status="Error"))
    assert event is not None
    assert "start" not in event["event"] and "duration" not in event["event"]
    assert event["error"] == {"message": "Unmatched response"}
    two = _builder().transaction_event(_txn(notes=["a", "b"]))
    assert two is not None and two["error"] == {"message": ["a", "b"]}


def test_ignore_outgoing_drops_egress_only() -> None:
    b = _builder(ignore_outgoing=True)
    assert b.transaction_event(_txn(client="10.9.9.9", server="8.8.8.8")) is None
    assert b.transaction_event(_txn(client="8.8.8.8", server="10.9.9.9")) is not None
    assert b.dropped_outgoing == 1


def test_protocol_settings_tags_fields_processors_and_nulls() -> None:
    settings = EventSettings(tags=("web",), fields={"env": "prod"}, processors=tuple(
        build_processors([{"drop_fields": {"fields": ["network.community_id"]}}], "p")))
    b = _builder(tags=("edge",), fields={"dc": "x"}, fields_under_root=True, protocol_settings={"http": settings})
    event = b.transaction_event(_txn(fields={"http": {"version": "1.1", "nothing": None}}))
    assert event is not None
    assert event["tags"] == ["edge", "web"]
    assert event["dc"] == "x" and event["fields"] == {"env": "prod"}
    assert "community_id" not in event["network"]
    assert event["http"] == {"version": "1.1"}


def test_encoding_is_deterministic_and_compact() -> None:
    b = _builder()
    event = b.transaction_event(_txn())
    assert event is not None
    first, second = b.encode(event), b.encode(dict(event))
    assert first.event_id == second.event_id and len(first.event_id) == 20
    assert b" " not in first.data[:20]
