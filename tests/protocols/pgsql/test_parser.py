"""PostgreSQL sessions fed literal bytes three ways: whole, byte by byte, at random cut points."""

from __future__ import annotations

import struct

from agent.protocols.pgsql.values import binary_text, split_statements
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.pgsql import messages as m

PORT = 5432
MS = 1_000_000
SELECT_ONE = m.row_description("x") + m.data_row(b"1") + m.complete("SELECT 1") + m.READY


def three_ways(steps: list[Step], **options: object) -> list:
    return assert_same_three_ways("pgsql", steps, server_port=PORT, options=dict(options) or None)


def test_simple_query_with_rows_and_sizes() -> None:
    [txn] = three_ways([Step(C2S, m.SIMPLE_REQUEST, 0), Step(S2C, m.DATA_RESPONSE, 2 * MS)], send_response=True)
    assert txn.fields["query"] == "SELECT * FROM Foobar"
    assert txn.fields["method"] == "SELECT"
    assert txn.fields["pgsql"] == {"num_rows": 3, "num_fields": 2}
    assert txn.client_bytes == 27
    assert txn.server_bytes == len(m.DATA_RESPONSE) - 6  # up to CommandComplete, ReadyForQuery not counted
    assert txn.fields["response"] == "id,value\n1,toto\n3,martin\n4,jean\n"
    assert txn.end_ns - txn.ts_ns == 2 * MS


def test_four_rows_response_bytes() -> None:
    [txn] = three_ways([Step(C2S, m.query("select * from test;")), Step(S2C, m.RESPONSE_4_ROWS)], send_response=True)
    assert txn.server_bytes == 202
    assert txn.fields["response"] == "a,b,c\nmea,meb,mec\nmea1,meb1,mec1\nmea2,meb2,mec2\nmea3,meb3,mec3\n"


def test_incomplete_response_waits_for_the_rest() -> None:
    head, tail = m.RESPONSE_4_ROWS[:150], m.RESPONSE_4_ROWS[150:]
    steps = [Step(C2S, m.query("select * from test")), Step(S2C, head)]
    assert run_stream("pgsql", steps, server_port=PORT, expire=False) == []
    [txn] = three_ways([*steps, Step(S2C, tail)])
    assert txn.fields["pgsql"]["num_rows"] == 4


def test_three_statements_in_one_query() -> None:
    steps = [Step(C2S, m.query("SET DateStyle='ISO'; SET client_encoding='UTF8';select oid, encoding, "
                               "datlastsysoid from pg_database where datname = 'x'")),
             Step(S2C, m.THREE_RESPONSES)]
    txns = three_ways(steps)
    assert [t.fields["method"] for t in txns] == ["SET", "SET", "SELECT"]
    assert txns[0].fields["query"] == "SET DateStyle='ISO'"
    assert txns[2].fields["pgsql"] == {"num_rows": 1, "num_fields": 3}


def test_error_response_code_severity_message() -> None:
    steps = [Step(C2S, m.query("insert into t values (1)")), Step(S2C, m.ERROR_RESPONSE + m.msg("Z", b"E"))]
    [txn] = three_ways(steps)
    assert txn.status == "Error"
    assert txn.fields["pgsql"]["error_code"] == "25P02"
    assert txn.fields["pgsql"]["error_severity"] == "ERROR"
    assert txn.fields["pgsql"]["error_message"] == ("current transaction is aborted, commands ignored until end of "
                                                     "transaction block")
    assert txn.server_bytes == 137


def test_error_skips_rest_of_query() -> None:
    steps = [Step(C2S, m.query("begin; insert into t values (1); commit")),
             Step(S2C, m.complete("BEGIN") + m.error("23505", "duplicate key") + m.msg("Z", b"E")),
             Step(C2S, m.query("select 1")), Step(S2C, SELECT_ONE)]
    txns = three_ways(steps)
    assert [(t.fields["method"], t.status) for t in txns] == [("BEGIN", "OK"), ("INSERT", "Error"), ("SELECT", "OK")]


def test_invalid_message_gives_no_transaction() -> None:
    steps = [Step(C2S, m.query("select 1")), Step(S2C, bytes.fromhex("4300000002"))]
    assert three_ways(steps) == []


