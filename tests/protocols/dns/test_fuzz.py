"""Bounded fuzzing: nothing but ParseError may leave the DNS parser, and the sessions never raise."""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics
from agent.protocols import registry
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.dns.fields import dns_fields, message_text
from agent.protocols.dns.parser import parse_message
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.sessions import protocol_config
from tests.protocols.dns import vectors as V
from tests.protocols.dns.vectors import header, question

# DNS_FUZZ_EXAMPLES raises the budget for a longer local run; CI keeps the default.
FAST = settings(max_examples=int(os.environ.get("DNS_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SAMPLES = [m for ex in V.UDP_EXCHANGES for m in (ex.request, ex.response)] + [
    m[2:] for ex in V.TCP_EXCHANGES for m in (ex.request, ex.response)] + [V.UNHANDLED_RR, V.UNKNOWN_RR]


def decode_fully(data: bytes) -> None:
    """Parse, then render everything an event can show; only ParseError may escape."""
    try:
        msg = parse_message(data)
    except ParseError:
        return
    dns_fields(msg, True, True)
    message_text(msg)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    decode_fully(data)


@FAST
@given(st.binary(min_size=4, max_size=300))
def test_random_records_after_a_valid_question(tail: bytes) -> None:
    decode_fully(header(1, 0x8180, 1, 3, 2, 2) + question("example.com", 1) + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "cut", "insert", "pointer")))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[pos:pos] = struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))
    return bytes(data)


@FAST
@given(mutated())
def test_mutated_messages(data: bytes) -> None:
    decode_fully(data)


@FAST
@given(st.integers(0, 40), st.binary(max_size=20))
def test_pointers_that_do_not_point_backwards_are_rejected(extra: int, labels: bytes) -> None:
    """A name made of labels then a pointer at or after its own start never decodes."""
    body = header(1, 0x0100)
    start = len(body)
    name = b"\x01a" * (len(labels) % 5)
    target = start + extra  # anywhere from the name's own start onwards
    raw = body + name + struct.pack("!H", 0xC000 | target) + struct.pack("!HH", 1, 1) + b"\x00" * 40
    try:
        parse_message(raw)
    except ParseError as exc:
        assert "backwards" in exc.reason or "past the end" in exc.reason
    else:
        raise AssertionError("a forward or self pointer was followed")


CONN = ConnectionInfo(Endpoint(ip_bytes("10.1.1.1"), 40000), Endpoint(ip_bytes("10.1.1.2"), 53), 4, "tcp", 1)
TCP_SAMPLES = [m for ex in V.TCP_EXCHANGES for m in (ex.request, ex.response)]


@st.composite
def stream_events(draw: st.DrawFn) -> list[tuple[str, Direction, bytes, int]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        direction = draw(st.sampled_from(list(Direction)))
        kind = draw(st.sampled_from(("data", "data", "data", "gap", "fin", "garbage")))
        if kind == "data":
            blob = b"".join(draw(st.lists(st.sampled_from(TCP_SAMPLES), min_size=1, max_size=3)))
            a = draw(st.integers(0, len(blob)))
            b = draw(st.integers(a, len(blob)))
            out.append(("data", direction, blob[a:b] if draw(st.booleans()) else blob, 0))
        elif kind == "garbage":
            out.append(("data", direction, draw(st.binary(max_size=80)), 0))
        elif kind == "gap":
            out.append(("gap", direction, b"", draw(st.integers(1, 3000))))
        else:
            out.append(("fin", direction, b"", 0))
    return out


@FAST
@given(stream_events())
def test_tcp_session_never_raises(events: list[tuple[str, Direction, bytes, int]]) -> None:
    spec = registry.spec("dns")
    assert spec.tcp is not None
    out: list[Transaction] = []
    ctx = SessionContext("dns", protocol_config("dns", send_request=True, send_response=True,
                                                include_authorities=True, include_additionals=True),
                         CONN, out.append, metrics.register("test.dns.fuzz"))
    session = spec.tcp(ctx)
    ts = 10**18
    for kind, direction, data, n in events:
        ts += 1_000_000
        if kind == "data":
            session.feed(direction, data, ts)
        elif kind == "gap":
            session.gap(direction, n, ts)
        else:
            session.fin(direction, ts)
    session.expire(ts + 10**12)
    assert session.pending() == 0
    for txn in out:
        assert txn.type == "dns" and txn.fields["dns"]["type"] in ("query", "answer")


@FAST
@given(st.lists(st.tuples(st.sampled_from(list(Direction)), st.one_of(mutated(), st.binary(max_size=64))),
                max_size=10))
def test_udp_handler_raises_only_parse_error(datagrams: list[tuple[Direction, bytes]]) -> None:
    spec = registry.spec("dns")
    assert spec.udp is not None
    out: list[Transaction] = []
    handler = spec.udp(protocol_config("dns", send_request=True, send_response=True), out.append,
                       metrics.register("test.dns.fuzz"))
    conn = ConnectionInfo(CONN.client, CONN.server, 4, "udp")
    for i, (direction, data) in enumerate(datagrams):
        try:
            handler.datagram(direction, conn, data, 10**18 + i)
        except ParseError:
            pass
    handler.tick(10**18 + 10**13)
    assert handler.pending() == 0
