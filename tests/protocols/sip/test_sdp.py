"""SDP bodies, well-formed and not: a malformed body never breaks the SIP event (TestMalformedBodyFiends)."""

from __future__ import annotations

import pytest

from agent import metrics
from agent.protocols.base import Transaction
from agent.protocols.sip import plugin as P
from agent.protocols.sip import sdp
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.sessions import protocol_config
from tests.protocols.sip.messages import BASE_HEADERS, sip

CONN = ConnectionInfo(Endpoint(ip_bytes("10.1.1.1"), 5060), Endpoint(ip_bytes("10.1.1.2"), 5060), 4, "udp")


def invite_with(body: bytes, content_type: str = "application/sdp") -> Transaction:
    out: list[Transaction] = []
    handler = P.SPEC.udp(protocol_config("sip"), out.append, metrics.Counters("test.sip"))  # type: ignore[misc]
    data = sip("INVITE sip:bob@example.test SIP/2.0", *BASE_HEADERS, f"Content-Type: {content_type}", body=body)
    handler.datagram(Direction.TO_SERVER, CONN, data, 1)
    (txn,) = out
    return txn


def test_full_session_description() -> None:
    body = (b"v=0\r\no=FreeSWITCH 1480142495 1480142496 IN IP4 10.0.2.15\r\ns=FreeSWITCH\r\n"
            b"c=IN IP4 10.0.2.15\r\nt=0 0\r\nm=audio 30490 RTP/AVP 5 101\r\nc=IN IP4 10.9.9.9\r\n"
            b"a=rtpmap:5 DVI4/8000\r\n")
    txn = invite_with(body)
    assert txn.fields["sip"]["sdp"] == {
        "version": "0", "owner": {"username": "FreeSWITCH", "session_id": "1480142495", "version": "1480142496",
                                  "ip": "10.0.2.15"},
        "session": {"name": "FreeSWITCH"}, "connection": {"info": "IN IP4 10.0.2.15", "address": "10.0.2.15"},
        "body": {"original": body.decode()}}
    assert txn.fields["related"]["user"][-1] == "FreeSWITCH" and txn.fields["related"]["ip"] == ["10.0.2.15"]


@pytest.mark.parametrize("body", [
    b"o=\r\n", b"o=\"\r\n", b'o="unterminated 1 2 IN IP4 1.2.3.4\r\n', b"o=only two\r\n", b"=\r\n", b"v\r\n",
    b"\x00\xff\xfe garbage \r\n\r\n", b"c=\r\ns=\r\nv=\r\n", b"m=\r\nc=IN IP4 10.0.0.1\r\n", b"o= \r\n",
    b"v=0\no=- 1 2 IN IP4 10.0.0.1\ns=bare newlines\n",
])
def test_malformed_bodies_keep_the_event(body: bytes) -> None:
    txn = invite_with(body)
    assert txn.fields["sip"]["method"] == "INVITE" and txn.fields["sip"]["call_id"] == "call-1@10.1.1.1"
    assert txn.fields["sip"]["sdp"]["body"]["original"] == body.decode("utf-8", "replace")


def test_quoted_owner_username_and_hostname_address() -> None:
    parsed = sdp.parse('o="Jane Doe" 7 8 IN IP4 media.example.test\r\n')
    assert (parsed.owner_username, parsed.owner_session_id, parsed.owner_version, parsed.owner_ip) == (
        "Jane Doe", "7", "8", "media.example.test")
    txn = invite_with(b'o="Jane Doe" 7 8 IN IP4 media.example.test\r\n')
    assert "ip" not in txn.fields["related"]  # not an address: kept out of related.ip


def test_bare_newlines_are_accepted() -> None:
    parsed = sdp.parse("v=0\no=- 1 2 IN IP4 10.0.0.1\ns=bare newlines\n")
    assert (parsed.version, parsed.owner_ip, parsed.session_name, parsed.owner_username) == (
        "0", "10.0.0.1", "bare newlines", "")


@pytest.mark.parametrize("content_type", ["application/sdp", "Application/SDP", "application/sdp; charset=utf-8"])
def test_sdp_content_types(content_type: str) -> None:
    assert invite_with(b"v=0\r\n", content_type).fields["sip"]["sdp"]["version"] == "0"


def test_other_bodies_are_not_sdp() -> None:
    assert "sdp" not in invite_with(b"v=0\r\n", "text/plain").fields["sip"]
