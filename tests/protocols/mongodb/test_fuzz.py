"""Bounded fuzzing: only ParseError leaves the MongoDB parser; sessions survive garbage, truncation and gaps."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.mongodb.parser import MongoParser
from agent.protocols.mongodb.plugin import SPEC
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config
from tests.protocols.mongodb.messages import compressed, fixture, message, op_msg, op_query, op_reply

FAST = settings(max_examples=int(os.environ.get("MONGODB_FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DIRECTIONS = st.sampled_from([Direction.TO_SERVER, Direction.TO_CLIENT])
OPCODES = st.sampled_from([1, 1000, 2001, 2002, 2004, 2005, 2006, 2007, 2012, 2013, 2269])
VALID = st.sampled_from([
    fixture("1req"), fixture("1res"), op_query("a.$cmd", {"isMaster": 1.0}, limit=-1),
    op_reply([{"ok": 1}, {"x": [1, 2]}]), op_msg({"insert": "c", "$db": "d"}, sequences=(("documents", [{}]),)),
    compressed(op_msg({"find": "c", "$db": "d"}), 2), compressed(op_msg({"find": "c"}), 3),
    compressed(op_msg({"find": "c"}), 1),
])


def mutate(data: bytes, position: int, value: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([value]) + data[position + 1:]


MESSAGES = st.one_of(
    VALID,
    st.builds(mutate, VALID, st.integers(0, 400), st.integers(0, 255)),
    st.builds(message, OPCODES, st.binary(max_size=120),
              st.integers(-3, 3), st.integers(-3, 3)),
    st.binary(max_size=80),
)


@FAST
@given(st.lists(MESSAGES, max_size=6), DIRECTIONS, st.booleans())
def test_parser_only_raises_parse_error(messages: list[bytes], direction: Direction, want: bool) -> None:
    parser = MongoParser(direction, want_documents=want)
    for data in messages:
        try:
            parser.feed(data, 0)
        except ParseError:
            parser.reset()


@FAST
@given(st.lists(st.one_of(st.tuples(DIRECTIONS, MESSAGES), st.tuples(DIRECTIONS, st.integers(1, 600)),
                          st.tuples(DIRECTIONS, st.none())), max_size=15),
       st.integers(0, 20), st.booleans())
def test_sessions_survive_anything(script: list[Any], cut: int, send: bool) -> None:
    out: list[Transaction] = []
    assert SPEC.tcp is not None
    session = SPEC.tcp(SessionContext("mongodb", protocol_config("mongodb", send_request=send, send_response=send),
                                      conn_info(27017), out.append, Counters("fuzz.mongodb")))
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "mongodb" and isinstance(txn.fields["mongodb"], dict)


@FAST
@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**31 - 1))
def test_header_lengths(length: int, opcode: int) -> None:
    parser = MongoParser(Direction.TO_SERVER)
    try:
        parser.feed(struct.pack("<iiii", length, 1, 0, opcode) + b"\x00" * 32, 0)
    except ParseError as exc:
        # The first header is refused only for its length; the zero padding after it may be refused too.
        assert exc.offset > 0 or length < 16 or length > 48_000_000
