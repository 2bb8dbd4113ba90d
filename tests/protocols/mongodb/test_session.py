"""MongoDB sessions: pairing by responseTo, event fields, query reconstruction, document limits, loss."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.mongodb import plugin
from agent.protocols.mongodb.fields import reconstruct_query, to_json
from agent.protocols.mongodb.plugin import SPEC, MongoSession
from agent.transport.session import ParseError
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config
from tests.protocols.mongodb.messages import (
    OP_INSERT,
    compressed,
    cstr,
    doc,
    fixture,
    i32,
    message,
    op_msg,
    op_query,
    op_reply,
)

MS = 1_000_000


def run(steps: list[Step], **options: Any) -> list[Transaction]:
    return assert_same_three_ways("mongodb", steps, server_port=27017, options=options)


def session(**options: Any) -> tuple[MongoSession, list[Transaction], Counters]:
    out: list[Transaction] = []
    counters = Counters("test.mongodb.session")
    assert SPEC.tcp is not None
    sess = SPEC.tcp(SessionContext("mongodb", protocol_config("mongodb", **options), conn_info(27017), out.append,
                                   counters))
    assert isinstance(sess, MongoSession)
    return sess, out, counters


# -- Packetbeat's Go tests of the plugin (mongodb_test.go) -----------------------------------------------

ONE_ROW_REQUEST = bytes.fromhex("320000000a000000ffffffffd407000000000000746573742e72667374617572616e7473000000000001"
                                "0000000500000000")


def one_row_reply() -> bytes:
    return op_reply([{"_id": 1, "name": "Morris Park Bake Shop", "cuisine": "Bakery"}], response_to=10,
                    request_id=74)


def test_simple_find_limit_1_split_reply() -> None:
    reply = one_row_reply()
    (txn,) = run([Step(C2S, ONE_ROW_REQUEST, 1 * MS), Step(S2C, reply[:40], 2 * MS), Step(S2C, reply[40:90], 3 * MS),
                  Step(S2C, reply[90:], 4 * MS)], send_request=True, send_response=True)
    f = txn.fields
    assert (txn.status, f["method"], f["resource"]) == ("OK", "find", "test.rfstaurants")
    assert f["query"] == "test.rfstaurants.find().limit(1)"
    assert f["request"] == "test.rfstaurants.find().limit(1)"  # empty params are left out, as in Packetbeat
    assert f["response"] == '{"_id":1,"name":"Morris Park Bake Shop","cuisine":"Bakery"}'
    assert (txn.client_bytes, txn.server_bytes) == (50, len(reply))
    assert (txn.ts_ns, txn.end_ns) == (1 * MS, 2 * MS)
    assert f["mongodb"] == {"fullCollectionName": "test.rfstaurants", "numberToSkip": 0, "numberToReturn": 1,
                            "query": "{}", "opcodeName": "OP_QUERY", "cursorId": 0, "startingFrom": 0,
                            "numberReturned": 1}


def test_reconstruct_query() -> None:
    assert reconstruct_query("test.col", "find", {"me": "you"}, 3, 2, full=True) == \
        'test.col.find({"me":"you"}).skip(3).limit(2)'
    assert reconstruct_query("test.col", "insert", {"documents": "you"}, None, None, full=True) == \
        'test.col.insert({"documents":"you"})'
    assert reconstruct_query("test.col", "insert", {"documents": "you"}, None, None, full=False) == \
        "test.col.insert({})"
    assert reconstruct_query("test.col", "find", {"me": "you"}, 0, 0x7FFFFFFF, full=False) == "test.col.find()"


def test_max_docs_and_max_doc_length() -> None:
    def rendered(docs: list[Any], **options: Any) -> str:
        sess, _out, _ = session(send_response=True, **options)
        return sess._render_documents(docs)

    assert rendered([1, 2, 3, 4, 5, 6, 7, 8], max_docs=3) == "1\n2\n3\n[...]"
    assert rendered([1, 2, 3], max_docs=3) == "1\n2\n3"
    assert rendered([1, 2], max_docs=3) == "1\n2"
    assert rendered([1, 2, 3, 4], max_docs=0) == "1\n2\n3\n4"
    assert rendered(["1234567", "123", "12"], max_doc_length=5) == '"1234 ...\n"123"\n"12"'


def test_documents_render_like_packetbeat() -> None:
    import datetime

    from bson import Binary, Int64, ObjectId, Timestamp

    value = {"_id": ObjectId("55917f7231de2df404934b06"), "n": 1.0, "f": 0.5, "big": Int64(2**40), "b": True,
             "t": datetime.datetime(2015, 6, 29, 17, 25, 6, 773000), "bin": Binary(b"\x01\x02"),
             "ts": Timestamp(1, 2), "nested": {"list": [1, None, "é"]}}
    assert to_json(value) == ('{"_id":"55917f7231de2df404934b06","n":1,"f":0.5,"big":1099511627776,"b":true,'
                              '"t":"2015-06-29T17:25:06.773Z","bin":"AQI=","ts":4294967298,'
                              '"nested":{"list":[1,null,"é"]}}')


# -- OP_MSG -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_op_msg_find_fixtures(n: int) -> None:
    (txn,) = run([Step(C2S, fixture(f"{n}req"), 1 * MS), Step(S2C, fixture(f"{n}res"), 2 * MS)],
                 send_response=True, max_docs=0)
    f = txn.fields
    assert (f["method"], f["resource"], txn.status) == ("find", "testdb.inventory", "OK")
    assert f["mongodb"]["opcodeName"] == "OP_MSG" and f["mongodb"]["cursorId"] == 0
    batch = {1: 2, 2: 2, 3: 1}[n]
    assert f["mongodb"]["numberReturned"] == batch and len(f["response"].splitlines()) == batch
    if n > 1:
        assert f["query"] == "testdb.inventory.find()" + (".skip(1)" if n == 3 else "") + ".limit(5)"
    assert '"item":"canvas"' in f["response"] or '"item":"foobar"' in f["response"]


def test_op_msg_insert_with_document_sequence_and_error() -> None:
    request = op_msg({"insert": "people", "ordered": True, "lsid": {"id": 1}, "$db": "app"}, request_id=5,
                     sequences=(("documents", [{"_id": 1, "name": "ann"}, {"_id": 2, "name": "bob"}]),))
    reply = op_msg({"n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000 duplicate key"}],
                    "ok": 1.0}, request_id=6, response_to=5)
    (txn,) = run([Step(C2S, request, 1), Step(S2C, reply, 2)], send_request=True)
    f = txn.fields
    assert (f["method"], f["resource"], txn.status) == ("insert", "app.people", "Error")
    assert f["query"] == 'app.people.insert({"ordered":true})'
    assert f["request"] == ('app.people.insert({"ordered":true,"documents":[{"_id":1,"name":"ann"},'
                            '{"_id":2,"name":"bob"}]})')
    assert f["mongodb"]["error"] == '[{"index":1,"code":11000,"errmsg":"E11000 duplicate key"}]'


def test_op_msg_command_error() -> None:
    reply = op_msg({"ok": 0.0, "errmsg": "no such command: 'bogus'", "code": 59}, response_to=1)
    (txn,) = run([Step(C2S, op_msg({"bogus": 1, "$db": "admin"}), 1), Step(S2C, reply, 2)])
    assert txn.status == "Error" and txn.fields["mongodb"]["error"] == "no such command: 'bogus'"
    assert txn.fields["resource"] == "admin.$cmd"


def test_more_to_come_request_gets_no_reply() -> None:
    sess, out, _ = session()
    sess.feed(C2S, op_msg({"insert": "c", "$db": "d"}, flags=2, request_id=3), 1)
    assert len(out) == 1 and out[0].end_ns is None and sess.pending() == 0
    assert out[0].fields["method"] == "insert" and out[0].server_bytes is None


def test_exhaust_replies_each_pair_with_the_request() -> None:
    sess, out, _ = session()
    sess.feed(C2S, op_msg({"getMore": 77, "collection": "c", "$db": "d"}, request_id=10, flags=1 << 16), 1)
    sess.feed(S2C, op_msg({"cursor": {"id": 77, "nextBatch": [{"a": 1}]}, "ok": 1}, request_id=20,
                          response_to=10, flags=2), 2)
    sess.feed(S2C, op_msg({"cursor": {"id": 0, "nextBatch": [{"a": 2}]}, "ok": 1}, request_id=21,
                          response_to=20), 3)
    assert [(t.fields["method"], t.fields["resource"], t.end_ns) for t in out] == [("getMore", "d.c", 2),
                                                                                  ("getMore", "d.c", 3)]
    assert out[0].fields["mongodb"]["cursorId"] == 77 and sess.pending() == 0


@pytest.mark.parametrize("compressor", [1, 2, 3])
def test_compressed_request_and_reply(compressor: int) -> None:
    request = compressed(op_msg({"count": "c", "$db": "d"}, request_id=8), compressor)
    reply = compressed(op_msg({"n": 42, "ok": 1}, response_to=8, request_id=9), compressor)
    (txn,) = run([Step(C2S, request, 1), Step(S2C, reply, 2)], send_response=True)
    assert txn.fields["method"] == "count" and txn.fields["response"] == '{"n":42,"ok":1}'
    assert txn.fields["mongodb"]["opcodeName"] == "OP_MSG (OP_COMPRESSED)"
    assert (txn.client_bytes, txn.server_bytes) == (len(request), len(reply))


# -- legacy opcodes and pairing --------------------------------------------------------------------


def test_legacy_writes_are_published_at_once() -> None:
    sess, out, _ = session(send_request=True)
    sess.feed(C2S, message(OP_INSERT, i32(0) + cstr("db.c") + doc({"x": 1}), 4), 1)
    (txn,) = out
    assert (txn.fields["method"], txn.fields["resource"]) == ("insert", "db.c")
    assert txn.fields["request"] == 'db.c.insert({"documents":[{"x":1}]})' and txn.fields["query"] == "db.c.insert({})"


def test_commands_over_op_query() -> None:
    steps = [Step(C2S, op_query("test.$cmd", {"findandmodify": "restaurants", "query": {"a": "b"},
                                              "update": {"b": "c"}}, limit=-1, request_id=27), 1),
             Step(S2C, op_reply([{"value": None, "ok": 1.0}], response_to=27), 2),
             Step(C2S, op_query("admin.$cmd", {"buildinfo": 1}, limit=-1, request_id=28), 3),
             Step(S2C, op_reply([{"$err": "not authorized", "code": 13}], response_to=28, flags=2), 4)]
    first, second = run(steps)
    assert (first.fields["method"], first.fields["resource"]) == ("findandmodify", "test.restaurants")
    assert first.fields["query"] == 'test.restaurants.findandmodify({"query":{"a":"b"}})'
    assert (second.fields["method"], second.status) == ("buildinfo", "Error")
    assert second.fields["mongodb"]["error"] == '"not authorized"'  # Packetbeat: the JSON of $err


def test_reply_before_request_gives_no_negative_duration() -> None:
    sess, out, counters = session()
    sess.feed(S2C, op_reply([{"ok": 1}], response_to=32929), 1 * MS)  # a stray reply
    sess.feed(S2C, op_reply([{"early": True}], response_to=5), 2 * MS)  # seen before its request
    sess.feed(C2S, op_query("a.$cmd", {"ping": 1}, limit=-1, request_id=5), 3 * MS)
    (txn,) = out
    assert txn.ts_ns == 3 * MS and txn.end_ns == 3 * MS  # duration 0, not negative
    sess.expire(10**12)
    assert counters["unmatched_responses"] == 1


def test_unmatched_requests_expire_unpublished() -> None:
    sess, out, counters = session(transaction_timeout="1s")
    sess.feed(C2S, op_query("a.c", {}, request_id=1), 1 * MS)
    sess.feed(C2S, op_query("a.c", {}, request_id=2), 2000 * MS)
    assert counters["unmatched_requests"] == 1 and sess.pending() == 1 and out == []


def test_unknown_opcode_logged_once_and_shown(caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "_reported_opcodes", set())
    caplog.set_level(logging.WARNING, "pktbeat.mongodb")
    for _ in range(3):
        sess, out, _counters = session()
        sess.feed(C2S, message(2269, b"\x00" * 20, 1) + op_msg({"ping": 1, "$db": "a"}, request_id=2), 1)
        sess.feed(S2C, op_msg({"ok": 1}, response_to=2), 2)
        assert [t.status for t in out] == ["Error", "OK"]
        assert out[0].notes == ["Unknown operation code: 2269"]
        assert out[0].fields["mongodb"]["opcodeName"] == "(value=2269)"
    assert [r.getMessage() for r in caplog.records] == ["Unknown operation code: 2269"]


def test_gap_in_a_reply_keeps_the_pairing() -> None:
    request = op_msg({"find": "c", "$db": "d"}, request_id=3)
    reply = op_msg({"cursor": {"id": 0, "firstBatch": [{"pad": "x" * 4000}]}, "ok": 1}, response_to=3)
    (txn,) = run([Step(C2S, request, 1), Step(S2C, reply[:200], 2), Step(S2C, gap=1000),
                  Step(S2C, reply[1200:], 3)])
    assert txn.fields["method"] == "find" and txn.notes == ["Packet loss while capturing the response"]
    assert txn.server_bytes == len(reply)


def test_parse_error_then_resync_keeps_pending_requests() -> None:
    sess, out, counters = session()
    sess.feed(C2S, op_msg({"ping": 1, "$db": "a"}, request_id=1), 1)
    with pytest.raises(ParseError) as info:
        sess.feed(S2C, b"\x05\x00\x00\x00garbage!!!!!!!!!", 2)
    sess.recover(S2C, info.value, 2)  # what the dispatcher does
    sess.feed(S2C, op_msg({"ok": 1}, response_to=1), 3)
    assert len(out) == 1 and counters["parse_errors"] == 1


def test_negative_limits_mean_no_limit_as_in_packetbeat() -> None:
    sess, _, _ = session(send_response=True, max_docs=-1, max_doc_length=-5)
    assert sess._render_documents(["abcdefgh", 2, 3]) == '"abcdefgh"\n2\n3'
