"""Bounded fuzzing: only ParseError may leave the DHCPv4 parser, and the handler never raises anything else."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics
from agent.protocols.dhcpv4 import fields as F
from agent.protocols.dhcpv4 import plugin as P
from agent.protocols.dhcpv4.parser import parse
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.sessions import protocol_config
from tests.protocols.dhcpv4.messages import ACK, COOKIE, REQUEST, bootp

FAST = settings(max_examples=int(os.environ.get("DHCP_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
CONN = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 68), Endpoint(ip_bytes("10.0.0.2"), 67), 4, "udp")


def run(data: bytes) -> None:
    out: list[object] = []
    handler = P.SPEC.udp(protocol_config("dhcpv4"), out.append, metrics.Counters("fuzz.dhcpv4"))  # type: ignore[misc]
    for direction in Direction:
        try:
            handler.datagram(direction, CONN, data, 1)
        except ParseError:
            pass


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    run(data)


@FAST
@given(st.sampled_from([REQUEST, ACK]), st.integers(0, 320), st.binary(max_size=8))
def test_mutated_real_messages(base: bytes, at: int, patch: bytes) -> None:
    run(base[:at] + patch + base[at + len(patch):])
    run(base[:at])


@FAST
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=12), st.binary(max_size=20),
       st.integers(0, 3))
def test_random_options(options: list[tuple[int, bytes]], tail: bytes, overload: int) -> None:
    raw = b"".join(bytes([code, len(value)]) + value for code, value in options)
    data = bootp(2, 7, options=bytes([52, 1, overload]) + raw + tail, end=False,
                 file=raw[:128], sname=raw[:64])
    try:
        msg = parse(data)
    except ParseError:
        return
    assert data[236:240] == COOKIE
    F.dhcp_fields(msg)
    run(data)
