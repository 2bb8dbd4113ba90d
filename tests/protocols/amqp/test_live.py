"""RabbitMQ from Debian in a namespace, driven by amqp_client.py from another, captured live by pktbeat."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events, live_available
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [pytest.mark.server, pytest.mark.live]

PORT = 5672
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CLIENT = str(Path(__file__).parent / "amqp_client.py")


@contextlib.contextmanager
def rabbitmq() -> Iterator[VethPair]:
    if not os.path.exists(SERVER) or shutil.which("erl") is None:
        pytest.skip("rabbitmq-server is not installed")
    reason = live_available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="pktbeat-rabbitmq-") as tmp, veth_pair("pbq") as pair:
        Path(tmp, "enabled_plugins").write_text("[].\n")
        Path(tmp, "rabbitmq.conf").write_text(f"loopback_users = none\nlisteners.tcp.default = {pair.b_ip}:{PORT}\n")
        env = {"HOME": tmp, "LANG": "C.UTF-8", "RABBITMQ_NODENAME": "rabbit@localhost",
               "RABBITMQ_MNESIA_BASE": f"{tmp}/mnesia", "RABBITMQ_LOG_BASE": f"{tmp}/log",
               "RABBITMQ_CONFIG_FILE": f"{tmp}/rabbitmq", "RABBITMQ_ADVANCED_CONFIG_FILE": f"{tmp}/advanced.config",
               "RABBITMQ_ENABLED_PLUGINS_FILE": f"{tmp}/enabled_plugins", "RABBITMQ_PID_FILE": f"{tmp}/pid",
               "ERL_EPMD_ADDRESS": "127.0.0.1"}
        pair.b.popen(["env", *(f"{k}={v}" for k, v in env.items()), SERVER], log=Path(tmp) / "server.log")
        pair.b.wait_port(PORT, timeout=60)
        yield pair


def test_rabbitmq_session() -> None:
    with rabbitmq() as pair:
        def traffic(p: VethPair) -> None:
            p.a.run([sys.executable, CLIENT, p.b_ip, str(PORT)], timeout=60)

        protocols = [{"type": "amqp", "ports": [PORT], "send_request": True, "send_response": True,
                      "hide_connection_information": False}]
        events = [e for e in capture_events(pair, traffic, protocols) if e.get("type") == "amqp"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_method.setdefault(event["method"], []).append(event)
    assert [e["method"] for e in events] == [
        "connection.start", "connection.tune", "connection.open", "channel.open", "exchange.declare",
        "queue.declare", "queue.bind", "basic.publish", "basic.get", "basic.publish", "basic.consume",
        "basic.deliver", "basic.ack", "queue.declare", "channel.close", "channel.open", "queue.delete",
        "connection.close"]
    start = by_method["connection.start"][0]["amqp"]
    assert start["server-properties"]["product"] == "RabbitMQ"
    assert start["server-properties"]["capabilities"]["publisher_confirms"] is True
    assert start["client-properties"] == {"product": "pktbeat-test"} and start["mechanism"] == "PLAIN"
    assert by_method["connection.tune"][0]["amqp"]["frame-max"] == 131072
    declare, refused = by_method["queue.declare"]
    assert declare["amqp"]["arguments"] == {"x-max-length": 100} and declare["request"] == "queue.declare jobs"
    assert declare["amqp"]["consumer-count"] == 0 and declare["status"] == "OK"
    small, large = by_method["basic.publish"]
    assert small["request"] == "hello" and small["amqp"]["exchange"] == "logs"
    assert small["amqp"]["headers"] == {"origin": "live-test"} and small["amqp"]["delivery-mode"] == "persistent"
    assert large["request"] == ("0123456789abcdef" * 63)[:1000] + " [...]"
    assert large["source"]["bytes"] == 320_000
    get = by_method["basic.get"][0]
    assert get["response"] == "hello" and get["amqp"]["message-count"] == 0 and get["request"] == "basic.get jobs"
    deliver = by_method["basic.deliver"][0]
    assert deliver["destination"]["bytes"] == 320_000 and deliver["amqp"]["consumer-tag"] == "reader"
    assert deliver["amqp"]["message-id"] == "msg-1" and deliver["response"].endswith(" [...]")
    assert by_method["basic.ack"][0]["amqp"]["delivery-tag"] == deliver["amqp"]["delivery-tag"]
    # The passive declare of a missing queue, refused by channel.close 404: its own event.
    assert refused["status"] == "Error" and refused["request"] == "queue.declare missing"
    assert refused["amqp"]["passive"] is True and refused["amqp"]["reply-code"] == 404
    assert refused["response"] == refused["amqp"]["reply-text"] == "NOT_FOUND - no queue 'missing' in vhost '/'"
    close = by_method["channel.close"][0]
    assert close["status"] == "Error" and close["amqp"]["reply-code"] == 404
    assert close["amqp"]["reply-text"].startswith("NOT_FOUND") and close["amqp"]["class-id"] == 50
    assert by_method["connection.close"][0]["status"] == "OK"
    assert all(e["server"]["port"] == PORT and e["event"]["action"] == "amqp." + e["method"] for e in events)
