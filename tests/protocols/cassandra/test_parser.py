"""CQL frames and transactions on literal bytes, fed whole, byte by byte and at random cuts.

Covers what Packetbeat's cassandra system tests assert (headers as
published, QUERY/RESULT kinds, OPTIONS/SUPPORTED, STARTUP/READY,
REGISTER/READY, ERROR with errConfig, the Tracing flag, 16-bit stream ids,
FIFO pairing, ignored_ops, snappy compression) on frames built here, plus
the protocol corners and limits.
"""

from __future__ import annotations

import struct
from typing import Any

import cramjam
import pytest

from agent.config.typed import ConfigError
from agent.protocols.cassandra.parser import MAX_FRAME_BYTES, CqlParser, ParserSettings
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, protocol_config
from tests.protocols.cassandra import frames as f

PORT = 9042


def three_ways(steps: list[Step], **options: Any) -> list[Any]:
    return assert_same_three_ways("cassandra", steps, options=options, server_port=PORT)


def pair(req: bytes, resp: bytes, **options: Any) -> Any:
    (txn,) = three_ways([Step(C2S, req, 1_000), Step(S2C, resp, 5_000)], **options)
    return txn


def response_of(resp: bytes, **options: Any) -> dict[str, Any]:
    txn = pair(f.request(f.QUERY, f.query("SELECT 1")), resp, **options)
    data: dict[str, Any] = txn.fields["cassandra"]["response"]
    return {k: v for k, v in data.items() if k != "headers"}


def test_query_and_void_result() -> None:
    req = f.request(f.QUERY, f.query("INSERT INTO t (a) VALUES (1);"), stream=252)
    resp = f.response(f.RESULT, f.i32(1), stream=252)
    txn = pair(req, resp)
    assert txn.fields == {"cassandra": {
        "request": {"query": "INSERT INTO t (a) VALUES (1);",
                    "headers": {"version": "4", "flags": "Default", "stream": 252, "op": "QUERY", "length": 36}},
        "response": {"result": {"type": "void"},
                     "headers": {"version": "4", "flags": "Default", "stream": 252, "op": "RESULT", "length": 4}}}}
    assert (txn.client_bytes, txn.server_bytes, txn.status, txn.ts_ns, txn.end_ns) == (45, 13, "OK", 1_000, 5_000)


def test_result_kinds() -> None:
    assert response_of(f.response(f.RESULT, f.i32(3) + f.string("shop"))) == {
        "result": {"type": "set_keyspace", "keyspace": "shop"}}
    change = f.i32(5) + f.string("CREATED") + f.string("TABLE") + f.string("shop") + f.string("items")
    assert response_of(f.response(f.RESULT, change)) == {"result": {"type": "schemaChanged", "schema_change": {
        "change": "CREATED", "target": "TABLE", "keyspace": "shop", "object": "items"}}}
    function = (f.i32(5) + f.string("DROPPED") + f.string("FUNCTION") + f.string("ks") + f.string("fn")
                + f.string_list(["int", "text"]))
    assert response_of(f.response(f.RESULT, function))["result"]["schema_change"] == {
        "change": "DROPPED", "target": "FUNCTION", "keyspace": "ks", "name": "fn", "args": ["int", "text"]}
    v2 = f.i32(5) + f.string("UPDATED") + f.string("ks") + f.string("tbl")
    (txn,) = three_ways([Step(C2S, f.request(f.QUERY, f.query("x"), version=2)),
                         Step(S2C, f.response(f.RESULT, v2, version=2))])
    assert txn.fields["cassandra"]["response"]["result"]["schema_change"] == {
        "change": "UPDATED", "keyspace": "ks", "table": "tbl"}
    assert txn.fields["cassandra"]["response"]["headers"]["version"] == "2"
    assert response_of(f.response(f.RESULT, f.i32(99))) == {"result": {}}


