"""NFS calls and replies from literal bytes, fed whole, byte by byte and in random pieces.

The corpus exchanges (NFSv3 LOOKUP, NFSv4.1 READDIR) are replayed from their
own bytes; the rest is built field by field in `messages`.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.nfs import fields as F
from agent.protocols.nfs import plugin as P
from agent.protocols.nfs.parser import HEAD_LIMIT, MAX_FRAGMENT_LEN, RESYNC_WINDOW, RecordFramer, decode
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.replay import corpus
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config, run_stream
from tests.protocols.nfs.messages import (
    CLOSE,
    GETATTR,
    GETFH,
    LOOKUP,
    MOUNT,
    OPEN,
    PUTFH,
    PUTROOTFH,
    READDIR,
    RENEW,
    SAVEFH,
    SEQUENCE,
    auth_unix,
    call,
    compound,
    denied,
    opaque,
    record,
    reply,
    tcp_payloads,
    u32,
)

MS = 1_000_000
T0 = 1_600_000_000 * 10**9


def steps_from(pcap: str) -> list[Step]:
    return [Step(C2S if up else S2C, data, T0 + i * MS) for i, (up, data) in enumerate(tcp_payloads(corpus(pcap)))]


def exchange(request: bytes, response: bytes | None, **kwargs: Any) -> list[Transaction]:
    steps = [Step(C2S, request, T0)]
    if response is not None:
        steps.append(Step(S2C, response, T0 + 3 * MS))
    return assert_same_three_ways("nfs", steps, server_port=2049, **kwargs)


def session(**options: Any) -> tuple[Any, list[Transaction], metrics.Counters]:
    out: list[Transaction] = []
    counters = metrics.Counters("test.nfs")
    ctx = SessionContext("nfs", protocol_config("nfs", **options), conn_info(2049), out.append, counters)
    return P.NfsSession(ctx), out, counters


def feed(sess: Any, direction: Direction, data: bytes, ts: int) -> None:
    try:
        sess.feed(direction, data, ts)
    except ParseError as exc:
        sess.recover(direction, exc, ts)


# -- the corpus exchanges --------------------------------------------------------------

def test_v3_lookup_noent() -> None:
    (txn,) = assert_same_three_ways("nfs", steps_from("nfs_v3.pcap"), server_port=2049)
    assert (txn.type, txn.status, txn.protocol_override) == ("nfs", "OK", "nfsv3")
    assert (txn.client_bytes, txn.server_bytes) == (116, 32)
    assert (txn.ts_ns, txn.end_ns) == (T0, T0 + MS)
    f = txn.fields
    assert f["rpc"] == {"xid": "a19a75d0", "auth_flavor": "unix", "status": "success",
                        "cred": {"stamp": 4639510, "machinename": "ani", "uid": 0, "gid": 0, "gids": [0]}}
    assert f["nfs"] == {"version": 3, "opcode": "LOOKUP", "status": "NFSERR_NOENT"}
    assert f["event"] == {"action": "nfs.LOOKUP"}
    assert (f["user"], f["group"], f["host"]) == ({"id": 0}, {"id": 0}, {"hostname": "ani"})
    assert f["source"] == f["client"] == {"domain": "ani"}
    assert txn.conn.server.port == 2049


def test_v41_compound_names_the_first_class_operation() -> None:
    (txn,) = assert_same_three_ways("nfs", steps_from("nfs_v4.pcap"), server_port=2049)
    assert txn.protocol_override == "nfsv4"
    assert txn.fields["nfs"] == {"version": 4, "minor_version": 1, "tag": "readdir", "opcode": "READDIR",
                                 "status": "NFS_OK"}
    assert txn.fields["rpc"]["cred"]["gids"] == [500, 500, 499, 491]
    assert (txn.client_bytes, txn.server_bytes) == (212, 152)


@pytest.mark.parametrize(("pcap", "opcode", "status"), [
    ("nfs4_close.pcap", "CLOSE", "NFS_OK"), ("nfsv42_clone.pcap", "CLONE", "NFSERR_NOTSUPP"),
])
def test_v4_corpus_operations(pcap: str, opcode: str, status: str) -> None:
    (txn,) = assert_same_three_ways("nfs", steps_from(pcap), server_port=2049)
    assert (txn.fields["nfs"]["opcode"], txn.fields["nfs"]["status"]) == (opcode, status)
    assert txn.fields["event"]["action"] == f"nfs.{opcode}"


# -- record marking ----------------------------------------------------------------------

def test_several_fragments_make_one_record() -> None:
    msg_call = call(0x10, 3, 1, opaque(b"fh-of-the-file"))
    msg_reply = reply(0x10, u32(0) + bytes(84))
    (txn,) = exchange(record(msg_call, fragments=4), record(msg_reply, fragments=3))
    assert (txn.client_bytes, txn.server_bytes) == (len(msg_call), len(msg_reply))
    assert txn.fields["nfs"] == {"version": 3, "opcode": "GETATTR", "status": "NFS_OK"}


def test_empty_fragments_are_allowed() -> None:
    msg = call(0x11, 3, 0)
    data = u32(0) + u32(0) + record(msg)  # two empty non-last fragments first
    (txn,) = exchange(data, record(reply(0x11)))
    assert txn.fields["nfs"] == {"version": 3, "opcode": "NULL", "status": "NFS_OK"}


def test_pipelined_calls_pair_by_xid_whatever_the_reply_order() -> None:
    calls = record(call(1, 3, 3, opaque(b"dir") + opaque(b"a"))) + record(call(2, 3, 4, opaque(b"f") + u32(31)))
    replies = record(reply(2, u32(13))) + record(reply(1, u32(0)))
    txns = exchange(calls, replies)
    assert [(t.fields["rpc"]["xid"], t.fields["nfs"]["opcode"], t.fields["nfs"]["status"]) for t in txns] == [
        ("00000002", "ACCESS", "NFSERR_ACCESS"), ("00000001", "LOOKUP", "NFS_OK")]


def test_large_read_reply_keeps_only_its_head() -> None:
    data = bytes(300_000)
    msg_reply = reply(5, u32(0) + bytes(84) + u32(len(data), 1) + opaque(data))
    (txn,) = exchange(record(call(5, 3, 6, opaque(b"fh") + bytes(8) + u32(len(data)))), record(msg_reply, 5))
    assert txn.server_bytes == len(msg_reply) and txn.fields["nfs"]["opcode"] == "READ"


def test_framer_memory_is_bounded_by_the_head_limit() -> None:
    framer = RecordFramer(Direction.TO_CLIENT)
    big = reply(9, u32(0) + bytes(5 * HEAD_LIMIT))
    records = framer.feed(record(big, 3), 0)
    assert len(records) == 1 and records[0].size == len(big) and len(records[0].head) == HEAD_LIMIT


def test_gap_inside_a_fragment_keeps_sync() -> None:
    head = reply(6, u32(0) + bytes(84) + u32(100_000, 1) + u32(100_000))
    marker = u32(0x80000000 | (len(head) + 100_000))
    steps = [Step(C2S, record(call(6, 3, 6, opaque(b"fh") + bytes(12))), T0),
             Step(S2C, marker + head + bytes(40_000), T0 + MS), Step(S2C, gap=50_000, ts_ns=T0 + MS),
             Step(S2C, bytes(10_000), T0 + 2 * MS),
             Step(C2S, record(call(7, 3, 1, opaque(b"fh"))), T0 + 3 * MS),
             Step(S2C, record(reply(7, u32(0) + bytes(84))), T0 + 4 * MS)]
    txns = assert_same_three_ways("nfs", steps, server_port=2049)
    assert [(t.fields["nfs"]["opcode"], t.server_bytes) for t in txns] == [
        ("READ", len(head) + 100_000), ("GETATTR", len(reply(7, u32(0) + bytes(84))))]


def test_gap_across_a_marker_resynchronises_on_the_next_record() -> None:
    steps = [Step(C2S, record(call(1, 3, 1, opaque(b"fh"))), T0),
             Step(S2C, gap=200, ts_ns=T0 + MS),
             Step(C2S, record(call(2, 3, 1, opaque(b"fh2"))), T0 + 2 * MS),
             Step(S2C, b"tail of the lost reply" + record(reply(2, u32(0) + bytes(84))), T0 + 3 * MS)]
    txns = assert_same_three_ways("nfs", steps, server_port=2049)
    assert [(t.fields["rpc"]["xid"], t.status) for t in txns] == [("00000002", "OK"), ("00000001", "NO_REPLY")]


def test_capture_starting_mid_record_finds_the_next_record() -> None:
    sess, out, counters = session()
    feed(sess, C2S, b"\x00\x00\x10\x00 some bytes of an earlier WRITE payload", T0)
    feed(sess, C2S, b"\x00\x00\x00\x00more of it" + record(call(3, 3, 1, opaque(b"fh"))), T0 + MS)
    feed(sess, S2C, record(reply(3, u32(0))), T0 + 2 * MS)
    assert [t.fields["nfs"]["opcode"] for t in out] == ["GETATTR"]
    assert counters["parse_errors"] == 1 and counters["resync_dropped_bytes"] == 14


def test_hostile_fragment_length_is_an_error_not_an_allocation() -> None:
    framer = RecordFramer(Direction.TO_SERVER)
    with pytest.raises(ParseError):
        framer.feed(u32(MAX_FRAGMENT_LEN + 1) + bytes(32), 0)


def test_one_byte_record_like_rpc_fragment_pcap() -> None:
    sess, out, counters = session()
    feed(sess, C2S, bytes.fromhex("8000000100"), T0)
    sess.fin(C2S, T0)
    assert out == [] and counters["parse_errors"] == 1 and sess.pending() == 0


# -- RPC replies -----------------------------------------------------------------------

def test_rpc_failure_keeps_status_ok_with_outcome_failure() -> None:
    (txn,) = exchange(record(call(8, 3, 1, opaque(b"fh"))), record(reply(8, accept_stat=4)))
    assert txn.status == "OK" and txn.fields["rpc"]["status"] == "garbage_args"
    assert txn.fields["event"]["outcome"] == "failure" and "status" not in txn.fields["nfs"]


def test_denied_reply_closes_the_call_as_an_error() -> None:
    (txn,) = exchange(record(call(9, 3, 1, opaque(b"fh"))), record(denied(9, 1, u32(1))))
    assert txn.status == "Error" and txn.fields["rpc"]["status"] == "auth_error"
    assert txn.fields["event"]["outcome"] == "failure"


def test_unknown_accept_status_is_named() -> None:
    (txn,) = exchange(record(call(10, 3, 1, opaque(b"fh"))), record(reply(10, accept_stat=42)))
    assert txn.fields["rpc"]["status"] == "unknown (42)"


def test_reply_cut_before_its_status_has_no_nfs_status() -> None:
    (txn,) = exchange(record(call(12, 3, 1, opaque(b"fh"))), record(reply(12)))
    assert txn.fields["rpc"]["status"] == "success" and "status" not in txn.fields["nfs"]


def test_unknown_nfs_status_is_named() -> None:
    (txn,) = exchange(record(call(13, 3, 1, opaque(b"fh"))), record(reply(13, u32(12345))))
    assert txn.fields["nfs"]["status"] == "unknown (12345)"


# -- pairing and timeouts -------------------------------------------------------------------

def test_call_without_reply_is_published_as_no_reply_after_the_timeout() -> None:
    sess, out, counters = session(transaction_timeout="30s")
    feed(sess, C2S, record(call(20, 3, 1, opaque(b"fh"))), T0)
    feed(sess, C2S, record(call(21, 3, 1, opaque(b"fh"))), T0 + 29 * 10**9)
    assert out == []
    feed(sess, C2S, record(call(22, 3, 1, opaque(b"fh"))), T0 + 31 * 10**9)
    (txn,) = out
    assert (txn.status, txn.end_ns, txn.server_bytes) == ("NO_REPLY", None, None)
    assert txn.fields["rpc"]["xid"] == "00000014" and "status" not in txn.fields["rpc"]
    assert counters["unmatched_requests"] == 1 and sess.pending() == 2
    sess.expire(T0 + 100 * 10**9)
    assert [t.fields["rpc"]["xid"] for t in out[1:]] == ["00000015", "00000016"]
    assert sess.pending() == 0


def test_default_timeout_is_one_minute() -> None:
    assert protocol_config("nfs").transaction_timeout == 60.0


def test_reply_without_call_is_counted_not_published() -> None:
    sess, out, counters = session()
    feed(sess, S2C, record(reply(30, u32(0))), T0)
    assert out == [] and counters["unmatched_responses"] == 1


def test_other_rpc_programs_are_ignored() -> None:
    sess, out, counters = session()
    feed(sess, C2S, record(call(31, 3, 1, opaque(b"/export"), program=MOUNT)), T0)
    feed(sess, S2C, record(reply(31, u32(0))), T0 + MS)
    assert out == [] and counters["non_nfs_calls"] == 1 and counters["unmatched_responses"] == 1


def test_retransmitted_call_replaces_the_pending_one() -> None:
    sess, out, counters = session()
    feed(sess, C2S, record(call(32, 3, 1, opaque(b"fh"))), T0)
    feed(sess, C2S, record(call(32, 3, 1, opaque(b"fh"))), T0 + 5 * MS)
    feed(sess, S2C, record(reply(32, u32(0))), T0 + 6 * MS)
    (txn,) = out
    assert txn.ts_ns == T0 + 5 * MS and counters["retransmitted_calls"] == 1


def test_call_sent_by_the_server_side_runs_the_other_way() -> None:
    out = run_stream("nfs", [Step(S2C, record(call(33, 3, 1, opaque(b"fh"))), T0),
                             Step(C2S, record(reply(33, u32(0))), T0 + MS)], server_port=2049)
    assert out[0].conn.client.port == 2049


# -- credentials -------------------------------------------------------------------------

@pytest.mark.parametrize(("flavor", "name"), [(0, "none"), (6, "rpcsec_gss"), (3, "unknown (3)")])
def test_other_auth_flavors(flavor: int, name: str) -> None:
    (txn,) = exchange(record(call(40, 3, 1, opaque(b"fh"), flavor=flavor, cred=b"")), record(reply(40, u32(0))))
    assert txn.fields["rpc"] == {"xid": "00000028", "auth_flavor": name, "status": "success"}
    assert "user" not in txn.fields and "host" not in txn.fields


def test_empty_machine_name_falls_back_to_the_client_address() -> None:
    msg = call(41, 3, 1, opaque(b"fh"), cred=auth_unix(machine="", uid=7, gid=8, gids=()))
    (txn,) = exchange(record(msg), record(reply(41, u32(0))))
    assert txn.fields["rpc"]["cred"] == {"stamp": 7, "machinename": "192.168.1.10", "uid": 7, "gid": 8, "gids": []}
    assert txn.fields["host"] == {"hostname": "192.168.1.10"} and "source" not in txn.fields
    assert (txn.fields["user"], txn.fields["group"]) == ({"id": 7}, {"id": 8})


def test_malformed_unix_credentials_give_a_note() -> None:
    (txn,) = exchange(record(call(42, 3, 1, opaque(b"fh"), cred=u32(1, 200))), record(reply(42, u32(0))))
    assert txn.notes == [F.MALFORMED_CREDENTIALS] and "cred" not in txn.fields["rpc"]


# -- operations -------------------------------------------------------------------------------

@pytest.mark.parametrize(("ops", "opcode"), [
    ((SEQUENCE, PUTFH, READDIR), "READDIR"),
    ((SEQUENCE, PUTFH, GETATTR), "GETATTR"),  # no first-class op: the last one names it
    ((PUTROOTFH, GETFH, LOOKUP, GETFH, GETATTR), "GETATTR"),
    ((SEQUENCE, PUTFH, SAVEFH, OPEN, GETFH), "OPEN"),
    ((PUTFH, GETATTR, CLOSE), "CLOSE"),
    ((RENEW, PUTFH, CLOSE), "CLOSE"),
    ((PUTFH, (9999, b""), CLOSE), "ILLEGAL"),
    ((), "ILLEGAL"),
])
def test_compound_main_operation(ops: tuple[tuple[int, bytes], ...], opcode: str) -> None:
    (txn,) = exchange(record(call(50, 4, 1, compound("tag-x", 2, *ops))), record(reply(50, u32(0))))
    assert txn.fields["nfs"] == {"version": 4, "minor_version": 2, "tag": "tag-x", "opcode": opcode,
                                 "status": "NFS_OK"}
    assert txn.fields["event"]["action"] == f"nfs.{opcode}"


def test_compound_cut_mid_arguments_keeps_the_operation_seen_last() -> None:
    body = compound("t", 1, SEQUENCE, PUTFH)[:-6]
    (txn,) = exchange(record(call(51, 4, 1, body)), record(reply(51, u32(0))))
    assert txn.fields["nfs"]["opcode"] == "PUTFH"


@pytest.mark.parametrize(("version", "procedure", "nfs", "protocol"), [
    (4, 0, {"version": 4, "opcode": "NULL", "status": "NFS_OK"}, "nfsv4"),
    (3, 0, {"version": 3, "opcode": "NULL", "status": "NFS_OK"}, "nfsv3"),
    (3, 10, {"version": 3, "opcode": "SYM_LINK", "status": "NFS_OK"}, "nfsv3"),
    (3, 99, {"version": 3, "opcode": "ILLEGAL", "status": "NFS_OK"}, "nfsv3"),
    (2, 4, {"version": 2, "status": "NFS_OK"}, "nfs"),
])
def test_procedures(version: int, procedure: int, nfs: dict[str, Any], protocol: str) -> None:
    (txn,) = exchange(record(call(60, version, procedure)), record(reply(60, u32(0))))
    assert txn.fields["nfs"] == nfs and txn.protocol_override == protocol
    assert ("event" in txn.fields) == ("opcode" in nfs)


def test_record_start_that_is_not_rpc_is_a_parse_error() -> None:
    framer = RecordFramer(Direction.TO_SERVER)
    with pytest.raises(ParseError):
        framer.feed(record(u32(1, 0, 3) + bytes(40)), 0)  # RPC version 3


def test_decode_rejects_a_cut_header() -> None:
    framer = RecordFramer(Direction.TO_SERVER)
    (rec,) = framer.feed(record(u32(1, 0, 2, 100003, 3, 1, 1, 400) + bytes(40)), 0)  # credentials past the end
    with pytest.raises(ParseError):
        decode(rec, Direction.TO_SERVER)


def test_resync_search_is_bounded_when_fed_byte_by_byte() -> None:
    framer = RecordFramer(Direction.TO_SERVER)
    framer.reset()
    garbage = bytes((i * 7 + 3) % 251 for i in range(2 * RESYNC_WINDOW))
    for i in range(len(garbage)):
        assert framer.feed(garbage[i:i + 1], 0) == []
        assert framer.buf.unread <= RESYNC_WINDOW + 1
    assert framer.dropped_bytes > RESYNC_WINDOW
    (rec,) = framer.feed(record(call(1, 3, 1, opaque(b"fh"))), 0)
    assert framer.synced and decode(rec, Direction.TO_SERVER).xid == 1


def test_pending_calls_are_bounded_per_connection() -> None:
    sess, out, counters = session()
    calls = b"".join(record(call(xid, 3, 7, opaque(b"fh") + bytes(16) + opaque(bytes(2000))))
                     for xid in range(P.MAX_PENDING_CALLS + 10))
    feed(sess, C2S, calls, T0)
    assert sess.pending() == P.MAX_PENDING_CALLS
    assert [t.fields["rpc"]["xid"] for t in out] == [f"{xid:08x}" for xid in range(10)]
    assert all(t.status == "NO_REPLY" and t.fields["nfs"]["opcode"] == "WRITE" for t in out)
    assert counters["table_overflow"] == 10 and counters["unmatched_requests"] == 10
