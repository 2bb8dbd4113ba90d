"""Bounded fuzzing: only ParseError leaves the CQL parser; sessions survive anything, gaps included."""

from __future__ import annotations

import os
import struct
from typing import Any

import cramjam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.cassandra.body import OP_NAMES
from agent.protocols.cassandra.parser import CqlParser, ParserSettings
from agent.protocols.cassandra.plugin import SPEC
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script
from tests.protocols.cassandra import frames as f

FAST = settings(max_examples=int(os.environ.get("CASSANDRA_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

bodies = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=30).map(f.query),
    st.builds(lambda kind, rest: f.i32(kind) + rest, st.integers(0, 6), st.binary(max_size=40)),
    st.builds(lambda code, msg, rest: f.i32(code) + f.string(msg) + rest,
              st.sampled_from([0x1000, 0x1100, 0x1200, 0x1300, 0x1400, 0x1500, 0x2400, 0x2500, 0x2300]),
              st.text(max_size=10), st.binary(max_size=20)),
)
frames = st.builds(
    lambda op, body, stream, flags, version, response, compress:
        f.frame(op, bytes(cramjam.snappy.compress_raw(body)) if compress else body, stream=stream,
                flags=flags | (1 if compress else 0), version=version, response=response),
    st.sampled_from(sorted(OP_NAMES)), bodies, st.integers(0, 127), st.sampled_from([0, 2, 4, 8, 14]),
    st.integers(1, 4), st.booleans(), st.booleans())


@FAST
@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_valid_frames_parse_at_any_split(items: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = CqlParser(Direction.TO_SERVER, ParserSettings(compressor="snappy"))
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut], 0)
        last = cut
    assert [frame.size for frame in out] == [len(item) for item in items]
    assert parser.idle


@FAST
@given(st.binary(max_size=400), st.sampled_from(["", "snappy"]))
def test_random_bytes_only_raise_parse_error(data: bytes, compressor: str) -> None:
    parser = CqlParser(Direction.TO_CLIENT, ParserSettings(compressor=compressor))
    for chunk in (data, data[::-1], struct.pack(">BBhBI", 0x84, 0, 0, 8, len(data)) + data):
        try:
            parser.feed(chunk, 0)
        except ParseError:
            parser.reset()


steps = session_script(frames)


@FAST
@given(steps, st.sampled_from([(), ("QUERY",), ("RESULT", "OPTIONS")]), st.integers(0, 12))
def test_sessions_survive_anything(script: list[Any], ignored: tuple[str, ...], cut: int) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    config = protocol_config("cassandra", ignored_ops=list(ignored), compressor="snappy")
    session = SPEC.tcp(SessionContext("cassandra", config, conn_info(9042), out.append, Counters("fuzz.cassandra")))
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "cassandra" and txn.server_bytes and txn.server_bytes >= 8
