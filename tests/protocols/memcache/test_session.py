"""Memcache TCP sessions on literal bytes: pairing, merging, quiet commands, statuses and event fields."""

from __future__ import annotations

from typing import Any

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.memcache.plugin import SPEC, MemcacheSession
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config
from tests.protocols.memcache.messages import (
    DECRQ,
    DELETE,
    GET,
    GETK,
    GETKQ,
    INCRQ,
    NOOP,
    SETQ,
    STAT,
    binary,
    u32,
    u64,
)


def run(steps: list[Step], **options: Any) -> list[Transaction]:
    return assert_same_three_ways("memcache", steps, server_port=11211, options=options)


def session(**options: Any) -> tuple[MemcacheSession, list[Transaction], Counters]:
    out: list[Transaction] = []
    counters = Counters("test.memcache.session")
    assert SPEC.tcp is not None
    sess = SPEC.tcp(SessionContext("memcache", protocol_config("memcache", **options), conn_info(11211),
                                   out.append, counters))
    assert isinstance(sess, MemcacheSession)
    return sess, out, counters


def mc(t: Transaction) -> dict[str, Any]:
    return t.fields["memcache"]  # type: ignore[no-any-return]


def test_text_store_and_load() -> None:
    txns = run([Step(C2S, b"set k 0 0 5\r\nvalue\r\n", 10), Step(S2C, b"STORED\r\n", 20),
                Step(C2S, b"get k\r\n", 30), Step(S2C, b"VALUE k 0 5\r\nvalue\r\nEND\r\n", 40)])
    store, load = txns
    assert mc(store)["protocol_type"] == "text"
    assert mc(store)["request"]["command"] == "set" and mc(store)["response"] == {"command": "STORED",
                                                                                   "type": "Success"}
    assert store.fields["event"] == {"action": "memcache.store", "outcome": "success"}
    # Packetbeat's quirk: source.bytes is the response size, destination.bytes the request size.
    assert (store.client_bytes, store.server_bytes) == (8, 20)
    assert (store.ts_ns, store.end_ns, store.status) == (10, 20, "OK")
    assert mc(load)["response"]["keys"] == ["k"] and mc(load)["response"]["count_values"] == 1
    assert mc(load)["response"]["bytes"] == 5 and "values" not in mc(load)["response"]  # maxvalues 0
    assert load.client_bytes == len(b"VALUE k 0 5\r\nvalue\r\nEND\r\n")


def test_multi_get_with_value_limits() -> None:
    reply = b"VALUE k1 0 2\r\naa\r\nVALUE k2 0 3\r\nbbb\r\nVALUE k3 0 1\r\nc\r\nEND\r\n"
    steps = [Step(C2S, b"get x k1 k2 k3 y\r\n", 1), Step(S2C, reply, 2)]
    (txn,) = run(steps, maxvalues=-1)
    response = mc(txn)["response"]
    assert mc(txn)["request"]["keys"] == ["x", "k1", "k2", "k3", "y"]
    assert (response["keys"], response["count_values"], response["bytes"]) == (["k1", "k2", "k3"], 3, 6)
    assert response["values"] == ["YWE=", "YmJi", "Yw=="]
    (txn,) = run(steps, maxvalues=2, maxbytespervalue=1)
    assert mc(txn)["response"]["values"] == ["YQ==", "Yg=="] and mc(txn)["response"]["count_values"] == 3


def test_text_miss_delete_counters_and_stats() -> None:
    txns = run([
        Step(C2S, b"get gone\r\n", 1), Step(S2C, b"END\r\n", 2),
        Step(C2S, b"delete k\r\n", 3), Step(S2C, b"NOT_FOUND\r\n", 4),
        Step(C2S, b"decr cnt 5\r\n", 5), Step(S2C, b"0\r\n", 6),
        Step(C2S, b"stats\r\n", 7), Step(S2C, b"STAT pid 1\r\nSTAT uptime 9\r\nEND\r\n", 8),
        Step(C2S, b"bogus\r\n", 9), Step(S2C, b"ERROR\r\n", 10),
    ], parseunknown=True)
    assert [(t.status, mc(t)["response"]["command"]) for t in txns] == [
        ("OK", "END"), ("Error", "NOT_FOUND"), ("OK", "<counter_op_res>"), ("OK", "STAT"), ("Error", "ERROR")]
    assert txns[1].fields["event"] == {"action": "memcache.delete", "outcome": "failure"}
    assert mc(txns[2])["response"]["value"] == 0
    assert mc(txns[3])["response"]["stats"] == [{"name": "pid", "value": "1"}, {"name": "uptime", "value": "9"}]
    assert mc(txns[3])["request"]["raw_args"] == ""
    assert mc(txns[4])["request"] == {"line": "bogus", "command": "UNKNOWN", "type": "UNKNOWN"}
    assert txns[4].fields["event"]["action"] == "memcache.unknown"


def test_noreply_and_quit_are_published_at_once() -> None:
    sess, out, _ = session()
    sess.feed(C2S, b"set a 0 0 1 noreply\r\nx\r\nincr n 1 noreply\r\nquit\r\n", 1)
    assert [(mc(t)["request"]["command"], t.status, t.end_ns) for t in out] == [
        ("set", "OK", None), ("incr", "OK", None), ("quit", "OK", None)]
    assert mc(out[0])["request"]["noreply"] is True and sess.pending() == 0
    assert out[0].server_bytes == 24 and out[0].client_bytes is None


