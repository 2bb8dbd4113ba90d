"""Bounded fuzzing: only ParseError leaves TNS's parsers; sessions survive anything, gaps included."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.errors import ParseError
from agent.protocols.tns import ttc
from agent.protocols.tns.parser import PacketParser
from agent.protocols.tns.plugin import SPEC
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script
from tests.protocols.tns import listener as db
from tests.protocols.tns import wire as w
from tests.protocols.tns.test_session import DESCRIPTOR, oall8, ttc_ano

FAST = settings(max_examples=int(os.environ.get("TNS_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

large = st.booleans()
payloads = st.one_of(
    st.binary(max_size=120), st.builds(oall8, st.binary(max_size=60)), st.just(db.status()),
    st.builds(db.error, st.integers(0, 70000), st.text(max_size=40)),
    st.builds(ttc_ano, st.one_of(st.none(), st.integers(0, 255))))
packets = st.one_of(
    st.builds(w.connect, st.binary(max_size=300)),
    st.builds(w.accept, st.sampled_from([300, 314, 315, 318, 319])),
    st.builds(w.refuse, st.binary(max_size=80)),
    st.builds(w.redirect, st.binary(max_size=80), st.booleans()),
    st.just(w.resend()), st.builds(w.marker, st.integers(0, 3), large),
    st.builds(w.data, payloads, large),
)


@FAST
@given(st.binary(max_size=300), large)
def test_random_bytes_only_raise_parse_error(data: bytes, big: bool) -> None:
    parser = PacketParser(Direction.TO_SERVER)
    parser.set_large(big)
    for chunk in (data, data[::-1]):
        try:
            for packet in parser.feed(chunk, 0):
                ttc.parse_call(packet.body, None)
        except ParseError:
            parser.reset()


@FAST
@given(st.binary(max_size=400), st.one_of(st.none(), st.integers(0, 24)))
def test_ttc_decoders_take_any_bytes(data: bytes, version: int | None) -> None:
    ttc.parse_call(data, version)
    ttc.parse_call(b"\x03\x5e\x01" + data, version)
    ttc.end_of_call(data, version)
    ttc.end_of_call(b"\x04" + data, version)
    ttc.server_protocol(b"\x01" + data)
    ttc.client_field_version(b"\x02" + data)
    ttc.ano_encryption(ttc.ANO_MAGIC + data)


@FAST
@given(session_script(packets, max_size=30), st.integers(0, 9))
def test_sessions_survive_anything(script: list[Any], cut: int) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    config = protocol_config("tns", send_request=True, send_response=True, max_call_bytes=256)
    session = SPEC.tcp(SessionContext("tns", config, conn_info(1521), out.append, Counters("fuzz.tns")))
    play_script(session, [(Direction.TO_SERVER, w.connect(DESCRIPTOR)), *script], cut)
    for txn in out:
        assert txn.type == "tns" and txn.fields["event"]["action"].startswith("tns.")
