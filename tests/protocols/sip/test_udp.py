"""SIP over UDP, one datagram at a time: fields, options, events, quirks and malformed input.

Packetbeat's TestParseUDP is re-created on the same INVITE.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.events.builder import AgentIdentity, EventBuilder
from agent.events.direction import DirectionClassifier, parse_networks
from agent.protocols.base import Transaction
from agent.protocols.sip import plugin as P
from agent.protocols.sip.parser import parse_datagram
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.sessions import protocol_config
from tests.protocols.sip.messages import BASE_HEADERS, INVITE, REGISTER, REGISTER_OK, SDP_8000, TRYING, sip

T0 = 1_480_000_000 * 10**9
A = Endpoint(ip_bytes("10.0.2.20"), 5060)
B = Endpoint(ip_bytes("10.0.2.15"), 5060)


def send(*datagrams: bytes, direction: Direction = Direction.TO_SERVER,
         **options: Any) -> tuple[list[Transaction], metrics.Counters]:
    out: list[Transaction] = []
    counters = metrics.Counters("test.sip")
    handler = P.SPEC.udp(protocol_config("sip", **options), out.append, counters)  # type: ignore[misc]
    for data in datagrams:
        try:
            handler.datagram(direction, ConnectionInfo(A, B, 4, "udp"), data, T0)
        except ParseError:
            pass
    return out, counters


def one(data: bytes, **options: Any) -> Transaction:
    (txn,), _ = send(data, **options)
    return txn


def event(txn: Transaction) -> dict[str, Any]:
    builder = EventBuilder(AgentIdentity.create("test", "id"), DirectionClassifier(frozenset(), parse_networks([])))
    out = builder.transaction_event(txn)
    assert out is not None
    return out


def test_parse_udp_invite() -> None:
    txn = one(INVITE)
    sip_fields = txn.fields["sip"]
    assert sip_fields == {
        "version": "2.0", "type": "request", "method": "INVITE",
        "uri": {"original": "sip:test@10.0.2.15:5060", "scheme": "sip", "username": "test", "host": "10.0.2.15",
                "port": 5060},
        "call_id": "1-2187@10.0.2.20", "content_length": 123, "content_type": "application/sdp",
        "max_forwards": 70, "via": {"original": ["SIP/2.0/UDP 10.0.2.20:5060;branch=z9hG4bK-2187-1-0"]},
        "cseq": {"code": 1, "method": "INVITE"},
        "from": {"display_info": "DVI4/8000", "tag": "1",
                 "uri": {"original": "sip:sipp@10.0.2.20:5060", "scheme": "sip", "username": "sipp",
                         "host": "10.0.2.20", "port": 5060}},
        "to": {"display_info": "test",
               "uri": {"original": "sip:test@10.0.2.15:5060", "scheme": "sip", "username": "test",
                       "host": "10.0.2.15", "port": 5060}},
        # Packetbeat fills contact from the To header
        "contact": {"display_info": "test",
                    "uri": {"original": "sip:test@10.0.2.15:5060", "scheme": "sip", "username": "test",
                            "host": "10.0.2.15", "port": 5060}},
        "sdp": {"version": "0", "owner": {"session_id": "42", "version": "42", "ip": "10.0.2.20"},
                "connection": {"info": "IN IP4 10.0.2.20", "address": "10.0.2.20"},
                "body": {"original": SDP_8000.decode()}},
    }
    assert txn.fields["related"] == {"user": ["test", "sipp"], "hosts": ["10.0.2.15", "10.0.2.20"],
                                     "ip": ["10.0.2.20"]}
    assert txn.fields["event"] == {"category": ["network"], "action": "sip-invite", "sequence": 1,
                                   "original": INVITE.decode()}
    assert txn.fields["network"] == {"application": "sip", "iana_number": "17", "transport": "udp"}
    assert (txn.status, txn.ts_ns, txn.end_ns, txn.client_bytes, txn.server_bytes) == ("OK", T0, T0, None, None)


def test_event_shape_matches_packetbeat() -> None:
    e = event(one(INVITE))
    assert e["event"]["type"] == ["info", "protocol"] and e["event"]["duration"] == 0
    assert e["event"]["kind"] == "event" and e["event"]["dataset"] == "sip"
    assert e["source"] == e["client"] == {"ip": "10.0.2.20", "port": 5060}
    assert e["destination"] == e["server"] == {"ip": "10.0.2.15", "port": 5060}
    assert "bytes" not in e["network"] and e["network"]["community_id"] == "1:xDRQZvk3ErEhBDslXv1c6EKI804="
    assert e["related"]["ip"] == ["10.0.2.20", "10.0.2.15"]


def test_datagram_from_the_server_port_side_runs_from_its_sender() -> None:
    (txn,), _ = send(TRYING, direction=Direction.TO_CLIENT)
    assert (txn.conn.client, txn.conn.server) == (B, A)
    f = txn.fields
    assert f["sip"]["type"] == "response" and (f["sip"]["code"], f["sip"]["status"]) == (100, "Trying")
    assert f["event"] == {"category": ["network"], "action": "sip-invite", "sequence": 1, "reason": "Trying",
                          "original": TRYING.decode()}
    assert "contact" not in f["sip"] and f["sip"]["user_agent"]["original"].startswith("FreeSWITCH")


def test_authenticated_register() -> None:
    txn = one(REGISTER)
    f = txn.fields
    assert f["sip"]["auth"] == {"scheme": "Digest", "realm": "sip.cybercity.dk",
                                "uri": {"original": "sip:192.168.1.2", "scheme": "sip", "host": "192.168.1.2"}}
    assert f["user"] == {"name": "voi18062"} and f["related"]["user"] == ["voi18062"]
    assert f["event"]["category"] == ["network", "authentication"]
    assert f["sip"]["uri"] == {"original": "sip:sip.cybercity.dk", "scheme": "sip", "host": "sip.cybercity.dk"}
    # the Contact header's own expires/q are not what Packetbeat reports (it reads To)
    assert f["sip"]["contact"]["uri"]["host"] == "sip.cybercity.dk" and "expires" not in f["sip"]["contact"]


def test_authorization_not_parsed_when_disabled() -> None:
    f = one(REGISTER, parse_authorization=False).fields
    assert "auth" not in f["sip"] and "user" not in f
    assert f["event"]["category"] == ["network", "authentication"]  # the header is still there


def test_private_uri_keeps_packetbeats_angle_brackets() -> None:
    f = one(REGISTER_OK).fields
    assert f["sip"]["private"] == {"uri": {"original": "<sip:35104723@sip.cybercity.dk>", "scheme": "<sip",
                                           "username": "35104723", "host": "sip.cybercity.dk>"}}
    assert f["related"] == {"user": ["35104723", "voi18062"], "hosts": ["sip.cybercity.dk>", "sip.cybercity.dk"]}
    assert f["event"]["outcome"] == "success" and f["event"]["reason"] == "OK"


@pytest.mark.parametrize(("code", "status", "outcome"), [
    (180, "OK", None), (302, "OK", "failure"), (404, "Error", "failure"), (503, "Error", "failure")])
def test_status_and_outcome(code: int, status: str, outcome: str | None) -> None:
    txn = one(sip(f"SIP/2.0 {code} Whatever Phrase", *BASE_HEADERS))
    assert txn.status == status and txn.fields["event"].get("outcome") == outcome
    assert txn.fields["sip"]["status"] == "Whatever Phrase" and txn.fields["event"]["action"] == "sip-options"


def test_options_off() -> None:
    f = one(INVITE, keep_original=False, parse_body=False).fields
    assert "original" not in f["event"] and "sdp" not in f["sip"]
    assert f["related"] == {"user": ["test", "sipp"], "hosts": ["10.0.2.15", "10.0.2.20"]}


def test_contact_params_come_from_to() -> None:
    data = sip("NOTIFY sip:bob@example.test SIP/2.0", "To: Bob <sip:bob@example.test;transport=TCP;line=7>;"
               "expires=60;q=0.5", "Contact: <sip:ignored@elsewhere>", "CSeq: 9 NOTIFY")
    contact = one(data).fields["sip"]["contact"]
    assert contact == {"display_info": "Bob", "expires": 60, "q": 0.5, "line": "7", "transport": "tcp",
                       "uri": {"original": "sip:bob@example.test;transport=TCP;line=7", "scheme": "sip",
                               "username": "bob", "host": "example.test"}}


def test_compact_folded_and_repeated_headers() -> None:
    data = sip("MESSAGE sip:bob@example.test SIP/2.0", "v: SIP/2.0/UDP a.example;branch=1",
               "v: SIP/2.0/UDP a.example;branch=1", "v: SIP/2.0/UDP b.example;branch=2",
               "f: Alice", " <sip:alice@example.test>;tag=x", "t: <sip:bob@example.test>", "i: abc",
               "k: timer", "Supported: path, ,100rel", "Allow: INVITE,ACK", "Allow: BYE", "c: text/plain",
               "CSeq: 3 MESSAGE", "Max-Forwards: x", body=b"hello")
    f = one(data).fields["sip"]
    assert f["via"] == {"original": ["SIP/2.0/UDP a.example;branch=1", "SIP/2.0/UDP b.example;branch=2"]}
    assert f["from"]["display_info"] == "Alice" and f["from"]["tag"] == "x"
    assert (f["call_id"], f["supported"], f["allow"]) == ("abc", ["timer", "path", "100rel"], ["invite", "ack", "bye"])
    assert f["content_type"] == "text/plain" and f["content_length"] == 5
    assert "max_forwards" not in f and "sdp" not in f


def test_datagram_without_content_length_takes_the_rest_as_body() -> None:
    data = sip("INVITE sip:bob@example.test SIP/2.0", *BASE_HEADERS, "Content-Type: Application/SDP",
               body=SDP_8000, length=-1)
    msg = parse_datagram(data)
    assert msg.body == SDP_8000 and not msg.has_content_length
    f = one(data).fields["sip"]
    assert f["sdp"]["owner"]["ip"] == "10.0.2.20" and "content_length" not in f


def test_body_shorter_than_content_length_gets_a_note() -> None:
    txn = one(sip("INVITE sip:bob@example.test SIP/2.0", *BASE_HEADERS, body=b"v=0\r\n", length=50))
    assert txn.notes == ["Body is shorter than its Content-Length (5 of 50 bytes)"]
    assert event(txn)["error"]["message"] == txn.notes[0]


def test_leading_crlf_is_ignored() -> None:
    assert one(b"\r\n\r\n" + TRYING).fields["event"]["original"] == TRYING.decode()


def test_encoded_body_is_not_parsed() -> None:
    data = sip("INVITE sip:b@x SIP/2.0", *BASE_HEADERS, "Content-Type: application/sdp", "Content-Encoding: gzip",
               body=b"\x1f\x8b garbage")
    assert "sdp" not in one(data).fields["sip"]


@pytest.mark.parametrize("data", [
    b"", b"\r\n", b"hello world\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
    b"SIP/2.0 1000 Bad\r\n\r\n", b"SIP/2.0 OK\r\n\r\n", b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"INV ITE sip:a@b SIP/2.0\r\n\r\n", b"SIP/X.Y 200 OK\r\n\r\n",
])
def test_not_sip_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_datagram(data)
    out, counters = send(data)
    assert out == [] and counters["parse_errors"] == 1


def test_transport_protocol_setting() -> None:
    assert protocol_config("sip").transport_protocol == "udp"
    config = protocol_config("sip", ports=[5060, 5080], transport_protocol="TCP")
    assert (config.ports_for("tcp"), config.ports_for("udp")) == ((5060, 5080), ())
    with pytest.raises(Exception, match="must be one of udp, tcp"):
        protocol_config("sip", transport_protocol="sctp")