def test_gap_in_response_publishes_with_note() -> None:
    steps = [Step(C2S, m.GAP_REQUEST), Step(S2C, m.GAP_RESPONSE), Step(S2C, gap=10)]
    [txn] = three_ways(steps)
    assert txn.notes == ["Packet loss while capturing the response"]
    assert txn.status == "OK"
    assert txn.fields["pgsql"]["num_rows"] == 2


def test_malicious_data_row_lengths() -> None:
    lying = m.msg("D", struct.pack("!h", 1) + struct.pack("!i", 1) + b"a" + struct.pack("!i", 1) + b"b")
    huge = m.msg("D", struct.pack("!h", 2) + struct.pack("!i", 0x7FFFFFFF) + b"abc")
    negative_count = m.msg("D", struct.pack("!hi", -5, 1) + b"z")
    reply = m.row_description("a") + lying + huge + negative_count + m.complete("SELECT 3") + m.READY
    [txn] = three_ways([Step(C2S, m.query("select a from t")), Step(S2C, reply)], send_response=True)
    assert txn.fields["pgsql"]["num_rows"] == 3
    assert txn.fields["response"].split("\n")[:3] == ["a", "a", "abc"]


def test_response_time_ignores_unknown_messages_before_the_query() -> None:
    steps = [Step(C2S, m.startup(), 0), Step(S2C, m.msg("R", struct.pack("!i", 0)) + m.msg("S", b"a\0b\0")
                                                 + m.msg("K", bytes(8)) + m.READY, 1 * MS),
             Step(C2S, m.query("select * from test;"), 2000 * MS),
             Step(S2C, m.RESPONSE_4_ROWS, 2000 * MS + 38_800_000)]
    [txn] = three_ways(steps)
    assert txn.end_ns - txn.ts_ns == 38_800_000


def test_extended_query_one_transaction_with_params() -> None:
    request = (m.parse("SELECT * from test where id = $1", oids=(23,)) + m.bind([struct.pack("!i", 7)], formats=(1,))
               + m.describe() + m.execute() + m.SYNC)
    reply = (m.PARSE_COMPLETE + m.BIND_COMPLETE + m.row_description("id", "name") + m.data_row(b"7", b"seven")
             + m.complete("SELECT 1") + m.READY)
    [txn] = three_ways([Step(C2S, request), Step(S2C, reply)], send_response=True)
    assert txn.fields["query"] == "SELECT * from test where id = $1"
    assert txn.fields["params"] == ["7"]
    assert txn.fields["pgsql"] == {"num_rows": 1, "num_fields": 2}
    assert txn.client_bytes == len(request)
    assert txn.server_bytes == len(reply) - 6 - 10  # ParseComplete, BindComplete and ReadyForQuery not counted
    assert txn.fields["response"] == "id,name\n7,seven\n"


def test_extended_set_is_not_reported_as_packetbeat_does() -> None:
    request = m.parse("SET extra_float_digits = 3") + m.bind([]) + m.execute() + m.SYNC
    reply = m.PARSE_COMPLETE + m.BIND_COMPLETE + m.complete("SET") + m.READY
    assert three_ways([Step(C2S, request), Step(S2C, reply)]) == []


def test_named_statement_cached_across_batches_and_sessions() -> None:
    prepare = m.parse("select name from t where id = $1", name="s1") + m.describe("S", "s1") + m.SYNC
    prepare_reply = (m.PARSE_COMPLETE + m.msg("t", struct.pack("!hI", 1, 23)) + m.row_description("name")
                     + m.READY)
    run = m.bind([b"5"], statement="s1") + m.execute() + m.SYNC
    run_reply = m.BIND_COMPLETE + m.data_row(b"five") + m.complete("SELECT 1") + m.READY
    txns = three_ways([Step(C2S, prepare), Step(S2C, prepare_reply), Step(C2S, run), Step(S2C, run_reply),
                       Step(C2S, run), Step(S2C, run_reply)], send_response=True)
    assert len(txns) == 2
    for txn in txns:
        assert txn.fields["query"] == "select name from t where id = $1"
        assert txn.fields["params"] == ["5"]
        assert txn.fields["response"] == "name\nfive\n"  # column names from the statement's Describe


def test_parse_error_reported_with_its_sql() -> None:
    request = m.parse("selec 1") + m.bind([]) + m.execute() + m.SYNC
    reply = m.error("42601", 'syntax error at or near "selec"') + m.READY
    [txn] = three_ways([Step(C2S, request), Step(S2C, reply)])
    assert txn.fields["query"] == "selec 1"
    assert txn.status == "Error"
    assert txn.fields["pgsql"]["error_code"] == "42601"