def test_rows_result_reports_num_rows_as_packetbeat_reads_it() -> None:
    # Packetbeat reads num_rows right after the table spec, inside the first column spec: here
    # the column name "peer" starts 00 04 70 65 -> 290917 (as in its cassandra_compressed test).
    body = f.rows_result("system", "peers", [("peer", 0x10), ("data_center", 0x0D)], 2)
    assert response_of(f.response(f.RESULT, body)) == {"result": {"type": "rows", "rows": {
        "meta": {"flags": "GlobalTableSpec", "col_count": 2, "keyspace": "system", "table": "peers"},
        "num_rows": 290917}}}
    paging = f.i32(2) + f.i32(2) + f.i32(1) + f.i32(3) + b"\xab\xcd\x01" + f.i32(0)
    assert response_of(f.response(f.RESULT, paging))["result"]["rows"] == {
        "meta": {"flags": "HasMorePages", "col_count": 1, "paging_state": "ABCD01"}, "num_rows": 0}
    no_meta = f.i32(2) + f.i32(4) + f.i32(3) + f.i32(7)
    assert response_of(f.response(f.RESULT, no_meta))["result"]["rows"] == {
        "meta": {"flags": "NoMetaData", "col_count": 3}, "num_rows": 7}


def test_prepared_result_is_decoded_past_the_column_specs() -> None:
    pid = bytes(range(16))
    req_meta = (f.i32(1) + f.i32(2) + f.i32(1) + f.short(0) + f.string("ks") + f.string("t")
                + f.string("id") + f.short(0x09) + f.string("tags") + f.short(0x21) + f.short(0x0D) + f.short(0x20)
                + f.short(0x00) + f.string("org.example.Type"))
    resp_meta = f.i32(4) + f.i32(1)
    body = f.i32(4) + f.short(16) + pid + req_meta + resp_meta
    assert response_of(f.response(f.RESULT, body))["result"] == {"type": "prepared", "prepared": {
        "prepared_id": "00010203-0405-0607-0809-0a0b0c0d0e0f",
        "req_meta": {"flags": "GlobalTableSpec", "col_count": 2, "pkey_columns": [0], "keyspace": "ks",
                     "table": "t"},
        "resp_meta": {"flags": "NoMetaData", "col_count": 1}}}


def test_errors() -> None:
    config = f.i32(0x2300) + f.string("Cannot drop non existing keyspace 'mykeyspace'.")
    txn = pair(f.request(f.QUERY, f.query("DROP KEYSPACE mykeyspace;"), stream=275, flags=0x02),
               f.response(f.ERROR, config, stream=275))
    data = txn.fields["cassandra"]
    assert data["response"]["error"] == {"code": 8960, "msg": "Cannot drop non existing keyspace 'mykeyspace'.",
                                         "type": "errConfig"}
    assert data["request"]["headers"]["flags"] == "Tracing" and data["request"]["headers"]["stream"] == 275
    assert txn.status == "Error"
    unavailable = f.i32(0x1000) + f.string("down") + f.short(4) + f.i32(3) + f.i32(1)
    assert response_of(f.response(f.ERROR, unavailable))["error"]["details"] == {
        "read_consistency": "QUORUM", "required": 3, "alive": 1}
    write_timeout = f.i32(0x1100) + f.string("slow") + f.short(0x0A) + f.i32(1) + f.i32(2) + f.string("SIMPLE")
    assert response_of(f.response(f.ERROR, write_timeout))["error"]["details"] == {
        "read_consistency": "LOCAL_ONE", "received": 1, "blockfor": 2, "write_type": "SIMPLE"}
    read_timeout = f.i32(0x1200) + f.string("slow") + f.short(0x77) + f.i32(0) + f.i32(1) + b"\x01"
    assert response_of(f.response(f.ERROR, read_timeout))["error"]["details"] == {
        "read_consistency": "UNKNOWN_CONS_0x77", "received": 0, "blockfor": 1, "data_present": True}
    exists = f.i32(0x2400) + f.string("exists") + f.string("ks") + f.string("t")
    assert response_of(f.response(f.ERROR, exists))["error"]["details"] == {"keyspace": "ks", "table": "t"}
    unprepared = f.i32(0x2500) + f.string("unknown") + f.short(2) + b"\x01\x02"
    assert response_of(f.response(f.ERROR, unprepared))["error"]["details"] == {"stmt_id": "AQI="}
    function = f.i32(0x1400) + f.string("fail") + f.string("ks") + f.string("fn") + f.string_list(["int"])
    assert response_of(f.response(f.ERROR, function))["error"]["details"] == {
        "keyspace": "ks", "function": "fn", "arg_types": ["int"]}
    assert response_of(f.response(f.ERROR, f.i32(0x9999) + f.string("?")))["error"] == {
        "code": 0x9999, "msg": "?", "type": "ErrUnknown"}


