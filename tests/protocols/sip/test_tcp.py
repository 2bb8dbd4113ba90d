"""SIP over TCP: Content-Length framing fed whole, byte by byte and in random pieces; gaps, FIN, resync."""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.config.load import from_tree
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.sip import plugin as P
from agent.protocols.sip.parser import (
    MAX_BODY_BYTES,
    MAX_CONTENT_LENGTH,
    MAX_HEADER_BYTES,
    MAX_START_LINE,
    SipStreamParser,
)
from agent.runtime import wiring
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.replay import corpus
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config
from tests.protocols.sip.messages import BASE_HEADERS, SDP_8000, sip, tcp_payloads

MS = 1_000_000
T0 = 1_589_000_000 * 10**9
TCP = {"transport_protocol": "tcp"}
OPTIONS = sip("OPTIONS sip:bob@example.test SIP/2.0", *BASE_HEADERS)
OK = sip("SIP/2.0 200 OK", *BASE_HEADERS, "Content-Type: application/sdp", body=SDP_8000)


def three_ways(steps: list[Step]) -> list[Transaction]:
    return assert_same_three_ways("sip", steps, server_port=5060, options=TCP)


def summary(txns: list[Transaction]) -> list[tuple[str, Any, list[str]]]:
    return [(t.fields["sip"]["type"], t.fields["sip"].get("method") or t.fields["sip"].get("code"), t.notes)
            for t in txns]


def test_sip_tcp_pcap_three_ways() -> None:
    steps = [Step(C2S if up else S2C, data, T0 + i * MS)
             for i, (up, data) in enumerate(tcp_payloads(corpus("sip_tcp.pcap")))]
    txns = three_ways(steps)
    assert summary(txns) == [("request", "INVITE", []), ("response", 100, []), ("response", 180, []),
                             ("response", 200, []), ("request", "ACK", []), ("request", "BYE", []),
                             ("response", 200, [])]
    assert [t.conn.client.port for t in txns] == [40000, 5060, 5060, 5060, 40000, 5060, 40000]
    assert all(t.fields["network"]["transport"] == "tcp" for t in txns)
    assert txns[3].fields["sip"]["sdp"]["owner"]["username"] == "GW"


def test_several_messages_in_one_segment_and_keepalives() -> None:
    data = b"\r\n\r\n" + OPTIONS + b"\r\n" + OPTIONS.replace(b"CSeq: 2", b"CSeq: 3") + b"\r\n\r\n"
    txns = three_ways([Step(C2S, data, T0), Step(S2C, b"\r\n" + OK, T0 + MS)])
    assert [t.fields["sip"]["cseq"]["code"] for t in txns] == [2, 3, 2]
    assert txns[2].fields["sip"]["sdp"]["version"] == "0" and txns[2].fields["sip"]["content_length"] == len(SDP_8000)
    assert txns[0].fields["event"]["original"] == OPTIONS.decode()


def test_message_without_content_length_has_no_body() -> None:
    data = sip("OPTIONS sip:bob@example.test SIP/2.0", *BASE_HEADERS, length=-1) + OPTIONS
    assert len(three_ways([Step(C2S, data, T0)])) == 2


def test_gap_inside_a_body_keeps_the_framing() -> None:
    head, body = OK.split(b"\r\n\r\n", 1)
    steps = [Step(S2C, head + b"\r\n\r\n" + body[:20], T0), Step(S2C, gap=30, ts_ns=T0),
             Step(S2C, body[50:] + OK, T0 + MS)]
    txns = three_ways(steps)
    assert summary(txns) == [("response", 200, ["30 bytes of the body were lost in a gap"]), ("response", 200, [])]


def test_gap_in_the_headers_publishes_what_was_read_then_resyncs() -> None:
    cut = OPTIONS.index(b"CSeq")
    steps = [Step(C2S, OPTIONS[:cut], T0), Step(C2S, gap=40, ts_ns=T0 + MS),
             Step(C2S, b"ranch=z9hG4bK-9\r\nCSeq: 1 X\r\n\r\n" + OPTIONS, T0 + 2 * MS)]
    txns = three_ways(steps)
    assert summary(txns) == [("request", "OPTIONS", [P.CUT_BY_GAP]), ("request", "OPTIONS", [])]
    assert "cseq" not in txns[0].fields["sip"] and txns[0].fields["sip"]["call_id"] == "call-1@10.1.1.1"


