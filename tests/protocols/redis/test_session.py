"""Redis sessions on literal bytes: pairing, event fields, pipelining, pub/sub, MONITOR, replication, loss."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.redis.plugin import SPEC, RedisSession
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config

MS = 1_000_000


def cmd(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def session(**options: Any) -> tuple[RedisSession, list[Transaction], Counters]:
    out: list[Transaction] = []
    counters = Counters("test.redis.session")
    assert SPEC.tcp is not None
    sess = SPEC.tcp(SessionContext("redis", protocol_config("redis", **options), conn_info(6379), out.append,
                                   counters))
    assert isinstance(sess, RedisSession)
    return sess, out, counters


def summary(t: Transaction) -> tuple[Any, ...]:
    f = t.fields
    return f["method"], f["resource"], f["query"], t.status, f["redis"]


def test_request_reply_fields() -> None:
    steps = [
        Step(C2S, cmd("set", "key3", "me"), 1 * MS), Step(S2C, b"+OK\r\n", 2 * MS),
        Step(C2S, cmd("get", "key3"), 3 * MS), Step(S2C, b"$2\r\nme\r\n", 4 * MS),
        Step(C2S, cmd("llen", "key3"), 5 * MS),
        Step(S2C, b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", 7 * MS),
        Step(C2S, cmd("get", "nothing"), 8 * MS), Step(S2C, b"$-1\r\n", 9 * MS),
        Step(C2S, cmd("get", "empty"), 10 * MS), Step(S2C, b"$0\r\n\r\n", 11 * MS),
    ]
    txns = assert_same_three_ways("redis", steps, server_port=6379)
    assert [summary(t) for t in txns] == [
        ("SET", "key3", "set key3 me", "OK", {"return_value": "OK"}),
        ("GET", "key3", "get key3", "OK", {"return_value": "me"}),
        ("LLEN", "key3", "llen key3", "Error",
         {"error": "WRONGTYPE Operation against a key holding the wrong kind of value"}),
        ("GET", "nothing", "get nothing", "OK", {"return_value": "nil"}),
        ("GET", "empty", "get empty", "OK", {"return_value": ""}),
    ]
    first, _, error = txns[0], txns[1], txns[2]
    assert (first.ts_ns, first.end_ns) == (1 * MS, 2 * MS)
    assert (first.client_bytes, first.server_bytes) == (len(cmd("set", "key3", "me")), 5)
    assert first.fields["event"] == {"action": "redis.set"}
    assert error.fields["event"] == {"action": "redis.llen", "outcome": "failure"}
    assert "request" not in first.fields and "response" not in first.fields


def test_two_word_commands_and_send_options() -> None:
    sess, out, _ = session(send_request=True, send_response=True)
    sess.feed(C2S, cmd("CONFIG", "GET", "maxmemory"), 1)
    sess.feed(S2C, b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n", 2)
    sess.feed(C2S, cmd("client", "list"), 3)
    sess.feed(S2C, b"$7\r\nid=3 x\n\r\n", 4)
    sess.feed(C2S, cmd("OBJECT", "ENCODING", "k"), 5)
    sess.feed(S2C, b"+embstr\r\n", 6)
    assert [(t.fields["method"], t.fields["resource"], t.fields["event"]["action"]) for t in out] == [
        ("CONFIG GET", "maxmemory", "redis.config get"),
        ("CLIENT LIST", "", "redis.client list"),
        ("OBJECT", "ENCODING", "redis.object"),  # Packetbeat's one-word command
    ]
    assert out[0].fields["request"] == "CONFIG GET maxmemory"
    assert out[0].fields["response"] == "[maxmemory, 0]"


def test_inline_commands_pair() -> None:
    steps = [Step(C2S, b"PING\r\nset a \"b c\"\r\n", 1), Step(S2C, b"+PONG\r\n+OK\r\n", 2)]
    txns = assert_same_three_ways("redis", steps, server_port=6379)
    assert [summary(t)[:3] for t in txns] == [("PING", "", "PING"), ("SET", "a", "set a b c")]


def test_pipeline_pairs_in_order() -> None:
    requests = b"".join(cmd("INCR", f"counter:{i}") for i in range(500))
    replies = b"".join(b":%d\r\n" % i for i in range(500))
    txns = assert_same_three_ways("redis", [Step(C2S, requests, 1), Step(S2C, replies, 2)], server_port=6379)
    assert len(txns) == 500
    assert all(t.fields["resource"] == f"counter:{i}" and t.fields["redis"]["return_value"] == str(i)
               for i, t in enumerate(txns))


def test_multi_exec() -> None:
    steps = [
        Step(C2S, cmd("MULTI") + cmd("INCR", "c") + cmd("LPOP", "nolist") + cmd("EXEC"), 1),
        Step(S2C, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n$-1\r\n", 2),
        Step(C2S, cmd("MULTI") + cmd("DISCARD"), 3), Step(S2C, b"+OK\r\n+OK\r\n", 4),
    ]
    txns = assert_same_three_ways("redis", steps, server_port=6379)
    assert [(t.fields["method"], t.fields["redis"]["return_value"]) for t in txns] == [
        ("MULTI", "OK"), ("INCR", "QUEUED"), ("LPOP", "QUEUED"), ("EXEC", "[1, nil]"), ("MULTI", "OK"),
        ("DISCARD", "OK")]


def test_resp2_pubsub_messages_are_not_replies() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("SUBSCRIBE", "news", "sport"), 1)
    sess.feed(S2C, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n", 2)
    sess.feed(S2C, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n", 3)  # between confirmations
    sess.feed(S2C, b"*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n", 4)
    sess.feed(S2C, b"*4\r\n$8\r\npmessage\r\n$2\r\ns*\r\n$5\r\nsport\r\n$4\r\ngoal\r\n", 5)
    sess.feed(C2S, cmd("PING"), 6)
    sess.feed(S2C, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", 7)
    sess.feed(C2S, cmd("UNSUBSCRIBE"), 8)
    sess.feed(S2C, b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n", 9)
    sess.feed(S2C, b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:0\r\n", 10)
    sess.feed(C2S, cmd("GET", "k"), 11)
    sess.feed(S2C, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", 12)  # no longer subscribed: a reply
    assert [(t.fields["method"], t.fields["redis"]["return_value"], t.end_ns) for t in out] == [
        ("SUBSCRIBE", "[[subscribe, news, 1], [subscribe, sport, 2]]", 4),
        ("PING", "[pong, ]", 7),
        ("UNSUBSCRIBE", "[[unsubscribe, news, 1], [unsubscribe, sport, 0]]", 10),
        ("GET", "[message, a, b]", 12),
    ]
    assert counters["pushes"] == 2 and counters["unmatched_responses"] == 0


def test_resp3_pushes_are_not_replies() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("HELLO", "3") + cmd("SUBSCRIBE", "ch"), 1)
    sess.feed(S2C, b"%1\r\n+server\r\n+redis\r\n>3\r\n+subscribe\r\n+ch\r\n:1\r\n", 2)
    sess.feed(S2C, b">3\r\n+message\r\n+ch\r\n+payload\r\n>2\r\n+invalidate\r\n*1\r\n+k\r\n", 3)
    sess.feed(C2S, cmd("GET", "k"), 4)
    sess.feed(S2C, b">3\r\n+message\r\n+ch\r\n+again\r\n_\r\n", 5)
    assert [(t.fields["method"], t.fields["redis"]["return_value"]) for t in out] == [
        ("HELLO", "{server: redis}"), ("SUBSCRIBE", "[subscribe, ch, 1]"), ("GET", "nil")]
    assert counters["pushes"] == 3


def test_monitor_feed_is_not_paired() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("MONITOR"), 1)
    sess.feed(S2C, b"+OK\r\n+1339518083.107412 [0 127.0.0.1:60866] \"keys\" \"*\"\r\n", 2)
    sess.feed(S2C, b"+1339518087.877697 [0 127.0.0.1:60866] \"dbsize\"\r\n", 3)
    sess.feed(C2S, cmd("QUIT"), 4)
    sess.feed(S2C, b"+OK\r\n", 5)
    assert [t.fields["method"] for t in out] == ["MONITOR", "QUIT"]
    assert counters["pushes"] == 2


def test_client_reply_off_and_skip() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("CLIENT", "REPLY", "OFF") + cmd("SET", "a", "1") + cmd("CLIENT", "REPLY", "ON"), 1)
    sess.feed(S2C, b"+OK\r\n", 2)
    sess.feed(C2S, cmd("CLIENT", "REPLY", "SKIP") + cmd("SET", "b", "2") + cmd("GET", "b"), 3)
    sess.feed(S2C, b"$1\r\n2\r\n", 4)
    assert [(t.fields["method"], t.fields["redis"]["return_value"]) for t in out] == [
        ("CLIENT REPLY", "OK"), ("GET", "2")]
    assert counters["unreplied_requests"] == 4 and sess.pending() == 0


def test_unmatched_replies_and_requests_are_counted_not_published() -> None:
    sess, out, counters = session()
    sess.feed(S2C, b"+OK\r\n", 1)
    sess.feed(C2S, cmd("GET", "a") + cmd("GET", "b"), 2)
    sess.feed(S2C, b"$1\r\n1\r\n", 3)
    assert len(out) == 1 and counters["unmatched_responses"] == 1
    sess.expire(10**12)
    assert counters["unmatched_requests"] == 1 and sess.pending() == 0


def test_queue_limits_evict_oldest() -> None:
    sess, _, counters = session(queue_max_messages=5)
    sess.feed(C2S, b"".join(cmd("GET", f"k{i}") for i in range(12)), 1)
    assert sess.pending() == 5 and counters["unmatched_requests"] == 7 and counters["queue_overflow"] == 7
    sess, _, counters = session(queue_max_bytes=100)
    sess.feed(C2S, b"".join(cmd("SET", f"k{i}", "v" * 30) for i in range(10)), 1)
    assert sess.pending() == 2 and counters["unmatched_requests"] == 8
    sess, _out, counters = session(queue_max_messages=0, queue_max_bytes=0)  # 0: no limit, as in Packetbeat
    sess.feed(C2S, b"".join(cmd("GET", f"k{i}") for i in range(30000)), 1)
    assert sess.pending() == 30000 and counters["unmatched_requests"] == 0


def test_gap_drops_pending_and_resynchronises() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("GET", "a") + cmd("GET", "b"), 1)
    sess.feed(S2C, b"$100\r\nabc", 2)
    sess.gap(S2C, 50, 3)
    assert sess.pending() == 0 and counters["unmatched_requests"] == 2
    sess.feed(S2C, b"zzzz\r\n$1\r\n1\r\n", 4)  # the rest of the lost reply: dropped, not parsed
    sess.feed(C2S, cmd("GET", "c"), 5)
    sess.feed(S2C, b"$1\r\n3\r\n", 6)
    assert [t.fields["redis"]["return_value"] for t in out] == ["3"]
    assert counters["resync_dropped_bytes"] == len(b"zzzz\r\n$1\r\n1\r\n")


def test_parse_error_recovers_on_next_segment() -> None:
    steps = [Step(C2S, cmd("GET", "a"), 1), Step(S2C, b"?bogus\r\n", 2),
             Step(C2S, cmd("GET", "b"), 3), Step(S2C, b"$1\r\nb\r\n", 4)]
    txns = assert_same_three_ways("redis", steps, server_port=6379)
    assert [t.fields["resource"] for t in txns] == ["b"]


def replication_stream(rdb_bytes: int, commands: int) -> tuple[list[bytes], list[bytes]]:
    """(replica -> master chunks, master -> replica chunks) of a full resynchronisation."""
    to_master = [cmd("PING"), cmd("REPLCONF", "listening-port", "6380"), cmd("REPLCONF", "capa", "eof", "capa",
                                                                              "psync2"),
                 cmd("PSYNC", "?", "-1")]
    to_replica = [b"+PONG\r\n", b"+OK\r\n", b"+OK\r\n",
                  b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n", b"\n\n",
                  f"${rdb_bytes}\r\n".encode()]
    chunk = 65536
    block = b"REDIS0011" + bytes(range(256)) * 256
    sent = 0
    while sent < rdb_bytes:
        n = min(chunk, rdb_bytes - sent)
        to_replica.append(block[:n])
        sent += n
    batch: list[bytes] = []
    for i in range(commands):
        batch.append(cmd("SET", f"key:{i}", "x" * 20))
        if len(batch) == 500:
            to_replica.append(b"".join(batch))
            batch = []
            to_master.append(cmd("REPLCONF", "ACK", str(i)))
    to_replica.append(b"".join(batch))
    return to_master, to_replica


def test_replication_stream_keeps_memory_bounded() -> None:
    """Acceptance d: a 512 MB snapshot and 20k replicated commands through one session (tracemalloc'd)."""
    to_master, to_replica = replication_stream(512 << 20, 20_000)
    sess, out, counters = session()
    tracemalloc.start()
    started = time.monotonic()
    try:
        for chunk in to_master[:4]:
            sess.feed(C2S, chunk, 1)
        baseline = tracemalloc.get_traced_memory()[0]
        for chunk in to_replica:
            sess.feed(S2C, chunk, 2)
        for chunk in to_master[4:]:
            sess.feed(C2S, chunk, 3)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 60
    assert [t.fields["method"] for t in out] == ["PING", "REPLCONF", "REPLCONF", "PSYNC"]
    assert out[-1].fields["redis"]["return_value"].startswith("FULLRESYNC")
    # The snapshot, the commands, then the replica's ACKs.
    assert counters["replication_messages"] == 1 + 20_000 + 40
    assert sess.pending() == 0 and counters["unmatched_responses"] == 0
    assert peak - baseline < 4 << 20, f"peak grew by {peak - baseline} bytes"
    assert current - baseline < 1 << 20


def test_array_that_looks_like_a_confirmation_is_a_plain_reply() -> None:
    sess, out, counters = session()
    sess.feed(C2S, cmd("LRANGE", "l", "0", "-1"), 1)
    sess.feed(S2C, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n$1\r\n1\r\n", 2)
    sess.feed(C2S, cmd("GET", "k"), 3)
    sess.feed(S2C, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", 4)  # not subscribed: a reply too
    assert [t.fields["redis"]["return_value"] for t in out] == ["[subscribe, x, 1]", "[message, a, b]"]
    assert sess.subscriptions == 0 and counters["pushes"] == 0