def test_options_supported_startup_register_ready() -> None:
    supported = f.short(2) + f.string("COMPRESSION") + f.string_list(["snappy", "lz4"]) + f.string(
        "CQL_VERSION") + f.string_list(["3.4.2"])
    startup = f.short(1) + f.string("CQL_VERSION") + f.string("3.0.0")
    register = f.string_list(["TOPOLOGY_CHANGE", "STATUS_CHANGE", "SCHEMA_CHANGE"])
    options, start, reg = three_ways([
        Step(C2S, f.request(f.OPTIONS, stream=0) + f.request(f.STARTUP, startup, stream=1), 1),
        Step(S2C, f.response(f.SUPPORTED, supported, stream=0), 2),
        Step(S2C, f.response(f.READY, stream=1), 3),
        Step(C2S, f.request(f.REGISTER, register, stream=2), 4),
        Step(S2C, f.response(f.READY, stream=2), 5)])
    assert options.fields["cassandra"]["response"]["supported"] == {"COMPRESSION": ["snappy", "lz4"],
                                                                     "CQL_VERSION": ["3.4.2"]}
    assert options.fields["cassandra"]["request"] == {"headers": {"version": "4", "flags": "Default", "stream": 0,
                                                                  "op": "OPTIONS", "length": 0}}
    assert (options.client_bytes, options.server_bytes) == (9, 9 + len(supported))
    assert start.fields["cassandra"]["response"]["headers"]["op"] == "READY"
    assert reg.fields["cassandra"]["request"]["headers"]["op"] == "REGISTER"


def test_authentication() -> None:
    assert response_of(f.response(f.AUTHENTICATE, f.string("org.apache.cassandra.auth.PasswordAuthenticator"))) == {
        "authentication": {"class": "org.apache.cassandra.auth.PasswordAuthenticator"}}
    assert response_of(f.response(f.AUTH_SUCCESS, f.i32(4) + b'ok"\xff')) == {
        "authentication": {"data": '"ok\\"\\xff"'}}
    assert response_of(f.response(f.AUTH_CHALLENGE, f.i32(-1))) == {"authentication": {"data": '""'}}


def test_events_are_pushes_not_replies() -> None:
    topology = f.string("TOPOLOGY_CHANGE") + f.string("NEW_NODE") + b"\x04" + bytes([10, 0, 0, 7]) + f.i32(9042)
    schema = f.string("SCHEMA_CHANGE") + f.string("CREATED") + f.string("KEYSPACE") + f.string("ks")
    push1, push2, query = three_ways([
        Step(C2S, f.request(f.QUERY, f.query("SELECT 1"), stream=5), 1),
        Step(S2C, f.response(f.EVENT, topology, stream=-1), 2),
        Step(S2C, f.response(f.EVENT, schema, stream=-1), 3),
        Step(S2C, f.response(f.RESULT, f.i32(1), stream=5), 4)])
    assert push1.fields["cassandra"]["no_request"] is True and not push1.has_request
    assert push1.fields["cassandra"]["response"]["event"] == {"type": "TOPOLOGY_CHANGE", "change": "NEW_NODE",
                                                              "host": "10.0.0.7", "port": 9042}
    assert push1.fields["cassandra"]["response"]["headers"]["stream"] == 65535  # read unsigned
    assert "request" not in push1.fields["cassandra"] and push1.client_bytes is None
    assert push2.fields["cassandra"]["response"]["event"]["schema_change"] == {
        "change": "CREATED", "target": "KEYSPACE", "keyspace": "ks"}
    assert query.fields["cassandra"]["response"]["result"] == {"type": "void"} and query.end_ns == 4


def test_fifo_pairing_ignores_stream_ids() -> None:
    first, second = three_ways([
        Step(C2S, f.request(f.QUERY, f.query("a"), stream=0) + f.request(f.QUERY, f.query("b"), stream=64), 1),
        Step(S2C, f.response(f.RESULT, f.i32(1), stream=64) + f.response(f.RESULT, f.i32(3) + f.string("k"),
                                                                            stream=0), 2)])
    assert first.fields["cassandra"]["request"]["headers"]["stream"] == 0
    assert first.fields["cassandra"]["response"]["headers"]["stream"] == 64
    assert second.fields["cassandra"]["response"]["result"]["type"] == "set_keyspace"


