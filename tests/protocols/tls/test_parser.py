"""The record layer and handshake parser of one direction, on literal bytes."""

from __future__ import annotations

import pytest

from agent.protocols.tls.parser import (
    MAX_RECORD_PAYLOAD,
    Alert,
    CertificateRequest,
    CertificateStatus,
    ChangeCipherSpec,
    ClientHello,
    DirectionParser,
    HelloRequest,
    Message,
    ServerHello,
    ServerKeyExchange,
    parse_ocsp_status,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.protocols.tls import builders as b


def parse(data: bytes, chunk: int = 0, direction: Direction = Direction.TO_CLIENT) -> list[Message]:
    """All messages of `data`, fed whole (chunk=0) or `chunk` bytes at a time."""
    parser = DirectionParser(direction)
    out: list[Message] = []
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i:i + step], 0))
    return out


TRAILING = b.u8(b.HANDSHAKE) + b.u16(0x0303) + b.u16(40) + b"\x02\x00"  # the start of a next record


def every_way(data: bytes) -> list[Message]:
    """Whole, byte by byte, in 7-byte pieces, and followed by the start of another record: the same messages."""
    whole = parse(data)
    assert parse(data, 1) == whole, "byte-by-byte feeding changed the messages"
    assert parse(data, 7) == whole
    parser = DirectionParser(Direction.TO_CLIENT)
    assert parser.feed(data + TRAILING, 0) == whole, "trailing bytes changed the messages"
    if not parser.encrypted:
        assert parser.buffered == len(TRAILING), "trailing bytes were consumed"
    return whole


def test_incomplete_record_waits_for_more() -> None:
    parser = DirectionParser(Direction.TO_SERVER)
    assert parser.feed(bytes.fromhex("14"), 0) == []
    assert parser.feed(bytes.fromhex("03030001"), 0) == []
    assert parser.buffered == 5
    assert parser.feed(b"\x01" + b"after the change cipher spec, nothing is parsed", 0) == [ChangeCipherSpec()]
    assert parser.encrypted and parser.buffered == 0


def test_unknown_record_types_and_encrypted_alerts_are_skipped() -> None:
    data = b.record(0xFF, b"\x55") + b.record(b.ALERT, b"\x01\x02\x03") + b.record(b.HANDSHAKE, b.server_hello_done())
    assert every_way(data) == []


def test_handshake_header_split_between_records() -> None:
    hello = b.server_hello(cipher=0xC00A, compression=1)
    data = b.record(b.HANDSHAKE, hello[:2]) + b.record(b.HANDSHAKE, hello[2:5]) + b.record(b.HANDSHAKE, hello[5:])
    [message] = every_way(data)
    assert isinstance(message, ServerHello)
    assert (message.cipher_suite, message.compression_method, message.extensions) == (0xC00A, 1, ())


def test_several_messages_in_one_record() -> None:
    flight = (b.handshake(0, b"") + b.certificate_request() + b.server_key_exchange_ecdhe(24)
              + b.certificate_status(b"\x30\x03\x0a\x01\x03"))
    messages = every_way(b.record(b.HANDSHAKE, flight) + b.alert(2, 48))
    assert messages == [HelloRequest(), CertificateRequest(), ServerKeyExchange(None), CertificateStatus(3),
                        Alert(2, 48)]


def test_server_key_exchange_curve_needs_an_ecdhe_suite() -> None:
    ecdhe = b.record(b.HANDSHAKE, b.server_hello(cipher=0xC02F) + b.server_key_exchange_ecdhe(29))
    assert every_way(ecdhe)[1] == ServerKeyExchange(29)
    dhe = b.record(b.HANDSHAKE, b.server_hello(cipher=0x009E) + b.server_key_exchange_ecdhe(29))
    assert every_way(dhe)[1] == ServerKeyExchange(None)