def test_pipelined_executes_in_one_sync() -> None:
    request = b"".join(m.parse("insert into t values ($1)") + m.bind([str(i).encode()]) + m.execute()
                       for i in range(3)) + m.SYNC
    reply = (m.PARSE_COMPLETE + m.BIND_COMPLETE + m.complete("INSERT 0 1")) * 3 + m.READY
    txns = three_ways([Step(C2S, request), Step(S2C, reply)])
    assert [t.fields["params"] for t in txns] == [["0"], ["1"], ["2"]]
    assert sum(t.client_bytes for t in txns) == len(request)


def test_copy_out_and_in() -> None:
    copy_out = (m.msg("H", b"\x00\x00\x01\x00\x00") + m.msg("d", b"1\tone\n") + m.msg("d", b"2\ttwo\n")
                + m.msg("c", b"") + m.complete("COPY 2") + m.READY)
    copy_in_reply = m.msg("G", b"\x00\x00\x01\x00\x00")
    data = m.msg("d", b"3\tthree\n") + m.msg("c", b"")
    steps = [Step(C2S, m.query("COPY t TO STDOUT")), Step(S2C, copy_out),
             Step(C2S, m.query("COPY t FROM STDIN")), Step(S2C, copy_in_reply), Step(C2S, data),
             Step(S2C, m.complete("COPY 1") + m.READY)]
    out, into = three_ways(steps, send_response=True)
    assert out.fields["pgsql"]["num_rows"] == 2
    assert out.fields["response"] == "1\tone\n2\ttwo\n"
    assert into.fields["pgsql"]["num_rows"] == 1
    assert into.client_bytes == len(m.query("COPY t FROM STDIN")) + len(data)


def test_notices_become_notes() -> None:
    reply = m.error("25P01", "there is no transaction in progress", "WARNING", typ="N") + m.complete("COMMIT") + m.READY
    [txn] = three_ways([Step(C2S, m.query("commit")), Step(S2C, reply)])
    assert txn.status == "OK"
    assert txn.notes == ["WARNING 25P01: there is no transaction in progress"]


def test_ssl_request_then_encrypted_stream_is_left_alone() -> None:
    steps = [Step(C2S, m.SSL_REQUEST), Step(S2C, b"S"), Step(C2S, b"\x16\x03\x01\x00\x50" + bytes(80)),
             Step(S2C, b"\x16\x03\x03\x00\x30" + bytes(48)), Step(C2S, m.query("select 1"))]
    assert three_ways(steps) == []


def test_ssl_refused_then_plain_startup() -> None:
    steps = [Step(C2S, m.SSL_REQUEST), Step(S2C, b"N"), Step(C2S, m.startup()),
             Step(S2C, m.msg("R", struct.pack("!i", 0)) + m.READY),
             Step(C2S, m.query("select 1")), Step(S2C, SELECT_ONE)]
    [txn] = three_ways(steps)
    assert txn.fields["query"] == "select 1"


def test_mid_stream_pick_up() -> None:
    steps = [Step(S2C, m.RESPONSE_4_ROWS[30:]),  # the tail of a result whose query was not seen
             Step(C2S, m.query("select 2")), Step(S2C, SELECT_ONE)]
    [txn] = three_ways(steps)
    assert txn.fields["query"] == "select 2"


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = "insert into t values ('a;b', \"c;d\"); -- x;y\n select $$;$$ /* ; */; select E'it''s;'"
    assert split_statements(sql) == ["insert into t values ('a;b', \"c;d\")", "-- x;y\n select $$;$$ /* ; */",
                                     "select E'it''s;'"]
    assert split_statements(" ; ;select 1;") == ["select 1"]


def test_binary_parameter_values() -> None:
    assert binary_text(20, struct.pack("!q", -3)) == "-3"
    assert binary_text(16, b"\x01") == "t"
    assert binary_text(1700, struct.pack("!hhHh", 2, 0, 0, 2) + struct.pack("!hh", 12, 3400)) == "12.34"
    assert binary_text(1082, struct.pack("!i", 1)) == "2000-01-02"
    assert binary_text(9999, b"\x01\x02") == "\\x0102"
