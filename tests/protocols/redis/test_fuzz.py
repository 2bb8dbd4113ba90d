"""Bounded fuzzing: only ParseError leaves the RESP parser; sessions survive anything, gaps included."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.redis.parser import RespParser
from agent.protocols.redis.plugin import SPEC
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script

FAST = settings(max_examples=int(os.environ.get("REDIS_FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def encode(value: Any) -> bytes:
    """A RESP3 encoding of a generated value."""
    kind, payload = value
    if kind == "bulk":
        return b"$%d\r\n%s\r\n" % (len(payload), payload)
    if kind == "simple":
        return b"+" + payload + b"\r\n"
    if kind == "error":
        return b"-" + payload + b"\r\n"
    if kind == "int":
        return b":%d\r\n" % payload
    if kind == "null":
        return b"_\r\n"
    if kind == "nil":
        return b"$-1\r\n"
    if kind == "bool":
        return b"#t\r\n" if payload else b"#f\r\n"
    if kind == "verbatim":
        body = b"txt:" + payload
        return b"=%d\r\n%s\r\n" % (len(body), body)
    if kind == "map":
        return b"%%%d\r\n" % len(payload) + b"".join(encode(k) + encode(v) for k, v in payload)
    prefix = {"array": b"*", "set": b"~", "push": b">"}[kind]
    return prefix + b"%d\r\n" % len(payload) + b"".join(encode(v) for v in payload)


line = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
scalars = st.one_of(
    st.tuples(st.just("bulk"), st.binary(max_size=40)),
    st.tuples(st.just("simple"), line),
    st.tuples(st.just("error"), line),
    st.tuples(st.just("int"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("null"), st.none()),
    st.tuples(st.just("nil"), st.none()),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("verbatim"), st.binary(max_size=20)),
)
values = st.recursive(scalars, lambda children: st.one_of(
    st.tuples(st.sampled_from(["array", "set", "push"]), st.lists(children, max_size=4)),
    st.tuples(st.just("map"), st.lists(st.tuples(children, children), max_size=3)),
), max_leaves=20)


@FAST
@given(st.lists(values, min_size=1, max_size=5), st.data())
def test_valid_replies_parse_at_any_split(replies: list[Any], data: st.DataObject) -> None:
    stream = b"".join(encode(v) for v in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = RespParser(Direction.TO_CLIENT)
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut], 0)
        last = cut
    assert len(out) == len(replies)
    assert sum(m.size for m in out) == len(stream)
    assert parser.idle
    # The one-piece parse (which takes the fast path where it can) renders exactly as the split one.
    whole = RespParser(Direction.TO_CLIENT).feed(stream, 0)
    assert [(m.text, m.args, m.nargs, m.kind, m.is_error) for m in whole] == [
        (m.text, m.args, m.nargs, m.kind, m.is_error) for m in out]


@FAST
@given(st.binary(max_size=400), st.sampled_from([Direction.TO_SERVER, Direction.TO_CLIENT]))
def test_random_bytes_only_raise_parse_error(data: bytes, direction: Direction) -> None:
    parser = RespParser(direction)
    try:
        parser.feed(data, 0)
        parser.feed(data[::-1], 1)
    except ParseError:
        pass


commands = st.lists(st.binary(min_size=1, max_size=10), min_size=1, max_size=4).map(
    lambda args: b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
steps = session_script(values.map(encode), commands, junk_size=80, gap_max=5000, max_size=25)


@FAST
@given(steps, st.integers(1, 3), st.integers(0, 3))
def test_sessions_survive_anything(script: list[Any], max_messages: int, cut: int) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    session = SPEC.tcp(SessionContext("redis", protocol_config("redis", queue_max_messages=max_messages),
                                      conn_info(6379), out.append, Counters("fuzz.redis")))
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "redis" and isinstance(txn.fields["query"], str)


commands = st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=5), min_size=1, max_size=6)


@FAST
@given(commands)
def test_requests_render_the_same_at_any_split(cmds: list[list[bytes]]) -> None:
    stream = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c) for c in cmds)
    whole = RespParser(Direction.TO_SERVER).feed(stream, 0)
    parser = RespParser(Direction.TO_SERVER)
    bytewise = [m for i in range(len(stream)) for m in parser.feed(stream[i:i + 1], 0)]
    assert [(m.text, m.args, m.nargs, m.size) for m in whole] == [(m.text, m.args, m.nargs, m.size) for m in bytewise]
    assert [m.nargs for m in whole] == [len(c) for c in cmds]