@pytest.mark.parametrize(("data", "reason"), [
    (b"GET / HTTP/1.1\r\n\r\n", "not a TLS record"),
    (b.u8(22) + b.u16(0x0303) + b.u16(MAX_RECORD_PAYLOAD + 1), "exceeds"),
    (b.record(b.HANDSHAKE, b.handshake(2, bytes.fromhex("f303") + bytes(32) + b"\x00" + b"\xc0\x0a\x00")),
     "not a TLS server hello"),
    (b.record(b.HANDSHAKE, b.handshake(2, bytes.fromhex("0303") + bytes(32) + b"\x21" + b"\xee" * 33
                                       + b"\xc0\x0a\x00")), "session id length 33"),
    (b.record(b.HANDSHAKE, b.handshake(1, bytes.fromhex("0303") + bytes(32) + b"\x00" + b"\x00\x10\xc0\x2f")),
     "cipher suites run past"),
    (b.record(b.HANDSHAKE, bytes.fromhex("02000002ff")) + b.record(b.HANDSHAKE, b"\xaa"), "too short"),
])
def test_malformed_input_raises_parse_error(data: bytes, reason: str) -> None:
    for chunk in (0, 1):
        with pytest.raises(ParseError, match=reason) as info:
            parse(data, chunk)
        assert info.value.protocol == "tls" and info.value.direction is Direction.TO_CLIENT


def test_parse_error_offset_counts_the_whole_stream() -> None:
    data = b.record(b.HANDSHAKE, b.server_hello_done()) + b.record(b.ALERT, b"\x01\x00") + b"\x16\x07\x07\x00\x01"
    with pytest.raises(ParseError) as info:
        parse(data, 3)
    assert info.value.offset == len(data) - 5


def test_tls13_server_hello_makes_application_data_end_the_handshake() -> None:
    hello = b.server_hello(extensions=[b.server_version(0x0304)], cipher=0x1301)
    parser = DirectionParser(Direction.TO_CLIENT)
    messages = parser.feed(b.record(b.HANDSHAKE, hello) + b.app_data(50) + b.record(b.HANDSHAKE, b"\x99"), 0)
    assert isinstance(messages[0], ServerHello) and messages[0].negotiated_version == 0x0304
    assert messages[1:] == [ChangeCipherSpec(by_application_data=True)]
    assert parser.encrypted


def test_hello_retry_request_does_not_end_the_handshake() -> None:
    retry = b.server_hello(random=bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"),
                           extensions=[b.server_version(0x0304)])
    messages = every_way(b.record(b.HANDSHAKE, retry) + b.app_data(10))
    assert len(messages) == 1 and isinstance(messages[0], ServerHello) and messages[0].is_hello_retry_request


def test_client_hello_fields_and_grease_removal() -> None:
    hello = b.client_hello(version=0x0302, session_id=b"\x01\x02", ciphers=(0x0A0A, 0x0035, 0x00FF),
                           compression=(1, 0), extensions=[b.ext(0x1A1A), b.sni("a.test"), b.ext(0xFF01, b"\x00")])
    [message] = every_way(b.record(b.HANDSHAKE, hello, version=0x0301))
    assert isinstance(message, ClientHello)
    assert (message.version, message.session_id, message.cipher_suites) == (0x0302, b"\x01\x02", (0x0035, 0x00FF))
    assert message.compression_methods == (1, 0)
    assert [e.type for e in message.extensions] == [0, 0xFF01]


def test_truncated_extension_header_drops_the_extension_block() -> None:
    body = b.client_hello(extensions=None)[4:] + b.u16(10) + b.u16(0) + b.u16(0) + b"\x00\x0a"
    [message] = every_way(b.record(b.HANDSHAKE, b.handshake(1, body)))
    assert isinstance(message, ClientHello) and message.extensions == ()


@pytest.mark.parametrize(("body", "status"), [
    ("01" "000005" "3003 0a0100", 0),
    ("01" "000007" "308200 03 0a0106", 6),
    ("01" "000005" "3003 0a0203", None),  # not a one-byte ENUMERATED
    ("02" "000005" "3003 0a0100", None),  # not OCSP
    ("01" "0000", None),
])
def test_ocsp_response_status(body: str, status: int | None) -> None:
    assert parse_ocsp_status(bytes.fromhex(body.replace(" ", ""))) == status