def test_v1_v2_headers_have_one_byte_streams() -> None:
    (txn,) = three_ways([Step(C2S, f.request(f.OPTIONS, version=1, stream=7), 1),
                         Step(S2C, f.response(f.SUPPORTED, f.short(0), version=1, stream=7), 2)])
    assert txn.fields["cassandra"]["request"]["headers"] == {"version": "1", "flags": "Default", "stream": 7,
                                                             "op": "OPTIONS", "length": 0}
    assert (txn.client_bytes, txn.server_bytes) == (8, 10)


def test_ignored_ops_drop_the_whole_transaction() -> None:
    steps = [Step(C2S, f.request(f.OPTIONS, stream=0), 1), Step(S2C, f.response(f.SUPPORTED, f.short(0)), 2),
             Step(C2S, f.request(f.QUERY, f.query("x"), stream=1), 3), Step(S2C, f.response(f.RESULT, f.i32(1)), 4)]
    (txn,) = three_ways(steps, ignored_ops=["OPTIONS"])
    assert txn.fields["cassandra"]["request"]["query"] == "x"
    (txn,) = three_ways(steps, ignored_ops=["supported"])  # the response's op works too, in any case
    assert txn.fields["cassandra"]["request"]["query"] == "x"


def test_send_switches() -> None:
    req, resp = f.request(f.QUERY, f.query("x")), f.response(f.RESULT, f.i32(1))
    assert pair(req, resp, send_request=False).fields["cassandra"].keys() == {"response"}
    assert pair(req, resp, send_request_header=False).fields["cassandra"]["request"] == {"query": "x"}
    assert pair(req, resp, send_response_header=False).fields["cassandra"]["response"] == {"result": {"type": "void"}}
    ready = pair(f.request(f.STARTUP, f.short(0)), f.response(f.READY), send_request_header=False,
                 send_response_header=False)
    assert ready.fields == {}  # nothing left to publish under cassandra


def test_flags_tracing_warnings_custom_payload() -> None:
    tracing_id = bytes(range(16))
    traced = f.response(f.RESULT, tracing_id + f.i32(1), flags=0x02)
    assert response_of(traced) == {"result": {"type": "void"}}
    warned = f.response(f.RESULT, f.string_list(["Aggregation query used without partition key"]) + f.i32(1),
                        flags=0x08)
    assert response_of(warned) == {"warnings": ["Aggregation query used without partition key"],
                                   "result": {"type": "void"}}
    payload = f.short(1) + f.string("k") + f.i32(2) + b"vv"
    both = tracing_id + f.string_list(["w"]) + f.i32(1)
    txn = pair(f.request(f.QUERY, payload + f.query("y"), flags=0x04), f.response(f.RESULT, both, flags=0x0A))
    assert txn.fields["cassandra"]["request"]["query"] == "y"
    assert txn.fields["cassandra"]["request"]["headers"]["flags"] == "CustomPayload"
    response = txn.fields["cassandra"]["response"]
    assert response["headers"]["flags"] == "UnknownFlag_10"  # combined flags print as Packetbeat prints them
    assert (response["warnings"], response["result"], txn.notes) == (["w"], {"type": "void"}, [])


def test_snappy_compressed_frames() -> None:
    body = bytes(cramjam.snappy.compress_raw(f.query("SELECT * FROM system.local WHERE key='local'")))
    req = f.request(f.QUERY, body, flags=0x01)
    resp = f.response(f.RESULT, bytes(cramjam.snappy.compress_raw(f.i32(1))), flags=0x01)
    txn = pair(req, resp, compressor="snappy")
    assert txn.fields["cassandra"]["request"]["query"] == "SELECT * FROM system.local WHERE key='local'"
    assert txn.fields["cassandra"]["request"]["headers"]["flags"] == "Compress"
    assert txn.fields["cassandra"]["request"]["headers"]["length"] == len(body)
    assert txn.fields["cassandra"]["response"]["result"] == {"type": "void"}
    plain = pair(req, resp)
    assert "query" not in plain.fields["cassandra"]["request"]
    assert plain.notes == ["Compressed frame body not decoded: no compressor configured"] * 2


def test_bad_snappy_and_overrunning_bodies_are_notes() -> None:
    bomb = f.response(f.RESULT, b"\xff\xff\xff\xff\x0f" + bytes(10), flags=0x01)  # declares 4 GiB
    txn = pair(f.request(f.QUERY, f.query("x")), bomb, compressor="snappy")
    assert txn.notes == ["Failed to decode the frame body"]
    short = f.response(f.ERROR, f.i32(0x2300) + f.short(50) + b"only this")
    txn = pair(f.request(f.QUERY, f.query("x")), short)
    assert txn.notes == ["Failed to decode the frame body"] and "error" not in txn.fields["cassandra"]["response"]


