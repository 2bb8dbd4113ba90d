"""MySQL sessions fed literal bytes: whole, byte by byte and at random cut points (Packetbeat's Go tests and more)."""

from __future__ import annotations

import struct
import zlib

import pytest

from agent.protocols.cursor import Cursor
from agent.protocols.errors import ShortRead
from agent.protocols.mysql import wire
from agent.protocols.mysql.framing import Framer, Inflater
from agent.protocols.mysql.wire import lenenc
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.mysql import messages as m

PORT = 3306
MS = 1_000_000


def three_ways(steps: list[Step], **options: object) -> list:
    return assert_same_three_ways("mysql", steps, server_port=PORT, options=dict(options) or None)


def test_insert_ok_response_sizes_and_ids() -> None:
    [txn] = three_ways([Step(C2S, m.INSERT_REQUEST, 0), Step(S2C, m.INSERT_OK, 5 * MS)])
    assert txn.fields["method"] == "INSERT"
    assert txn.fields["query"].startswith("INSERT INTO post (username, title, body, pub_date) VALUES ('Anonymous'")
    assert txn.fields["mysql"] == {"affected_rows": 1, "insert_id": 4, "num_fields": 0, "num_rows": 0}
    assert (txn.client_bytes, txn.server_bytes) == (115, 11)
    assert txn.status == "OK"
    assert txn.end_ns - txn.ts_ns == 5 * MS


def test_error_response_code_and_sqlstate_message() -> None:
    [txn] = three_ways([Step(C2S, m.query("select * from posssst")), Step(S2C, m.ERROR_RESPONSE)])
    assert txn.status == "Error"
    assert txn.fields["mysql"]["error_code"] == 1146
    assert txn.fields["mysql"]["error_message"] == "42S02: Table 'minitwit.possst' doesn't exist"
    assert txn.server_bytes == 50


def test_result_split_over_two_segments_with_fields_rows_and_path() -> None:
    steps = [Step(C2S, m.query("select * from post")), Step(S2C, m.DATA_RESPONSE_1), Step(S2C, m.DATA_RESPONSE_2)]
    [txn] = three_ways(steps, send_response=True)
    mysql = txn.fields["mysql"]
    assert (mysql["num_fields"], mysql["num_rows"]) == (5, 4)
    assert txn.fields["path"] == "minitwit.post"
    assert txn.server_bytes == 528
    lines = txn.fields["response"].split("\n")
    assert lines[0] == "post_id,post_username,post_title,post_body,post_pub_date"
    assert lines[1] == "1,Anonymous,test,dasdas\\r\\n,2013-07-22 17:34:02"
    assert len(lines) == 6 and lines[5] == ""


def test_three_ok_responses_in_one_segment() -> None:
    steps = [Step(C2S, m.query("set a=1")), Step(C2S, m.query("set b=2")), Step(C2S, m.query("set c=3")),
             Step(S2C, m.ok() * 3)]
    txns = three_ways(steps)
    assert [t.fields["query"] for t in txns] == ["set a=1", "set b=2", "set c=3"]
    assert all(t.status == "OK" and t.server_bytes == 11 for t in txns)


def test_update_response_split_in_three() -> None:
    steps = [Step(C2S, m.query("update t set a=1")), *(Step(S2C, part) for part in m.UPDATE_OK_PARTS)]
    [txn] = three_ways(steps)
    assert txn.fields["mysql"]["affected_rows"] == 1
    assert txn.server_bytes == 52


def test_windows_line_ending_and_leading_whitespace() -> None:
    steps = [Step(C2S, m.query("\r\n\tSELECT\r\n\t1;")), Step(S2C, m.text_result([m.column(b"", b"", b"1")],
                                                                                 [[b"1"]]))]
    [txn] = three_ways(steps)
    assert txn.fields["method"] == "SELECT"
    assert txn.fields["query"] == "SELECT\r\n\t1;"
    assert "path" not in txn.fields  # no table behind the column


