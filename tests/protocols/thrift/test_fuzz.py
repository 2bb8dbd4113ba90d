"""Bounded fuzzing: only ParseError leaves the Thrift parser; sessions survive anything, gaps included."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.thrift.parser import ParserSettings, ThriftParser
from agent.protocols.thrift.plugin import SPEC
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script
from tests.protocols.thrift import messages as m

FAST = settings(max_examples=int(os.environ.get("THRIFT_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# A value is (type, encoded bytes).
scalars = st.one_of(
    st.booleans().map(lambda b: (m.T_BOOL, bytes([b]))),
    st.integers(0, 255).map(lambda b: (m.T_BYTE, bytes([b]))),
    st.floats(allow_nan=True).map(lambda f: (m.T_DOUBLE, struct.pack(">d", f))),
    st.integers(-(2**15), 2**15 - 1).map(lambda v: (m.T_I16, struct.pack(">h", v))),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (m.T_I32, struct.pack(">i", v))),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (m.T_I64, struct.pack(">q", v))),
    st.binary(max_size=30).map(lambda b: (m.T_STRING, m.string(b))),
)


def _list(kind: int, items: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    etype = items[0][0] if items else m.T_I32
    same = [payload for t, payload in items if t == etype]
    return kind, struct.pack(">bi", etype, len(same)) + b"".join(same)


def _map(pairs: list[tuple[tuple[int, bytes], tuple[int, bytes]]]) -> tuple[int, bytes]:
    ktype = pairs[0][0][0] if pairs else m.T_STRING
    vtype = pairs[0][1][0] if pairs else m.T_I32
    kept = [k[1] + v[1] for k, v in pairs if k[0] == ktype and v[0] == vtype]
    return m.T_MAP, struct.pack(">bbi", ktype, vtype, len(kept)) + b"".join(kept)


def _struct(fields: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    return m.T_STRUCT, m.struct_(*(m.field(t, i, payload) for i, (t, payload) in enumerate(fields, 1)))


values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4).map(lambda items: _list(m.T_LIST, items)),
    st.lists(children, max_size=4).map(lambda items: _list(m.T_SET, items)),
    st.lists(st.tuples(children, children), max_size=3).map(_map),
    st.lists(children, max_size=4).map(_struct),
), max_leaves=15)

calls = st.builds(
    lambda name, args, mtype, seqid, strict: m.message(name, _struct(args)[1], mtype, seqid, strict),
    st.sampled_from(["ping", "add", "echo", "x" * 40]), st.lists(values, max_size=5), st.sampled_from([1, 2, 3, 4]),
    st.integers(0, 2**31 - 1), st.booleans())


@FAST
@given(st.lists(calls, min_size=1, max_size=4), st.booleans(), st.data())
def test_valid_messages_parse_at_any_split(msgs: list[bytes], framed: bool, data: st.DataObject) -> None:
    stream = b"".join(m.framed(x) if framed else x for x in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = ThriftParser(Direction.TO_SERVER, ParserSettings(framed=framed))
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut], cut)
        last = cut
    assert len(out) == len(msgs)
    assert [msg.size for msg in out] == [len(x) for x in msgs]
    assert parser.idle


@FAST
@given(st.binary(max_size=400), st.booleans(), st.integers(0, 3))
def test_random_bytes_only_raise_parse_error(data: bytes, framed: bool, limit: int) -> None:
    parser = ThriftParser(Direction.TO_CLIENT, ParserSettings(framed=framed, collection_max_size=limit,
                                                              string_max_size=limit, drop_after_n_struct_fields=4))
    for chunk in (data, data[::-1], bytes.fromhex("800100020000000470696e67") + data):
        try:
            parser.feed(chunk, 0)
        except ParseError:
            parser.reset()


steps = session_script(calls)


@FAST
@given(steps, st.sampled_from(["socket", "framed"]), st.booleans(), st.integers(0, 5))
def test_sessions_survive_anything(script: list[Any], transport: str, capture_reply: bool, cut: int) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    config = protocol_config("thrift", transport_type=transport, capture_reply=capture_reply,
                             send_request=True, send_response=True)
    session = SPEC.tcp(SessionContext("thrift", config, conn_info(9090), out.append, Counters("fuzz.thrift")))
    if transport == "framed":
        script = [(d, m.framed(i) if isinstance(i, bytes) and i[:2] == b"\x80\x01" else i) for d, i in script]
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "thrift" and txn.fields["query"].startswith(txn.fields["method"])