def test_fin_publishes_the_message_in_progress() -> None:
    steps = [Step(S2C, OK[:-30], T0), Step(S2C, fin=True, ts_ns=T0 + MS)]
    (txn,) = three_ways(steps)
    assert txn.notes == [P.CUT_BY_FIN] and len(txn.fields["sip"]["sdp"]["body"]["original"]) == len(SDP_8000) - 30


def test_idle_expiry_publishes_the_message_in_progress() -> None:
    (txn,) = three_ways([Step(C2S, OPTIONS[:-10], T0)])
    assert txn.notes == [P.CUT_BY_TIMEOUT]


def test_garbage_is_a_parse_error_then_the_next_message_is_found() -> None:
    out: list[Transaction] = []
    counters = metrics.Counters("test.sip")
    session = P.SipSession(SessionContext("sip", protocol_config("sip", **TCP), conn_info(5060), out.append, counters))
    for data in (b"\x16\x03\x01\x02\x00 a TLS hello, not SIP\r\n", b"more junk SIP/2", b".0 is not here\r\n" + OPTIONS):
        try:
            session.feed(Direction.TO_SERVER, data, T0)
        except ParseError as exc:
            session.recover(Direction.TO_SERVER, exc, T0)
    assert len(out) == 1 and out[0].fields["sip"]["method"] == "OPTIONS"
    assert counters["parse_errors"] == 1 and counters["resync_dropped_bytes"] > 0


def test_header_and_body_limits() -> None:
    parser = SipStreamParser(Direction.TO_SERVER)
    with pytest.raises(ParseError):
        parser.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEADER_BYTES, 0)
    parser = SipStreamParser(Direction.TO_SERVER)
    with pytest.raises(ParseError):
        parser.feed(sip("MESSAGE sip:a@b SIP/2.0", *BASE_HEADERS, length=MAX_CONTENT_LENGTH + 1), 0)
    parser = SipStreamParser(Direction.TO_SERVER)
    big = sip("MESSAGE sip:a@b SIP/2.0", *BASE_HEADERS, body=b"x" * (MAX_BODY_BYTES + 1000))
    (msg,) = [m for chunk in range(0, len(big), 65536) for m in parser.feed(big[chunk:chunk + 65536], 0)]
    assert len(msg.body) == MAX_BODY_BYTES and parser.skipped_body == 1000


def test_sip_claims_the_configured_transport_only() -> None:
    def tree(transport: str) -> dict[str, Any]:
        return {"packetbeat": {"protocols": [{"type": "sip", "ports": [5060], "transport_protocol": transport},
                                             {"type": "dns", "ports": [53]}]},
                "output": {"file": {"path": "/tmp/unused"}}}
    tcp_config = from_tree(tree("tcp"))
    assert wiring.kernel_port_map(tcp_config)[(6, 5060)] and (17, 5060) not in wiring.kernel_port_map(tcp_config)
    udp_config = from_tree(tree("udp"))
    assert (6, 5060) not in wiring.kernel_port_map(udp_config) and wiring.kernel_port_map(udp_config)[(17, 5060)]


def test_buffers_stay_bounded_when_fed_byte_by_byte() -> None:
    parser = SipStreamParser(Direction.TO_SERVER)
    parser.reset()
    garbage = b"no start line here, just noise " * 400
    for i in range(len(garbage)):
        assert parser.feed(garbage[i:i + 1], 0) == []
        assert parser.buf.unread <= MAX_START_LINE
    # the end of the garbled message, then a large head
    big_head = b"\r\n\r\n" + sip("OPTIONS sip:a@b SIP/2.0", *BASE_HEADERS,
                                  *[f"X-Filler-{i}: {'y' * 90}" for i in range(500)])
    messages = [m for i in range(len(big_head)) for m in parser.feed(big_head[i:i + 1], 0)]
    assert len(messages) == 1 and len(messages[0].headers) == 506 and parser.synced
