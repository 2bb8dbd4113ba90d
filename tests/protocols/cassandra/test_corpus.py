"""Packetbeat's Cassandra pcaps through the CLI (`pktbeat run -t -I`), checking the published events."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import corpus, replay


def cassandra(**options: Any) -> list[dict[str, Any]]:
    return [{"type": "cassandra", "ports": [9042], **options}]


def headers(event: dict[str, Any], side: str) -> tuple[Any, ...]:
    h = event["cassandra"][side]["headers"]
    return h["version"], h["op"], h["stream"], h["length"], h["flags"]


def test_create_keyspace() -> None:
    events, _ = replay(corpus("cassandra_create_keyspace.pcap"), cassandra())
    event = events[0]
    assert event["type"] == "cassandra" and event["status"] == "OK"
    assert event["event"]["duration"] == 62453000 and event["event"]["end"] == "2016-06-28T09:03:53.502Z"
    assert (event["client"]["port"], event["client"]["bytes"], event["server"]["bytes"]) == (52749, 133, 44)
    assert event["network"]["bytes"] == 177 and event["network"]["community_id"] == "1:bCORHZnGIk6GWYaE3Kn0DOpQCKE="
    assert event["cassandra"]["request"]["query"] == ("CREATE KEYSPACE mykeyspace WITH REPLICATION = { 'class' : "
                                                      "'SimpleStrategy', 'replication_factor' : 1 };")
    assert headers(event, "request") == ("4", "QUERY", 20, 124, "Default")
    assert headers(event, "response") == ("4", "RESULT", 20, 35, "Default")
    assert event["cassandra"]["response"]["result"] == {"type": "schemaChanged", "schema_change": {
        "change": "CREATED", "target": "KEYSPACE", "keyspace": "mykeyspace"}}


def test_queries() -> None:
    for pcap, query, kind in (
            ("cassandra_create_table.pcap", "CREATE TABLE users (\n  user_id int PRIMARY KEY,\n  fname text,\n  "
                                            "lname text\n);", "schemaChanged"),
            ("cassandra_insert.pcap", "INSERT INTO users (user_id,  fname, lname)\n  VALUES (1745, 'john', "
                                      "'smith');", "void"),
            ("cassandra_select.pcap", "SELECT * FROM users;", "rows"),
            ("cassandra_create_index.pcap", "CREATE INDEX ON users (lname);", "schemaChanged"),
            ("cassandra_select_via_index.pcap", "SELECT * FROM users WHERE lname = 'smith';", "rows")):
        events, _ = replay(corpus(pcap), cassandra())
        assert events[0]["cassandra"]["request"]["query"] == query, pcap
        assert events[0]["cassandra"]["response"]["result"]["type"] == kind, pcap
    events, _ = replay(corpus("cassandra_select.pcap"), cassandra())
    assert events[0]["cassandra"]["response"]["result"]["rows"]["meta"] == {
        "flags": "GlobalTableSpec", "col_count": 3, "keyspace": "mykeyspace", "table": "users"}


def test_trace_error() -> None:
    events, _ = replay(corpus("cassandra_trace_err.pcap"), cassandra())
    (event,) = events
    assert headers(event, "request") == ("4", "QUERY", 275, 46, "Tracing")
    assert headers(event, "response") == ("4", "ERROR", 275, 53, "Default")
    assert event["cassandra"]["response"]["error"] == {
        "code": 8960, "msg": "Cannot drop non existing keyspace 'mykeyspace'.", "type": "errConfig"}
    assert (event["source"]["bytes"], event["destination"]["bytes"], event["status"]) == (55, 62, "Error")


def test_mixed_frames_and_ignored_ops() -> None:
    events, _ = replay(corpus("cassandra_mixed_frame.pcap"), cassandra())
    assert [e["cassandra"]["request"]["headers"]["op"] for e in events[:4]] == ["OPTIONS", "STARTUP", "REGISTER",
                                                                                 "QUERY"]
    assert events[0]["cassandra"]["response"]["supported"] == {"COMPRESSION": ["snappy", "lz4"],
                                                               "CQL_VERSION": ["3.4.2"]}
    assert (events[0]["source"]["bytes"], events[0]["destination"]["bytes"]) == (9, 61)
    assert (events[2]["source"]["bytes"], events[2]["destination"]["bytes"]) == (58, 9)
    ignored, _ = replay(corpus("cassandra_mixed_frame.pcap"), cassandra(ignored_ops=["OPTIONS", "REGISTER"]))
    assert len(ignored) == len(events) - 3  # two OPTIONS (one per connection) and one REGISTER
    assert headers(ignored[0], "request") == ("4", "STARTUP", 1, 22, "Default")
    assert headers(ignored[1], "request") == ("4", "QUERY", 3, 92, "Default")
    assert (ignored[1]["source"]["bytes"], ignored[1]["destination"]["bytes"]) == (101, 116)


def test_compressed_frames() -> None:
    events, _ = replay(corpus("cassandra_compressed.pcap"), cassandra(compressor="snappy"))
    assert headers(events[0], "request") == ("4", "STARTUP", 0, 43, "Default")
    assert headers(events[0], "response") == ("4", "READY", 0, 1, "Compress")
    assert headers(events[1], "request") == ("4", "REGISTER", 64, 44, "Compress")
    query = events[2]
    assert query["cassandra"]["request"]["query"] == "SELECT * FROM system.local WHERE key='local'"
    assert headers(query, "request") == ("4", "QUERY", 0, 53, "Compress")
    assert headers(query, "response") == ("4", "RESULT", 64, 156, "Compress")  # FIFO, not by stream id
    assert query["cassandra"]["response"]["result"]["rows"] == {
        "meta": {"flags": "GlobalTableSpec", "col_count": 9, "keyspace": "system", "table": "peers"},
        "num_rows": 290917}
    assert not any("error" in e for e in events)
    undecoded, _ = replay(corpus("cassandra_compressed.pcap"), cassandra())
    assert len(undecoded) == len(events) and "query" not in undecoded[2]["cassandra"]["request"]
    assert "Compressed frame body not decoded: no compressor configured" in undecoded[2]["error"]["message"]