def test_length_encoded_integers_and_null() -> None:
    assert lenenc(Cursor(b"\xfa")) == 250
    assert lenenc(Cursor(b"\xfc\x01\x02")) == 0x0201
    assert lenenc(Cursor(b"\xfd\x01\x02\x03")) == 0x030201
    assert lenenc(Cursor(b"\xfe" + struct.pack("<Q", 1 << 40))) == 1 << 40
    assert lenenc(Cursor(b"\xfb")) is None
    for short in (b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x01", b"\xff"):
        with pytest.raises(ShortRead):
            lenenc(Cursor(short))
    rows = [[b"a", None], [b"x" * 300, b"y" * 70000]]
    steps = [Step(C2S, m.query("select a, b from t")),
             Step(S2C, m.text_result([m.column(b"db", b"t", b"a"), m.column(b"db", b"t", b"b")], rows))]
    [txn] = three_ways(steps, send_response=True, max_row_length=2000)
    lines = txn.fields["response"].split("\n")
    assert lines[:2] == ["a,b", "a,NULL"]
    assert lines[2] == "x" * 300 + "," + "y" * 1700  # the row is cut at max_row_length bytes
    assert txn.fields["mysql"]["num_rows"] == 2


def test_16mib_packet_continuation() -> None:
    sql = "select '" + "x" * (wire.MAX_PACKET + 100) + "'"
    payload = b"\x03" + sql.encode()
    first = payload[:wire.MAX_PACKET]
    rest = payload[wire.MAX_PACKET:]
    request = m.packet(0, first) + m.packet(1, rest)
    assert first and request[:3] == b"\xff\xff\xff"
    steps = [Step(C2S, request), Step(S2C, m.ok(seq=2))]
    whole = run_stream("mysql", steps, server_port=PORT)
    split = run_stream("mysql", steps, server_port=PORT, split="random", seed=3)
    for txns in (whole, split):
        [txn] = txns
        assert txn.fields["method"] == "SELECT"
        assert txn.client_bytes == len(request)
        assert "The query was truncated" in txn.notes  # 16 MiB of SQL is cut at 1 MiB kept
        assert len(txn.fields["query"]) < 2 << 20


def test_framer_joins_exact_16mib_boundary_with_empty_continuation() -> None:
    framer = Framer()
    payload = b"\x03" + b"a" * (wire.MAX_PACKET - 1)
    framer.push(m.packet(0, payload) + m.packet(1, b"") + m.packet(0, b"\x0e"), 1)
    first = framer.next(lambda first, length: 10)
    assert first is not None and first.length == wire.MAX_PACKET and first.payload == payload[:10]
    assert first.wire == wire.MAX_PACKET + 8
    second = framer.next(lambda first, length: 10)
    assert second is not None and second.payload == b"\x0e"


def test_invalid_column_definitions_give_empty_columns_not_errors() -> None:
    # Packetbeat's Test_parseMysqlResponse_invalid shapes, each as the reply to a query
    bodies = [b"\x01", b"\x00", b"\x01\x05\x00\x00\x00", b"\x0b" + b"\x00" * 8 + b"\x02\x00\x00"]
    for body in bodies:
        reply = m.packet(1, b"\x01") + m.packet(2, body) + m.packet(3, m.EOF_PAYLOAD) + m.packet(4, m.EOF_PAYLOAD)
        [txn] = three_ways([Step(C2S, m.query("select 1")), Step(S2C, reply)], send_response=True)
        assert txn.status == "OK" and txn.fields["mysql"]["num_fields"] == 1
        assert "path" not in txn.fields


def test_gap_inside_response_publishes_with_note() -> None:
    steps = [Step(C2S, m.GAP_REQUEST), Step(S2C, m.GAP_RESPONSE), Step(S2C, gap=10)]
    [txn] = three_ways(steps)
    assert txn.notes == ["Packet loss while capturing the response"]
    assert txn.status == "OK"
    assert txn.fields["mysql"]["num_rows"] == 2
    assert txn.fields["path"] == "test.test"


def test_gap_inside_request_drops_it() -> None:
    steps = [Step(C2S, m.GAP_REQUEST[:-1]), Step(C2S, gap=1), Step(S2C, m.ok())]
    assert three_ways(steps) == []
    # and the stream is picked up again at the next command
    steps += [Step(C2S, m.query("select 2")), Step(S2C, m.ok())]
    [txn] = three_ways(steps)
    assert txn.fields["query"] == "select 2"


def test_prepared_statement_prepare_and_execute() -> None:
    steps = [Step(C2S, m.PREPARE_REQUEST, 0), Step(S2C, m.PREPARE_RESPONSE, 1 * MS),
             Step(C2S, m.EXECUTE_REQUEST, 2 * MS), Step(S2C, m.EXECUTE_RESPONSE, 3 * MS)]
    prepare, execute = three_ways(steps, send_request=True)
    assert prepare.fields["method"] == "PREPARE"
    assert prepare.fields["query"] == m.PREPARED_SQL
    assert prepare.fields["mysql"]["num_fields"] == 1
    assert execute.fields["method"] == "SELECT"
    assert execute.fields["query"] == m.PREPARED_SQL
    assert execute.fields["params"] == ["A1224638", "2017-07-28 00:00:00", "2017-10-28 23:59:59"]
    assert execute.fields["mysql"]["num_rows"] == 1 and execute.fields["mysql"]["num_fields"] == 1
    assert execute.fields["request"] == m.PREPARED_SQL


def test_execute_of_unknown_statement_has_note() -> None:
    [txn] = three_ways([Step(C2S, m.EXECUTE_REQUEST), Step(S2C, m.EXECUTE_RESPONSE)])
    assert txn.fields["query"] == "Request Execute Statement"
    assert txn.notes == ["The actual query being used is unknown"]
    assert txn.fields["mysql"]["num_rows"] == 1


def test_close_forgets_statement_and_binary_rows_are_decoded() -> None:
    prepare_ok = m.packet(1, b"\x00" + struct.pack("<IHHBH", 7, 2, 1, 0, 0))
    defs = (m.packet(2, m.column(b"", b"", b"?")) + m.packet(3, m.EOF_PAYLOAD)
            + m.packet(4, m.column(b"shop", b"items", b"id", typ=wire.T_LONGLONG))
            + m.packet(5, m.column(b"shop", b"items", b"price", typ=wire.T_DOUBLE)) + m.packet(6, m.EOF_PAYLOAD))
    execute = m.packet(0, b"\x17" + struct.pack("<IBI", 7, 0, 1) + b"\x00\x01" + b"\x08\x00" + struct.pack("<q", -5))
    row = b"\x00\x00" + struct.pack("<q", 42) + struct.pack("<d", 2.5)
    result = (m.packet(1, b"\x02") + m.packet(2, m.column(b"shop", b"items", b"id", typ=wire.T_LONGLONG))
              + m.packet(3, m.column(b"shop", b"items", b"price", typ=wire.T_DOUBLE)) + m.packet(4, m.EOF_PAYLOAD)
              + m.packet(5, row) + m.packet(6, m.EOF_PAYLOAD))
    close = m.packet(0, b"\x19" + struct.pack("<I", 7))
    steps = [Step(C2S, m.packet(0, b"\x16select id, price from items where id > ?")), Step(S2C, prepare_ok + defs),
             Step(C2S, execute), Step(S2C, result), Step(C2S, close), Step(C2S, execute), Step(S2C, result)]
    prepare, first, after_close = three_ways(steps, send_response=True)
    assert prepare.fields["path"] == "shop.items"
    assert first.fields["params"] == ["-5"]
    assert first.fields["response"] == "id,price\n42,2.5\n"
    assert after_close.notes == ["The actual query being used is unknown"]


def test_connection_phase_with_deprecate_eof() -> None:
    steps = [Step(C2S if d == "c" else S2C, m.h(x), i * MS) for i, (d, x) in enumerate(m.CONNECTION)]
    txns = three_ways(steps, send_response=True)
    assert [t.fields["query"] for t in txns] == ["select @@version_comment limit 1", "CREATE DATABASE test",
                                                 "SELECT DATABASE()", "SHOW TABLES", "DROP DATABASE test"]
    assert txns[0].fields["response"] == "@@version_comment\nHomebrew\n"
    assert txns[2].fields["response"] == "DATABASE()\nNULL\n"
    assert txns[3].fields["path"] == "TABLES"  # no schema in that column definition
    assert [t.fields["mysql"]["num_rows"] for t in txns] == [1, 0, 1, 0, 0]
    assert txns[1].fields["mysql"]["affected_rows"] == 1


def test_all_commands_reports_ping_init_db_and_quit() -> None:
    steps = [Step(C2S if d == "c" else S2C, m.h(x), i * MS) for i, (d, x) in enumerate(m.CONNECTION)]
    txns = three_ways(steps, all_commands=True)
    methods = [t.fields["method"] for t in txns]
    assert methods == ["SELECT", "CREATE", "SELECT", "INIT_DB", "SHOW", "DROP", "QUIT"]
    init_db = txns[3]
    assert init_db.fields["query"] == "COM_INIT_DB test" and init_db.status == "OK"
    assert txns[-1].end_ns is None and txns[-1].server_bytes is None


def test_mid_stream_result_learns_deprecate_eof() -> None:
    # no handshake seen: the first reply after the query has no EOF between columns and rows
    steps = [Step(S2C, m.h(m.CONNECTION[6][1])),  # a reply whose command was not seen: ignored
             Step(C2S, m.query("select 1")),
             Step(S2C, m.text_result([m.column(b"", b"", b"1")], [[b"1"], [b"2"]], deprecate_eof=True)),
             Step(C2S, m.query("select 2")),
             Step(S2C, m.text_result([m.column(b"", b"", b"2")], [], deprecate_eof=True))]
    first, second = three_ways(steps)
    assert first.fields["mysql"]["num_rows"] == 2
    assert second.fields["mysql"]["num_rows"] == 0


def test_multiple_result_sets_are_one_transaction() -> None:
    more = 0x0008 | 0x0002
    reply = (m.text_result([m.column(b"db", b"a", b"x")], [[b"1"]], status=more)
             + m.text_result([m.column(b"db", b"b", b"y")], [[b"2"], [b"3"]], status=more)[0:]
             + m.ok(seq=9, affected=0))
    [txn] = three_ways([Step(C2S, m.query("CALL two_results()")), Step(S2C, reply)], send_response=True)
    assert txn.fields["mysql"]["num_rows"] == 3
    assert txn.fields["mysql"]["num_fields"] == 1
    assert txn.fields["path"] == "db.a, db.b"
    assert txn.fields["response"] == "x\n1\ny\n2\n3\n"


def _handshake(caps: int) -> list[Step]:
    greeting = (b"\x0a" + b"10.11.6-MariaDB\x00" + struct.pack("<I", 9) + b"12345678\x00"
                + struct.pack("<H", caps & 0xFFFF) + b"\x21\x02\x00" + struct.pack("<H", caps >> 16) + b"\x15"
                + bytes(10) + b"123456789012\x00" + b"mysql_native_password\x00")
    login = (struct.pack("<IIB", caps, 1 << 24, 0x21) + bytes(23) + b"root\x00" + b"\x00" + b"shop\x00"
             + b"mysql_native_password\x00")
    return [Step(S2C, m.packet(0, greeting)), Step(C2S, m.packet(1, login)), Step(S2C, m.ok(seq=2))]


CAPS = wire.CLIENT_PROTOCOL_41 | wire.CLIENT_SECURE_CONNECTION | wire.CLIENT_CONNECT_WITH_DB | 1 | \
    wire.CLIENT_PLUGIN_AUTH


def test_compressed_protocol_both_directions() -> None:
    steps = _handshake(CAPS | wire.CLIENT_COMPRESS)
    result = m.text_result([m.column(b"shop", b"t", b"v")], [[b"v" * 100]] * 50)
    steps += [Step(C2S, m.compress(m.query("select v from t"), 0)),
              Step(S2C, m.compress(result, 0)),
              Step(C2S, m.compress(m.query("do 1"), 0, stored=True)),
              Step(S2C, m.compress(m.ok(), 0, stored=True))]
    first, second = three_ways(steps, send_response=True)
    assert first.fields["query"] == "select v from t"
    assert first.fields["mysql"]["num_rows"] == 50 and first.fields["path"] == "shop.t"
    assert first.server_bytes == len(result)  # protocol bytes, before compression
    assert second.fields["query"] == "do 1"


def test_compressed_zip_bomb_is_refused_with_bounded_memory() -> None:
    inflater = Inflater()
    bomb_plain = b"\x00" * (50 << 20)
    body = zlib.compress(bomb_plain, 9)
    frame = struct.pack("<I", len(body))[:3] + b"\x00" + struct.pack("<I", 1000)[:3] + body
    inflater.push(frame)
    produced = 0
    with pytest.raises(Exception, match="declared"):
        for _ in range(100):
            chunk = inflater.pull()
            produced += len(chunk)
            if not chunk:
                break
    assert produced <= 1000
    # through a session: a ParseError the dispatcher counts, and no event
    steps = [*_handshake(CAPS | wire.CLIENT_COMPRESS), Step(C2S, frame), Step(S2C, m.compress(m.ok(), 0))]
    assert run_stream("mysql", steps, server_port=PORT) == []


def test_tls_upgrade_is_recognised_and_left_alone() -> None:
    greeting = _handshake(CAPS | wire.CLIENT_SSL)[0]
    ssl_request = m.packet(1, struct.pack("<IIB", CAPS | wire.CLIENT_SSL, 1 << 24, 0x21) + bytes(23))
    steps = [greeting, Step(C2S, ssl_request), Step(C2S, b"\x16\x03\x01\x02\x00" + bytes(100)),
             Step(S2C, b"\x16\x03\x03\x00\x50" + bytes(80)), Step(C2S, m.query("select 1"))]
    assert three_ways(steps) == []


def test_local_infile_counts_file_bytes_in_the_request() -> None:
    steps = [Step(C2S, m.query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t")),
             Step(S2C, m.packet(1, b"\xfb/tmp/x")),
             Step(C2S, m.packet(2, b"1,2\n3,4\n") + m.packet(3, b"")),
             Step(S2C, m.ok(seq=4, affected=2))]
    [txn] = three_ways(steps)
    assert txn.fields["method"] == "LOAD"
    assert txn.fields["mysql"]["affected_rows"] == 2
    assert txn.client_bytes == len(steps[0].data) + len(steps[2].data)


def test_error_inside_rows_and_progress_reports() -> None:
    progress = m.packet(1, b"\xff\xff\xff\x01\x01\x02" + b"\x00" * 8)
    reply = (m.packet(1, b"\x01") + m.packet(2, m.column(b"d", b"t", b"c")) + m.packet(3, m.EOF_PAYLOAD)
             + m.packet(4, m.lstr(b"1")) + m.packet(5, b"\xff\x25\x05#70100Query execution was interrupted"))
    steps = [Step(C2S, m.query("select c from t")), Step(S2C, progress), Step(S2C, reply)]
    [txn] = three_ways(steps)
    assert txn.status == "Error"
    assert txn.fields["mysql"]["error_code"] == 1317
    assert txn.fields["mysql"]["error_message"] == "70100: Query execution was interrupted"
    assert txn.fields["mysql"]["num_rows"] == 1


def test_max_rows_and_counts_beyond_it() -> None:
    rows = [[str(i).encode()] for i in range(100)]
    steps = [Step(C2S, m.query("select n from t")), Step(S2C, m.text_result([m.column(b"d", b"t", b"n")], rows))]
    [txn] = three_ways(steps, send_response=True, max_rows=3)
    assert txn.fields["mysql"]["num_rows"] == 100
    assert txn.fields["response"] == "n\n0\n1\n2\n"


def test_statement_cache_survives_the_session() -> None:
    """A new session on the same 4-tuple (the transport expired the idle connection) still knows the SQL."""
    from agent import metrics
    from agent.protocols.base import SessionContext
    from agent.protocols.mysql.plugin import SPEC
    from tests.helpers.sessions import conn_info, protocol_config

    config = protocol_config("mysql")
    out: list = []
    info = conn_info(PORT)
    counters = metrics.register("test.mysql.store")
    first = SPEC.tcp(SessionContext("mysql", config, info, out.append, counters))  # type: ignore[misc]
    first.feed(C2S, m.PREPARE_REQUEST, 0)
    first.feed(S2C, m.PREPARE_RESPONSE, 1)
    first.expire(20 * 10**9)
    second = SPEC.tcp(SessionContext("mysql", config, info, out.append, counters))  # type: ignore[misc]
    second.feed(C2S, m.EXECUTE_REQUEST, 30 * 10**9)
    second.feed(S2C, m.EXECUTE_RESPONSE, 31 * 10**9)
    assert out[-1].fields["query"] == m.PREPARED_SQL
    second.fin(C2S, 32 * 10**9)
    third = SPEC.tcp(SessionContext("mysql", config, info, out.append, counters))  # type: ignore[misc]
    third.feed(C2S, m.EXECUTE_REQUEST, 40 * 10**9)
    third.feed(S2C, m.EXECUTE_RESPONSE, 41 * 10**9)
    assert out[-1].fields["query"] == "Request Execute Statement"  # the connection closed in between
