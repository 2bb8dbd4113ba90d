"""TNS framing and TTC decoding on literal bytes: whole, byte by byte, with trailing data; against tshark."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.protocols.errors import ParseError
from agent.protocols.tns import ttc
from agent.protocols.tns.connect import descriptor_fields, listener_error, parse_accept, parse_connect
from agent.protocols.tns.parser import MARKER, PacketParser, TnsPacket
from agent.transport.types import Direction
from tests.protocols.tns import listener as db
from tests.protocols.tns import wire as w
from tests.protocols.tns.streams import PCAP, streams
from tests.protocols.tns.test_session import DESCRIPTOR, oall8

CONNECT = w.connect(DESCRIPTOR)


def packets(data: bytes, step: int, large: bool | None = False) -> list[TnsPacket]:
    parser = PacketParser(Direction.TO_SERVER)
    parser.set_large(large)
    out: list[TnsPacket] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i:i + step], i)
    return out


@pytest.mark.parametrize("step", [10_000, 1, 7])
def test_framing_whole_bytewise_and_split(step: int) -> None:
    stream = CONNECT + w.marker(1, large=False) + w.resend()
    found = packets(stream, step)
    assert [(p.type, p.size) for p in found] == [(1, len(CONNECT)), (12, 11), (11, 8)]
    request = parse_connect(found[0].body)
    assert (request.version, request.sdu, request.data) == (319, 8192, DESCRIPTOR)


def test_trailing_bytes_wait_for_their_packet() -> None:
    parser = PacketParser(Direction.TO_SERVER)
    assert len(parser.feed(CONNECT + CONNECT[:20], 1)) == 1 and parser.buffer.unread == 20


def test_large_form_and_the_guess_mid_stream() -> None:
    stream = w.data(b"\x03\x0e\x01") + w.data(b"\x03\x0f\x02")
    assert [p.body for p in packets(stream, 3, large=True)] == [b"\x00\x00\x03\x0e\x01", b"\x00\x00\x03\x0f\x02"]
    assert [p.body[2:] for p in packets(stream, 5, large=None)] == [b"\x03\x0e\x01", b"\x03\x0f\x02"]
    assert [p.body[2:] for p in packets(w.data(b"x", large=False), 1, large=None)] == [b"x"]


def test_out_of_band_break_byte_before_a_marker() -> None:
    stream = b"!" + w.marker(2) + w.data(b"\x03\x0e\x01")
    for step in (100, 1):
        found = packets(stream, step, large=True)
        assert [(p.type, p.skipped_break) for p in found] == [(MARKER, True), (6, False)]


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"\x00\x04\x00\x00\x63\x00\x00\x00", b"\x00\x00\x00\x02"
                                  b"\x06\x00\x00\x00", b"\xff\xff\xff\xff\x06\x00\x00\x00"])
def test_not_tns(junk: bytes) -> None:
    with pytest.raises(ParseError):
        packets(junk + bytes(20), 100, large=True)


def test_accept_fields() -> None:
    accept = parse_accept(w.accept(319, sdu=65535)[8:])
    assert (accept.version, accept.sdu, accept.na_required) == (319, 65535, False)


def test_descriptor_paths() -> None:
    fields = descriptor_fields(DESCRIPTOR.decode() + " (SECURITY=(SSL_SERVER_CERT_DN=\"CN=x\"))")
    assert fields["ADDRESS.HOST"] == "db.example" and fields["CONNECT_DATA.CID.USER"] == "ann"
    assert fields["SECURITY.SSL_SERVER_CERT_DN"] == "CN=x"
    assert listener_error(db.REFUSE_TEXT.decode()) == 12514
    assert descriptor_fields("((((") == {} and descriptor_fields("(A=") == {"A": ""}


# -- TTC ---------------------------------------------------------------------------------------------


def packet_streams() -> list[list[tuple[Direction, TnsPacket]]]:
    """The packets of each captured connection, both directions in order (4-byte lengths after ACCEPT v315+)."""
    out = []
    for steps in streams():
        parsers = {d: PacketParser(d) for d in Direction}
        found = []
        for step in steps:
            for packet in parsers[step.direction].feed(step.data, step.ts_ns):
                found.append((step.direction, packet))
                if packet.type == 2 and parse_accept(packet.body).version >= 315:
                    for parser in parsers.values():
                        parser.set_large(True)
        out.append(found)
    return out


def client_payloads() -> list[bytes]:
    """The TTC payloads python-oracledb sent in the captured sessions (DATA packets after ACCEPT)."""
    return [p.body[2:] for connection in packet_streams() for d, p in connection
            if d is Direction.TO_SERVER and p.type == 6 and p.body[2:3] in (b"\x01", b"\x02", b"\x03", b"\x11")]


def test_calls_of_the_real_client() -> None:
    calls = [ttc.parse_call(p, None) for p in client_payloads()]
    functions = [c.function for c in calls if c is not None]
    assert ttc.FN_EXECUTE in functions and ttc.FN_AUTH_TWO in functions and ttc.FN_REEXECUTE in functions
    sqls = [c.sql for c in calls if c is not None and c.sql]
    assert "update accounts set balance = balance - :1 where id = 7" in sqls
    logon = next(c for c in calls if c is not None and c.function == ttc.FN_AUTH_TWO)
    assert logon.user == "scott" and "AUTH_PASSWORD" not in logon.pairs and "AUTH_SESSKEY" not in logon.pairs


def test_field_version_23_token_and_late_error_fields() -> None:
    call = oall8(b"select sysdate from dual")
    with_token = call[:3] + w.ub(987654321) + call[3:]
    for version in (18, None):  # known to carry a token, or unknown: both readings are tried
        call_read = ttc.parse_call(with_token, version)
        assert call_read is not None and call_read.sql == "select sysdate from dual"
    late = db.error(1, "ORA-00001: unique constraint violated")
    late = late[:-len(w.chunked(b"ORA-00001: unique constraint violated"))] + b"\x00\x00" + \
        w.chunked(b"ORA-00001: unique constraint violated")
    end = ttc.end_of_call(b"\x06junk" + late + bytes([ttc.MSG_END_OF_RESPONSE]), 14)
    assert end is not None and (end.error, end.failed) == (1, True)
    assert ttc.end_of_call(late, None) is not None


def test_end_of_call_only_at_the_end() -> None:
    block = db.error(942, "ORA-00942: table or view does not exist")
    assert ttc.end_of_call(block, 12) == ttc.EndOfCall(942, 0, 1, "ORA-00942: table or view does not exist")
    assert ttc.end_of_call(block + b"\x00", 12) is None
    assert ttc.end_of_call(block[:-3], 12) is None
    assert ttc.end_of_call(db.status(), 12) == ttc.EndOfCall(0, 0, 0, "")


def test_sql_length_must_agree() -> None:
    call = oall8(b"select 1 from dual")
    broken = call.replace(w.chunked(b"select 1 from dual"), w.chunked(b"select 12 from dual"))
    assert ttc.parse_call(broken, None) is None  # an OALL8 whose text cannot be read reliably is not decoded
    assert ttc.parse_call(b"\x03\x5e", None) is None


def tshark_types() -> list[list[int]]:
    out = subprocess.run(["tshark", "-r", str(PCAP), "-d", "tcp.port==1522,tns", "-T", "fields", "-e", "tcp.stream",
                          "-e", "tns.type"], capture_output=True, text=True, timeout=60, check=True).stdout
    per: dict[str, list[int]] = {}
    for line in out.splitlines():
        stream, types = line.split("\t")
        if types:
            per.setdefault(stream, []).extend(int(t) for t in types.split(","))
    return list(per.values())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_packet_types_agree_with_tshark() -> None:
    assert [[p.type for _, p in connection] for connection in packet_streams()] == tshark_types()
