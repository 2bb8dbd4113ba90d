"""Bounded fuzzing: only ParseError leaves the memcache parser; TCP sessions and the UDP handler never raise."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.memcache.fields import build_transaction
from agent.protocols.memcache.parser import McParser, ParserOptions
from agent.protocols.memcache.plugin import SPEC
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, protocol_config
from tests.protocols.memcache.messages import binary, udp_frame

FAST = settings(max_examples=int(os.environ.get("MEMCACHE_FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DIRECTIONS = st.sampled_from([Direction.TO_SERVER, Direction.TO_CLIENT])
TEXT = st.sampled_from([
    b"get a b\r\n", b"set k 0 0 5\r\nvalue\r\n", b"set k 0 0 5 noreply\r\nvalue\r\n", b"incr k 5\r\n", b"quit\r\n",
    b"stats slabs\r\n", b"slabs reassign -1 2\r\n", b"VALUE k 0 3 7\r\nabc\r\n", b"END\r\n", b"STORED\r\n",
    b"STAT pid 1\r\n", b"12\r\n", b"CLIENT_ERROR bad\r\n", b"delete k noreply\r\n", b"cas k 0 0 1 9\r\nx\r\n",
])
BINARY = st.builds(lambda op, request, key, extras, value, status, opaque: binary(
    op, request=request, key=key, extras=extras, value=value, status=status, opaque=opaque),
    st.integers(0, 0x48), st.booleans(), st.binary(max_size=6), st.binary(max_size=20), st.binary(max_size=12),
    st.integers(0, 0x90), st.integers(0, 3))
CHUNK = st.one_of(TEXT, BINARY, st.binary(max_size=60),
                  st.tuples(st.one_of(TEXT, BINARY), st.integers(1, 40)).map(lambda t: t[0][:-t[1]] or t[0]))


def render(out: list[Transaction]) -> None:
    for txn in out:
        assert txn.type == "memcache" and txn.fields["memcache"]["protocol_type"] in ("text", "binary")


@FAST
@given(st.lists(CHUNK, max_size=8), DIRECTIONS, st.integers(-1, 2))
def test_parser_only_raises_parse_error(chunks: list[bytes], direction: Direction, max_values: int) -> None:
    parser = McParser(direction, ParserOptions(max_values=max_values, parse_unknown=max_values > 0))
    try:
        for chunk in chunks:
            for msg in parser.feed(chunk, 0):
                if msg.is_request:
                    build_transaction(conn_info(11211), msg, None)
                else:
                    build_transaction(conn_info(11211), None, msg)
    except ParseError:
        pass


@FAST
@given(st.lists(st.one_of(st.tuples(DIRECTIONS, CHUNK), st.tuples(DIRECTIONS, st.integers(1, 100)),
                          st.tuples(DIRECTIONS, st.none())), max_size=20), st.booleans())
def test_tcp_sessions_survive_anything(script: list[Any], parse_unknown: bool) -> None:
    out: list[Transaction] = []
    assert SPEC.tcp is not None
    session = SPEC.tcp(SessionContext("memcache", protocol_config("memcache", parseunknown=parse_unknown,
                                                                   maxvalues=-1),
                                      conn_info(11211), out.append, Counters("fuzz.memcache")))
    for ts, (direction, item) in enumerate(script):
        if item is None:
            session.fin(direction, ts)
        elif isinstance(item, int):
            session.gap(direction, item, ts)
        else:
            try:
                session.feed(direction, item, ts)
            except ParseError as exc:
                session.recover(direction, exc, ts)
    session.expire(10**12)
    assert session.pending() == 0
    render(out)


@FAST
@given(st.lists(st.tuples(DIRECTIONS, st.integers(0, 3), st.integers(0, 3), st.integers(0, 4),
                          st.one_of(CHUNK, st.binary(max_size=30))), max_size=20))
def test_udp_handler_survives_anything(datagrams: list[tuple[Direction, int, int, int, bytes]]) -> None:
    out: list[Transaction] = []
    assert SPEC.udp is not None
    handler = SPEC.udp(protocol_config("memcache", udptransactiontimeout="1ms"), out.append,
                       Counters("fuzz.memcache.udp"))
    for ts, (direction, request_id, seq, count, payload) in enumerate(datagrams):
        try:
            handler.datagram(direction, conn_info(11211, "udp"), udp_frame(request_id, seq, count, payload),
                             ts * 100_000)
        except ParseError:
            pass
        handler.tick(ts * 100_000)
    handler.tick(10**15)
    assert handler.pending() == 0
    render(out)
