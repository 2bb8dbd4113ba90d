"""Packetbeat's PostgreSQL pcaps through the CLI (`pktbeat run -t -I`), asserting the event fields."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import corpus, replay


def pgsql(**options: Any) -> list[dict[str, Any]]:
    return [{"type": "pgsql", "ports": [5432], **options}]


def test_select_response_text_and_bytes() -> None:
    [event], _ = replay(corpus("pgsql_request_response.pcap"), pgsql(send_response=True))
    assert event["query"] == "select * from test" and event["method"] == "SELECT"
    assert event["response"] == "a,b,c\nmea,meb,mec\nmea1,meb1,mec1\nmea2,meb2,mec2\nmea3,meb3,mec3\n"
    assert event["destination"]["bytes"] == 202
    assert event["pgsql"] == {"num_rows": 4, "num_fields": 3}


def test_insert_and_insert_error() -> None:
    [ok], _ = replay(corpus("pgsql_insert.pcap"), pgsql())
    assert (ok["method"], ok["source"]["bytes"], ok["destination"]["bytes"]) == ("INSERT", 63, 16)
    [error], _ = replay(corpus("pgsql_insert_error.pcap"), pgsql())
    assert error["status"] == "Error"
    assert error["pgsql"]["error_code"] == "23505"
    assert error["pgsql"]["error_severity"] == "ERROR"
    assert "duplicate key" in error["pgsql"]["error_message"]


def test_extended_query_and_response_time() -> None:
    [event], _ = replay(corpus("pgsql_extended_query.pcap"), pgsql())
    assert event["query"] == "SELECT * from test where id = $1"
    assert (event["source"]["bytes"], event["destination"]["bytes"]) == (90, 101)
    assert event["params"] == ["1"]
    [rt], _ = replay(corpus("pgsql_rt.pcap"), pgsql())
    assert rt["event"]["duration"] == 38_800_000


def test_long_result_truncation() -> None:
    [event], _ = replay(corpus("pgsql_long_result.pcap"), pgsql(send_response=True, max_row_length=79, max_rows=5))
    lines = event["response"].strip().split("\n")
    assert event["pgsql"]["num_rows"] == 15 and len(lines) == 6
    assert all(len(line) == 83 for line in lines[4:])  # 79 bytes, two commas, two quotes
