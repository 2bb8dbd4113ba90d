"""Bounded fuzzing: arbitrary, mutated, gapped and truncated streams raise nothing but ParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocols.pgsql import values
from agent.protocols.pgsql.parser import PgsqlParser
from agent.transport.session import ParseError
from tests.helpers.sessions import C2S, S2C, Step, run_stream
from tests.protocols.pgsql import messages as m

SEEDS = [m.SIMPLE_REQUEST, m.DATA_RESPONSE, m.RESPONSE_4_ROWS, m.THREE_RESPONSES, m.ERROR_RESPONSE, m.GAP_RESPONSE,
         m.parse("select $1", "s", (23,)) + m.bind([b"1"], "s", formats=(1,)) + m.describe() + m.execute() + m.SYNC,
         m.PARSE_COMPLETE + m.BIND_COMPLETE + m.row_description("a") + m.data_row(b"1") + m.complete("SELECT 1"),
         m.READY, m.SSL_REQUEST, b"N", m.startup(), m.msg("G", b"\0\0\0"), m.msg("d", b"x\n"), m.msg("c", b"")]

chunks = st.one_of(st.binary(max_size=300), st.sampled_from(SEEDS),
                   st.tuples(st.sampled_from(SEEDS), st.integers(0, 300), st.binary(min_size=1, max_size=4)).map(
                       lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):]))
step = st.tuples(st.booleans(), chunks, st.integers(0, 3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=12))
def test_session_survives_anything(items: list[tuple[bool, bytes, int]]) -> None:
    steps = []
    for i, (to_server, data, kind) in enumerate(items):
        direction = C2S if to_server else S2C
        if kind == 3:
            steps.append(Step(direction, gap=len(data) + 1, ts_ns=i))
        else:
            steps.append(Step(direction, data, ts_ns=i, fin=kind == 1 and i == len(items) - 1))
    options = {"send_response": True, "send_request": True, "max_rows": 3}
    run_stream("pgsql", steps, server_port=5432, options=options, split="random", seed=len(items))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.integers(0, 4000), st.binary(max_size=20))
def test_helpers_never_raise(sql: str, oid: int, raw: bytes) -> None:
    pieces = values.split_statements(sql)
    assert all(piece == piece.strip() and piece for piece in pieces)
    values.binary_text(oid, raw)
    values.binary_text(1700, raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=20))
def test_parser_raises_only_parse_error(items: list[tuple[bool, bytes]]) -> None:
    parser = PgsqlParser()
    parser.rows_per_result = 2
    for to_server, data in items:
        try:
            parser.feed(C2S if to_server else S2C, data, 0)
        except ParseError:
            pass