def test_unmatched_responses_and_config_errors() -> None:
    assert three_ways([Step(S2C, f.response(f.RESULT, f.i32(1)), 1)]) == []
    with pytest.raises(ConfigError, match="only snappy"):
        protocol_config("cassandra", compressor="lz4")
    with pytest.raises(ConfigError, match="unknown frame op"):
        protocol_config("cassandra", ignored_ops=["QUERY", "NOPE"])
    defaults = protocol_config("cassandra")
    assert (defaults.send_request, defaults.send_response, defaults.send_request_header,
            defaults.send_response_header, defaults.compressor, defaults.ignored_ops) == (True, True, True, True, "",
                                                                                           ())


# -- loss, limits, resynchronisation -------------------------------------------------------


def test_gap_inside_a_body_loses_only_that_body() -> None:
    big = f.response(f.RESULT, f.rows_result("ks", "t", [("c", 0x0D)], 40))
    steps = [Step(C2S, f.request(f.QUERY, f.query("a")) + f.request(f.QUERY, f.query("b")), 1),
             Step(S2C, big[:30], 2), Step(S2C, gap=50, ts_ns=3), Step(S2C, big[80:], 4),
             Step(S2C, f.response(f.RESULT, f.i32(1)), 5)]
    lost, fine = three_ways(steps)
    assert lost.notes == ["Packet loss while capturing the response"]
    assert lost.fields["cassandra"]["response"]["headers"]["length"] == len(big) - 9
    assert fine.fields["cassandra"]["request"]["query"] == "b" and fine.notes == []


def test_gap_in_a_header_resynchronises() -> None:
    steps = [Step(C2S, f.request(f.QUERY, f.query("a"))[:5], 1), Step(C2S, gap=40, ts_ns=2),
             Step(C2S, b"garbage that is not a frame", 3), Step(C2S, f.request(f.QUERY, f.query("b")), 4),
             Step(S2C, f.response(f.RESULT, f.i32(1)), 5)]
    (txn,) = three_ways(steps)
    assert txn.fields["cassandra"]["request"]["query"] == "b"


def test_bad_headers_are_parse_errors() -> None:
    parser = CqlParser(Direction.TO_SERVER, ParserSettings())
    with pytest.raises(ParseError, match="version"):
        parser.feed(b"\x05\x00\x00\x00\x07\x00\x00\x00\x00", 1)
    with pytest.raises(ParseError, match="opcode"):
        CqlParser(Direction.TO_SERVER, ParserSettings()).feed(b"\x04\x00\x00\x00\x42\x00\x00\x00\x00", 1)
    with pytest.raises(ParseError, match="negative"):
        CqlParser(Direction.TO_SERVER, ParserSettings()).feed(b"\x04\x00\x00\x00\x07\xff\xff\xff\xff", 1)


def test_large_body_is_joined_once_not_copied_per_segment() -> None:
    body = f.rows_result("ks", "t", [("c", 0x0D)], 200_000)  # about 1 MB
    data = f.response(f.RESULT, body)
    parser = CqlParser(Direction.TO_CLIENT, ParserSettings())
    out = []
    for at in range(0, len(data), 1448):
        out += parser.feed(data[at:at + 1448], at)
        assert parser.buf.unread <= 1448  # segments wait in a list until the body is complete
    (frame,) = out
    assert frame.length == len(body) and frame.data["result"]["rows"]["meta"]["table"] == "t"
    assert frame.ts_ns == 0


def test_oversized_frames_are_skipped_unbuffered() -> None:
    parser = CqlParser(Direction.TO_CLIENT, ParserSettings())
    size = MAX_FRAME_BYTES + 5
    assert parser.feed(struct.pack(">BBhBI", 0x84, 0, 3, f.RESULT, size), 1) == []
    chunk = bytes(1 << 20)
    sent = 0
    while sent + len(chunk) <= size:
        assert parser.feed(chunk, 2) == []
        assert parser.buf.unread == 0
        sent += len(chunk)
    big, ready = parser.feed(bytes(size - sent) + f.response(f.READY), 3)
    assert big.notes == (f"Frame body larger than {MAX_FRAME_BYTES} bytes was not decoded",)
    assert big.length == size and big.data == {} and ready.op == "READY"
    assert parser.counters == {"oversized_frames": 1}
