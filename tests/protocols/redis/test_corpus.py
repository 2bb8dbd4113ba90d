"""Packetbeat's Redis pcaps through the CLI (`pktbeat run -t -I`), checking the published events."""

from __future__ import annotations

from tests.helpers.replay import corpus, replay

REDIS_6380 = [{"type": "redis", "ports": [6380]}]


def test_redis_session_events() -> None:
    events, _ = replay(corpus("redis_session.pcap"), REDIS_6380)
    assert len(events) == 11
    assert all(e["type"] == "redis" and e["event"]["dataset"] == "redis" for e in events)
    first, second, third = events[:3]
    assert (first["method"], first["resource"], first["query"], first["status"]) == ("SET", "key3", "set key3 me",
                                                                                      "OK")
    assert first["redis"] == {"return_value": "OK"} and first["event"]["action"] == "redis.set"
    assert (first["source"]["bytes"], first["destination"]["bytes"]) == (31, 5)
    assert first["source"]["port"] == 32810 and first["destination"]["port"] == 6380
    assert first["network"]["transport"] == "tcp" and first["network"]["protocol"] == "redis"
    assert (second["method"], second["query"], second["redis"]) == ("GET", "get key3", {"return_value": "me"})
    assert third["status"] == "Error" and third["event"]["outcome"] == "failure"
    assert third["redis"] == {"error": "ERR Operation against a key holding the wrong kind of value"}
    assert [(e["query"], e["redis"]["return_value"]) for e in events[3:]] == [
        ("lpush test hello", "1"), ("lpush test hello1", "2"), ("lpush test hello2", "3"), ("llen test", "3"),
        ("lindex test 2", "hello"), ("lindex test 3", "nil"), ("lindex test 1", "hello1"),
        ("lindex test 0", "hello2")]
    assert all(e["event"]["duration"] >= 0 for e in events)


def test_send_request_and_response() -> None:
    events, _ = replay(corpus("redis_one_transaction.pcap"),
                       [{"type": "redis", "ports": [6380], "send_request": True, "send_response": True}])
    (event,) = events
    assert event["request"] == event["query"]
    assert event["response"] == event["redis"]["return_value"]
    events, _ = replay(corpus("redis_one_transaction.pcap"), REDIS_6380)
    assert "request" not in events[0] and "response" not in events[0]
