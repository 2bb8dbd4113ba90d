"""Bounded fuzzing: arbitrary, mutated, gapped and truncated streams raise nothing but ParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocols.mysql import values
from agent.protocols.mysql.parser import MysqlParser
from agent.transport.session import ParseError
from tests.helpers.sessions import C2S, S2C, Step, run_stream
from tests.protocols.mysql import messages as m

SEEDS = [m.INSERT_REQUEST, m.INSERT_OK, m.ERROR_RESPONSE, m.DATA_RESPONSE_1 + m.DATA_RESPONSE_2, m.PREPARE_REQUEST,
         m.PREPARE_RESPONSE, m.EXECUTE_REQUEST, m.EXECUTE_RESPONSE, m.GAP_RESPONSE,
         *(m.h(x) for _, x in m.CONNECTION[:6])]

chunks = st.one_of(st.binary(max_size=300), st.sampled_from(SEEDS),
                   st.tuples(st.sampled_from(SEEDS), st.integers(0, 400), st.binary(min_size=1, max_size=4)).map(
                       lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):]))
step = st.tuples(st.booleans(), chunks, st.integers(0, 3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=12), st.booleans(), st.booleans())
def test_session_survives_anything(items: list[tuple[bool, bytes, int]], compress: bool, everything: bool) -> None:
    steps = []
    for i, (to_server, data, kind) in enumerate(items):
        direction = C2S if to_server else S2C
        if kind == 3:
            steps.append(Step(direction, gap=len(data) + 1, ts_ns=i))
        else:
            if compress and kind == 2:
                data = m.compress(data, 0)
            steps.append(Step(direction, data, ts_ns=i, fin=kind == 1 and i == len(items) - 1))
    options = {"send_response": True, "send_request": True, "all_commands": everything, "max_rows": 3}
    run_stream("mysql", steps, server_port=3306, options=options, split="random", seed=len(items))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 8), st.lists(st.tuples(st.integers(0, 255), st.booleans()),
                                                           max_size=8))
def test_value_decoders_never_raise(body: bytes, num_params: int, types: list[tuple[int, bool]]) -> None:
    values.execute_params(body, num_params, tuple(types) or None)
    values.binary_row(body, [(t, 0x20 if u else 0) for t, u in types])
    values.text_row(body)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=20))
def test_parser_raises_only_parse_error(items: list[tuple[bool, bytes]]) -> None:
    parser = MysqlParser(max_rows=2, keep_response=True)
    for to_server, data in items:
        try:
            parser.feed(C2S if to_server else S2C, data, 0)
        except ParseError:
            pass
