"""The Redis output against a real redis-server (Debian's), on a free loopback port in a temp dir."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent.config.typed import build
from agent.outputs.redis import RedisOutput, RedisOutputConfig
from agent.outputs.redis import test_output as check_output
from agent.publisher.pipeline import Pipeline
from agent.publisher.types import EncodedEvent, Outcome

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int, password: str = "") -> None:
        self.port = port
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                "--save", "", "--appendonly", "no", "--daemonize", "no"]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path, free_port(), password="pw")
    yield srv
    srv.stop()


def config(port: int, **extra: object) -> RedisOutputConfig:
    return build(RedisOutputConfig, {"hosts": [f"127.0.0.1:{port}"], "password": "pw", **extra}, "output.redis")


def events(n: int, kind: str = "dns") -> list[EncodedEvent]:
    return [EncodedEvent(json.dumps({"type": kind, "n": i}).encode(), f"id{i}", None, kind) for i in range(n)]


def reader(port: int, db: int = 0) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password="pw", db=db)


def test_delivers_to_a_list_with_metadata(server: RedisServer) -> None:
    out = RedisOutput(config(server.port, key="pktbeat-events", db=3))
    try:
        assert out.publish(events(500)) == [Outcome.ACKED] * 500
    finally:
        out.close()
    stored = reader(server.port, db=3).lrange("pktbeat-events", 0, -1)
    assert len(stored) == 500
    first = json.loads(stored[0])
    assert first["n"] == 0 and first["type"] == "dns"
    assert first["@metadata"]["beat"] == "packetbeat"
    assert [json.loads(s)["n"] for s in stored] == list(range(500))
    assert reader(server.port, db=0).llen("pktbeat-events") == 0


def test_key_format_string_splits_by_event_type(server: RedisServer) -> None:
    out = RedisOutput(config(server.port, key="pb-%{[type]}"))
    try:
        assert out.publish(events(3, "dns") + events(2, "http")) == [Outcome.ACKED] * 5
    finally:
        out.close()
    client = reader(server.port)
    assert client.llen("pb-dns") == 3 and client.llen("pb-http") == 2


def test_channel_datatype_publishes(server: RedisServer) -> None:
    sub = reader(server.port).pubsub()
    sub.subscribe("pb-channel")
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    out = RedisOutput(config(server.port, key="pb-channel", datatype="channel"))
    try:
        assert out.publish(events(4)) == [Outcome.ACKED] * 4
    finally:
        out.close()
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < deadline:
        message = sub.get_message(timeout=0.5)
        if message and message["type"] == "message":
            got.append(json.loads(message["data"])["n"])
    assert got == [0, 1, 2, 3]


def test_outage_is_retried_then_delivered_once(tmp_path: Path) -> None:
    port = free_port()
    srv = RedisServer(tmp_path, port, password="pw")
    out = RedisOutput(config(port, key="pb", backoff={"init": "0.05s", "max": "0.1s"}))
    srv.stop()
    assert out.publish(events(10)) == [Outcome.RETRY] * 10
    pipe = Pipeline(out, max_events=100, flush_min_events=10, flush_timeout=0.05, backoff_init=0.05,
                    backoff_max=0.2)
    for e in events(10):
        pipe.publish(e)
    time.sleep(0.5)
    srv = RedisServer(tmp_path, port, password="pw")
    try:
        pipe.close(time.monotonic() + 20)
        assert reader(port).llen("pb") == 10
    finally:
        srv.stop()


def test_wrong_password_fails_and_test_output_says_so(server: RedisServer) -> None:
    lines: list[str] = []
    assert check_output(config(server.port), lines.append)
    assert "  connection... OK" in lines
    assert any(line.startswith("  version: ") for line in lines)
    lines = []
    bad = build(RedisOutputConfig, {"hosts": [f"127.0.0.1:{server.port}"], "password": "nope"}, "output.redis")
    assert not check_output(bad, lines.append)
    out = RedisOutput(bad)
    try:
        assert out.publish(events(2)) == [Outcome.RETRY] * 2
    finally:
        out.close()
