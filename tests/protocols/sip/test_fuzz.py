"""Bounded fuzzing: only ParseError leaves the SIP parsers; the TCP session survives any stream with gaps."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.sip import plugin as P
from agent.protocols.sip.fields import message_fields
from agent.protocols.sip.parser import parse_datagram
from agent.protocols.sip.uri import parse_name_addr, parse_uri
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.sessions import conn_info, protocol_config
from tests.protocols.sip.messages import INVITE, REGISTER, REGISTER_OK, TRYING

FAST = settings(max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SAMPLES = [INVITE, TRYING, REGISTER, REGISTER_OK]
CONN = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 5060), Endpoint(ip_bytes("10.0.0.2"), 5060), 4, "udp")


def datagram(data: bytes) -> None:
    out: list[Transaction] = []
    handler = P.SPEC.udp(protocol_config("sip"), out.append, metrics.Counters("fuzz.sip"))  # type: ignore[misc]
    try:
        handler.datagram(Direction.TO_SERVER, CONN, data, 1)
    except ParseError:
        return
    assert len(out) == 1


@FAST
@given(st.binary(max_size=400))
def test_random_datagrams(data: bytes) -> None:
    datagram(data)


@FAST
@given(st.sampled_from(SAMPLES), st.integers(0, 700), st.binary(min_size=1, max_size=12))
def test_mutated_messages(base: bytes, at: int, patch: bytes) -> None:
    datagram(base[:at] + patch + base[at + len(patch):])
    datagram(base[:at])


header_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)


@FAST
@given(header_text, header_text, header_text, st.text(max_size=80))
def test_random_header_values(from_: str, to: str, auth: str, body: str) -> None:
    parse_uri(from_)
    parse_name_addr(to)
    data = (f"INVITE {from_ or 'x'} SIP/2.0\r\nFrom: {from_}\r\nTo: {to}\r\nContact: {to}\r\n"
            f"Authorization: {auth}\r\nP-Associated-URI: {to}\r\nCSeq: {auth}\r\nContent-Type: application/sdp\r\n"
            f"\r\n{body}").encode("utf-8", "surrogatepass")
    try:
        msg = parse_datagram(data)
    except ParseError:
        return
    message_fields(msg, parse_authorization=True, parse_body=True, keep_original=True)


step = st.tuples(st.sampled_from(list(Direction)),
                 st.one_of(st.binary(max_size=120), st.integers(1, 400), st.sampled_from(SAMPLES),
                           st.just(b"\r\n"), st.just(None)))


@FAST
@given(st.lists(step, max_size=14))
def test_random_tcp_streams(steps: list[tuple[Direction, bytes | int | None]]) -> None:
    out: list[Transaction] = []
    ctx = SessionContext("sip", protocol_config("sip", transport_protocol="tcp"), conn_info(5060), out.append,
                         metrics.Counters("fuzz.sip"))
    session = P.SipSession(ctx)
    for direction, item in steps:
        if item is None:
            session.fin(direction, 1)
        elif isinstance(item, int):
            session.gap(direction, item, 1)
        else:
            try:
                session.feed(direction, item, 1)
            except ParseError as exc:
                session.recover(direction, exc, 1)
    session.expire(2)