def test_binary_quiet_gets_with_noop() -> None:
    requests = b"".join(binary(GETKQ, key=k.encode(), opaque=i) for i, k in enumerate(("x", "k1", "y"))) \
        + binary(NOOP, opaque=9)
    replies = binary(GETKQ, request=False, key=b"k1", opaque=1, extras=u32(0), value=b"v1", cas=7) \
        + binary(NOOP, request=False, opaque=9)
    txns = run([Step(C2S, requests, 1), Step(S2C, replies, 2)])
    assert [(mc(t)["request"].get("keys", None), "response" in mc(t))
            for t in txns] == [(["x"], False), (["k1"], True), (["y"], False), (None, True)]
    assert all(t.status == "OK" and not t.notes for t in txns)
    hit = mc(txns[1])
    assert hit["request"]["opaque"] == hit["response"]["opaque"] == 1 and hit["request"]["quiet"] is True
    assert hit["response"]["cas_unique"] == 7 and hit["response"]["opcode"] == "GetKQ"
    assert mc(txns[3])["request"]["command"] == "noop" and mc(txns[3])["request"]["opcode"] == "No-op"


def test_binary_quiet_writes_and_missing_non_quiet_reply() -> None:
    requests = (binary(SETQ, key=b"c", extras=u32(0) + u32(0), value=b"1", opaque=1)
                + binary(INCRQ, key=b"c", extras=u64(2) + u64(0) + u32(0), opaque=2)
                + binary(GETK, key=b"lost", opaque=3)
                + binary(DECRQ, key=b"c", extras=u64(5) + u64(0) + u32(0), opaque=4)
                + binary(GET, key=b"c", opaque=5))
    txns = run([Step(C2S, requests, 1), Step(S2C, binary(GET, request=False, extras=u32(0), value=b"0", opaque=5), 2)])
    assert [mc(t)["request"]["opcode"] for t in txns] == ["SetQ", "IncrementQ", "GetK", "DecrementQ", "Get"]
    assert [t.status for t in txns] == ["OK", "OK", "Server Error", "OK", "OK"]
    assert txns[2].notes == ["Missing response for non-quiet request"]
    assert mc(txns[1])["request"]["delta"] == 2 and mc(txns[3])["request"]["delta"] == 5


def test_binary_stats_merge_until_empty_key() -> None:
    replies = b"".join(binary(STAT, request=False, key=k, value=v, opaque=3)
                       for k, v in ((b"pid", b"1"), (b"uptime", b"50"), (b"version", b"1.6.18"))) \
        + binary(STAT, request=False, opaque=3)
    (txn,) = run([Step(C2S, binary(STAT, opaque=3), 1), Step(S2C, replies, 2)])
    response = mc(txn)["response"]
    assert response["stats"] == [{"name": "pid", "value": "1"}, {"name": "uptime", "value": "50"},
                                 {"name": "version", "value": "1.6.18"}]
    assert response["type"] == "Stats" and txn.client_bytes == len(replies)


def test_binary_statuses() -> None:
    txns = run([
        Step(C2S, binary(GET, key=b"deleted", opaque=1), 1),
        Step(S2C, binary(GET, request=False, status=1, value=b"Not found", opaque=1), 2),
        Step(C2S, binary(DELETE, key=b"k", opaque=2), 3),
        Step(S2C, binary(DELETE, request=False, status=0x84, opaque=2), 4),
    ])
    assert [t.status for t in txns] == ["Error", "Server Error"]
    assert mc(txns[0])["response"]["status"] == "Key not found"
    assert txns[0].fields["event"] == {"action": "memcache.load", "outcome": "failure"}


def test_lost_request_and_lost_response() -> None:
    sess, out, counters = session()
    sess.feed(S2C, b"STORED\r\n", 1)
    assert out[0].status == "Client Error" and out[0].notes == ["Invalid transaction. Request missing"]
    assert not out[0].has_request and out[0].client_bytes == 8 and out[0].server_bytes is None
    sess.feed(C2S, b"set k 0 0 5\r\nvalue\r\n", 2)
    sess.expire(10**12)
    assert out[1].status == "Server Error" and out[1].notes == ["Unfinished transaction"]
    assert counters["unmatched_responses"] == 1 and counters["unfinished_transactions"] == 1


def test_gap_in_value_keeps_the_transaction() -> None:
    steps = [Step(C2S, b"set k 0 0 100\r\n" + b"a" * 10, 1), Step(C2S, gap=80), Step(C2S, b"b" * 10 + b"\r\n", 2),
             Step(S2C, b"STORED\r\n", 3)]
    (txn,) = run(steps)
    assert txn.status == "OK" and txn.notes == ["Packet loss while capturing the request"]
    assert mc(txn)["request"]["bytes"] == 100 and txn.server_bytes == len(b"set k 0 0 100\r\n") + 22


def test_gap_elsewhere_publishes_pending_and_resyncs() -> None:
    sess, out, counters = session()
    sess.feed(C2S, b"get a\r\nget b\r\n", 1)
    sess.gap(S2C, 40, 2)
    assert [t.notes for t in out] == [["Unfinished transaction"], ["Unfinished transaction"]]
    sess.feed(S2C, b"lue\r\nEND\r\n", 3)  # the tail of a lost reply: dropped
    sess.feed(C2S, b"get c\r\n", 4)
    sess.feed(S2C, b"END\r\n", 5)
    assert mc(out[-1])["request"]["keys"] == ["c"] and out[-1].status == "OK"
    assert counters["resync_dropped_bytes"] == len(b"lue\r\nEND\r\n")


def test_parse_error_recovers() -> None:
    txns = run([Step(C2S, b"get a\r\n", 1), Step(S2C, b"WHAT IS THIS\r\n", 2), Step(C2S, b"get b\r\n", 3),
                Step(S2C, b"END\r\n", 4)])
    assert [(mc(t)["request"]["keys"], t.status) for t in txns] == [(["a"], "Server Error"), (["b"], "OK")]
