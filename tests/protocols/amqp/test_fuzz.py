"""Bounded fuzzing: only ParseError leaves the AMQP parser; sessions survive anything, gaps included."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.amqp import tables as fields
from agent.protocols.amqp.methods import METHODS
from agent.protocols.amqp.parser import AmqpParser, ParserSettings
from agent.protocols.amqp.plugin import SPEC
from agent.protocols.base import SessionContext
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script
from tests.protocols.amqp import frames as f

FAST = settings(max_examples=int(os.environ.get("AMQP_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

names = st.text(max_size=12).filter(lambda s: len(s.encode()) < 256)
scalar_values = st.one_of(
    st.booleans().map(lambda b: b"t" + bytes([b])),
    st.integers(-128, 127).map(lambda v: b"b" + struct.pack(">b", v)),
    st.integers(0, 2**32 - 1).map(lambda v: b"I" + struct.pack(">I", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: b"L" + struct.pack(">q", v)),
    st.floats(width=32).map(lambda v: b"f" + struct.pack(">f", v)),
    st.floats().map(lambda v: b"d" + struct.pack(">d", v)),
    st.binary(max_size=20).map(lambda b: b"S" + f.longstr(b)),
    st.binary(max_size=10).map(lambda b: b"x" + struct.pack(">I", len(b)) + b),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(lambda t: b"D" + struct.pack(">BI", *t)),
    st.integers(0, 2**40).map(lambda v: b"T" + struct.pack(">Q", v)),
    st.just(b"V"),
)
table_values = st.recursive(scalar_values, lambda children: st.one_of(
    st.lists(st.tuples(names, children), max_size=4).map(
        lambda entries: b"F" + f.table(b"".join(f.shortstr(k) + v for k, v in entries))),
    st.lists(children, max_size=4).map(lambda items: b"A" + f.table(b"".join(items))),
), max_leaves=12)
tables = st.lists(st.tuples(names, table_values), max_size=5).map(
    lambda entries: f.table(b"".join(f.shortstr(k) + v for k, v in entries)))


@FAST
@given(tables)
def test_valid_tables_decode_whole(raw: bytes) -> None:
    value, end = fields.table(raw, 0)
    assert end == len(raw) and isinstance(value, dict)


@FAST
@given(st.binary(max_size=200))
def test_table_bytes_only_raise_field_error(raw: bytes) -> None:
    try:
        fields.table(raw, 0)
        fields.properties(raw, 0)
    except fields.FieldError:
        pass


method_frames = st.builds(
    lambda key, args, channel: f.method(channel, key[0], key[1], args),
    st.sampled_from(sorted(METHODS)), st.binary(max_size=40), st.integers(0, 3))
messages = st.one_of(
    method_frames,
    st.builds(lambda channel, queue, args: f.queue_declare(channel, queue, 0, args), st.integers(0, 3),
              st.text(max_size=10), tables),
    st.builds(lambda channel, data: f.publish(channel, "ex", "key", data), st.integers(0, 3),
              st.binary(max_size=50)),
    st.builds(f.body, st.integers(0, 3), st.binary(max_size=20)),
)


@FAST
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_valid_frames_parse_at_any_split(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    whole = AmqpParser(Direction.TO_SERVER, ParserSettings()).feed(stream, 0)
    parser = AmqpParser(Direction.TO_SERVER, ParserSettings())
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut], 0)
        last = cut
    assert repr(out) == repr(whole)  # repr: NaN values compare unequal
    assert not parser.buf.unread


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    parser = AmqpParser(Direction.TO_CLIENT, ParserSettings(max_body_length=3))
    for chunk in (data, data[::-1], b"\x01\x00\x01" + data):
        try:
            parser.feed(chunk, 0)
        except ParseError:
            parser.reset()


steps = session_script(messages)


@FAST
@given(steps, st.booleans(), st.integers(0, 9))
def test_sessions_survive_anything(script: list[Any], hide: bool, cut: int) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    config = protocol_config("amqp", hide_connection_information=hide, send_request=True, send_response=True)
    session = SPEC.tcp(SessionContext("amqp", config, conn_info(5672), out.append, Counters("fuzz.amqp")))
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "amqp" and txn.fields["event"]["action"] == "amqp." + txn.fields["method"]

