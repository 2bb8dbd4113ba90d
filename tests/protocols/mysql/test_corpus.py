"""Packetbeat's MySQL pcaps through the CLI (`pktbeat run -t -I`), asserting the event fields."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import corpus, replay


def mysql(port: int = 3306, **options: Any) -> list[dict[str, Any]]:
    return [{"type": "mysql", "ports": [port], **options}]


def test_whitespace_queries_methods_path_and_bytes() -> None:
    events, _ = replay(corpus("mysql_with_whitespaces.pcap"), mysql())
    assert [e["method"] for e in events] == ["SET", "SET", "DROP", "CREATE", "INSERT", "SELECT", "SELECT"]
    select = events[5]
    assert select["path"] == "test.test" and select["destination"]["bytes"] == 118
    assert select["query"] == "select *\nfrom test"
    assert all(e["status"] == "OK" and e["source"]["bytes"] > 0 for e in events)


def test_error_and_affected_rows() -> None:
    [error], _ = replay(corpus("mysql_err_database_not_selected.pcap"), mysql())
    assert error["status"] == "Error"
    assert error["mysql"]["error_code"] == 1046
    assert error["mysql"]["error_message"] == "3D000: No database selected"
    [update], _ = replay(corpus("mysql_affected_rows.pcap"), mysql())
    assert update["method"] == "UPDATE" and update["mysql"]["affected_rows"] == 316


def test_prepared_statement_events() -> None:
    prepare, execute = replay(corpus("mysql_prepare_statement.pcap"), mysql(3307, send_request=True))[0]
    assert prepare["method"] == "PREPARE"
    assert prepare["query"].startswith("select distinct count(distinct purchasede0_.id)")
    assert execute["method"] == "SELECT" and execute["query"] == prepare["query"]
    assert execute["params"] == ["A1224638", "2017-07-28 00:00:00", "2017-10-28 23:59:59"]
    assert execute["mysql"]["num_rows"] == 1
    assert execute["event"]["duration"] > 0


def test_long_result_truncation_and_large_response() -> None:
    [event], _ = replay(corpus("mysql_long_result.pcap"), mysql(send_response=True, max_row_length=79, max_rows=5))
    lines = event["response"].strip().split("\n")
    assert event["mysql"]["num_rows"] == 15 and len(lines) == 6
    assert all(len(line) == 81 for line in lines[3:])
    [big], _ = replay(corpus("mysql_long.pcap"), mysql())
    assert big["mysql"]["num_rows"] == 400
    assert big["destination"]["bytes"] > 100_000  # real bytes, not Packetbeat's 100 KB cap


def test_connection_phase_then_every_query() -> None:
    events, _ = replay(corpus("mysql_connection.pcap"), mysql(all_commands=True))
    assert [e["query"] for e in events] == ["select @@version_comment limit 1", "CREATE DATABASE test",
                                           "SELECT DATABASE()", "COM_INIT_DB test", "SHOW TABLES",
                                           "DROP DATABASE test", "COM_QUIT"]
    assert events[3]["method"] == "INIT_DB"


def test_integration_mix_counts() -> None:
    events, _ = replay(corpus("mysql_int_string_operations.pcap"), mysql(13001))
    methods = [e["method"] for e in events]
    assert len(events) == 157
    assert (methods.count("SELECT"), methods.count("SHOW"), methods.count("ALTER")) == (134, 10, 4)
