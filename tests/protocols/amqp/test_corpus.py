"""Packetbeat's AMQP pcaps through the CLI (`pktbeat run -t -I`), checking the published events."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import corpus, replay


def amqp(**options: Any) -> list[dict[str, Any]]:
    return [{"type": "amqp", "ports": [5672], **options}]


def test_publish() -> None:
    events, _ = replay(corpus("amqp_publish.pcap"), amqp(send_request=True))
    assert [e["method"] for e in events] == ["queue.declare", "basic.publish"]
    declare, publish = events
    assert declare["amqp"] == {"queue": "hello", "passive": False, "durable": False, "exclusive": False,
                               "auto-delete": False, "no-wait": False, "message-count": 0, "consumer-count": 0}
    assert declare["request"] == "queue.declare hello" and declare["event"]["action"] == "amqp.queue.declare"
    assert (declare["source"]["bytes"], declare["destination"]["bytes"]) == (25, 26)
    assert declare["event"]["duration"] > 0 and declare["status"] == "OK"
    assert publish["request"] == "hello" and publish["amqp"] == {
        "routing-key": "hello", "mandatory": False, "immediate": False, "content-type": "text/plain"}
    assert publish["source"]["bytes"] == 5 and "bytes" not in publish["destination"]
    assert "end" not in publish["event"] and all(e["server"]["port"] == 5672 for e in events)


def test_emit_receive_two_connections() -> None:
    events, _ = replay(corpus("amqp_emit_receive.pcap"), amqp())
    assert [e["method"] for e in events] == ["exchange.declare", "queue.declare", "queue.bind", "basic.consume",
                                             "exchange.declare", "basic.publish", "basic.deliver"]
    assert len({e["source"]["port"] for e in events}) == 2
    queue = events[1]["amqp"]["queue"]
    assert queue.startswith("amq.gen-") and events[2]["amqp"]["queue"] == events[3]["amqp"]["queue"] == queue
    assert events[2]["amqp"]["exchange"] == "logs" and events[3]["amqp"]["no-ack"] is True
    deliver = events[6]
    assert deliver["amqp"]["delivery-tag"] == 1 and deliver["amqp"]["exchange"] == "logs"
    assert deliver["amqp"]["redelivered"] is False and deliver["amqp"]["content-type"] == "text/plain"
    assert deliver["destination"]["bytes"] == 5 and deliver["source"]["port"] == events[0]["source"]["port"]
    assert not any("request" in e or "response" in e for e in events)


def test_channel_error() -> None:
    events, _ = replay(corpus("amqp_channel_error.pcap"), amqp(send_response=True))
    assert [e["method"] for e in events] == ["exchange.declare", "queue.declare", "queue.bind", "channel.close"]
    declare = events[0]
    assert declare["amqp"]["no-wait"] is True and declare["status"] == "OK" and declare["response"] == ""
    assert "end" not in declare["event"]
    bind = events[2]  # refused: the server closed the channel instead of answering queue.bind-ok
    assert bind["status"] == "Error" and bind["event"]["action"] == "amqp.queue.bind"
    assert (bind["amqp"]["queue"], bind["amqp"]["exchange"]) == ("my_queue", "plop")
    assert bind["amqp"]["reply-code"] == 404 and bind["response"] == "NOT_FOUND - no exchange 'plop' in vhost '/'"
    assert bind["event"]["duration"] > 0
    close = events[3]
    assert close["status"] == "Error" and close["response"] == "OK"
    assert close["amqp"] == {"reply-code": 404, "reply-text": "NOT_FOUND - no exchange 'plop' in vhost '/'",
                             "class-id": 50, "method-id": 20}


def test_channel_error_as_packetbeat() -> None:
    events, _ = replay(corpus("amqp_channel_error.pcap"), amqp(publish_refused_methods=False))
    assert [(e["method"], e["status"]) for e in events] == [
        ("exchange.declare", "OK"), ("queue.declare", "OK"), ("channel.close", "Error")]


def test_connection_information_shown() -> None:
    events, _ = replay(corpus("amqp_publish.pcap"), amqp(hide_connection_information=False))
    assert [e["method"] for e in events] == ["connection.start", "connection.tune", "connection.open",
                                             "channel.open", "queue.declare", "basic.publish", "channel.close",
                                             "connection.close"]
    start = events[0]["amqp"]
    assert start["server-properties"]["product"] == "RabbitMQ" and start["mechanisms"] == "AMQPLAIN PLAIN"
    assert start["version-major"] == 0 and start["version-minor"] == 9
    assert events[2]["amqp"] == {"virtual-host": "/"}
    assert events[6]["amqp"]["reply-code"] == 200 and events[6]["status"] == "OK"
