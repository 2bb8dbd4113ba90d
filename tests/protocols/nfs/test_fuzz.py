"""Bounded fuzzing of the NFS session: only ParseError leaves it (handled as the dispatcher does), and
random gaps and splits never raise anything else."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.nfs import plugin as P
from agent.protocols.nfs.parser import RecordFramer, RpcCall, decode
from agent.protocols.nfs.procedures import main_v4_operation, request_info, unix_credentials
from agent.protocols.nfs.xdr import Xdr
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.replay import corpus
from tests.helpers.sessions import conn_info, protocol_config
from tests.protocols.nfs.messages import call, compound, record, reply, tcp_payloads, u32

FAST = settings(max_examples=int(os.environ.get("NFS_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SAMPLES = [data for pcap in ("nfs_v3.pcap", "nfs_v4.pcap", "nfs4_close.pcap", "nfsv42_clone.pcap")
           for _, data in tcp_payloads(corpus(pcap))] + [
    record(call(1, 4, 1, compound("x", 1, (53, bytes(32)), (22, u32(4) + bytes(4)), (26, bytes(40)))), 3),
    record(reply(1, u32(0) + bytes(20)), 2)]


def drive(steps: list[tuple[Direction, bytes | int]]) -> list[Transaction]:
    out: list[Transaction] = []
    ctx = SessionContext("nfs", protocol_config("nfs"), conn_info(2049), out.append, metrics.Counters("fuzz.nfs"))
    session = P.NfsSession(ctx)
    ts = 0
    for direction, item in steps:
        ts += 1_000_000
        if isinstance(item, int):
            session.gap(direction, item, ts)
            continue
        try:
            session.feed(direction, item, ts)
        except ParseError as exc:
            session.recover(direction, exc, ts)
    session.fin(Direction.TO_SERVER, ts)
    session.expire(ts + 10**12)
    assert session.pending() == 0
    return out


step = st.tuples(st.sampled_from(list(Direction)),
                 st.one_of(st.binary(max_size=200), st.integers(1, 5000), st.sampled_from(SAMPLES)))


@FAST
@given(st.lists(step, max_size=12))
def test_random_streams(steps: list[tuple[Direction, bytes | int]]) -> None:
    drive(steps)


@FAST
@given(st.sampled_from(SAMPLES), st.integers(0, 300), st.binary(min_size=1, max_size=8), st.integers(1, 40))
def test_mutated_records(base: bytes, at: int, patch: bytes, cut: int) -> None:
    mutated = base[:at] + patch + base[at + len(patch):]
    drive([(Direction.TO_SERVER, mutated[:cut]), (Direction.TO_SERVER, mutated[cut:]),
           (Direction.TO_CLIENT, mutated)])


@FAST
@given(st.binary(max_size=300))
def test_decoders_on_random_heads(data: bytes) -> None:
    framer = RecordFramer(Direction.TO_SERVER)
    try:
        records = framer.feed(record(u32(7, 0, 2, 100003, 4, 1) + data), 0)
    except ParseError:
        return
    for rec in records:
        try:
            msg = decode(rec, Direction.TO_SERVER)
        except ParseError:
            continue
        if isinstance(msg, RpcCall):
            request_info(msg)
            unix_credentials(msg.cred)
    main_v4_operation(Xdr(data))
