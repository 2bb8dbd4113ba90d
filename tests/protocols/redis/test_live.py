"""redis-server in namespace b, clients in namespace a: the events pktbeat makes of real traffic.

redis-cli commands (a nil, an error, a two-word command, MULTI/EXEC), redis-benchmark with -P 16, and
a 10,000-command pipeline on one connection whose every command must pair, in order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import VethPair, veth_pair
from tests.protocols.redis.capture import capture_events, run_python

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("redis-server", "redis-cli", "redis-benchmark", "tcpdump")),
                       reason="needs redis-server, redis-tools and tcpdump"),
]

PORT = 6379
PROTOCOLS = [{"type": "redis", "ports": [PORT]}]


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[VethPair]:
    with veth_pair("pbr") as pair:
        pair.b.popen(["redis-server", "--port", str(PORT), "--bind", pair.b_ip, "--save", "", "--appendonly", "no",
                      "--protected-mode", "no", "--dir", str(tmp_path)], log=tmp_path / "redis.log")
        pair.b.wait_port(PORT, pair.b_ip)
        yield pair


def cli(pair: VethPair, *args: str) -> str:
    return pair.a.run(["redis-cli", "-h", pair.b_ip, "-p", str(PORT), *args]).stdout.strip()


def by_query(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["query"]: e for e in events}


def test_redis_cli_commands(tmp_path: Path) -> None:
    with redis_server(tmp_path) as pair:
        def traffic() -> None:
            assert cli(pair, "SET", "greeting", "hello world") == "OK"
            assert cli(pair, "GET", "greeting") == "hello world"
            assert cli(pair, "GET", "missing") == ""
            cli(pair, "LPUSH", "mylist", "a")
            assert "WRONGTYPE" in cli(pair, "INCR", "mylist")
            cli(pair, "CONFIG", "GET", "maxmemory")
            pair.a.run(["redis-cli", "-h", pair.b_ip, "-p", str(PORT)], input="MULTI\nINCR n\nINCR n\nEXEC\n")

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"tcp port {PORT}")
    found = by_query(events)
    set_ = found["SET greeting hello world"]
    assert (set_["method"], set_["resource"], set_["status"], set_["redis"]) == (
        "SET", "greeting", "OK", {"return_value": "OK"})
    assert set_["event"]["action"] == "redis.set" and set_["source"]["bytes"] > 0 and set_["destination"]["bytes"] == 5
    assert set_["client"]["ip"] == pair.a_ip and set_["server"]["ip"] == pair.b_ip and set_["server"]["port"] == PORT
    assert found["GET greeting"]["redis"] == {"return_value": "hello world"}
    assert found["GET missing"]["redis"] == {"return_value": "nil"}
    error = found["INCR mylist"]
    assert error["status"] == "Error" and error["event"]["outcome"] == "failure"
    assert error["redis"]["error"].startswith("WRONGTYPE")
    config = found["CONFIG GET maxmemory"]
    assert (config["method"], config["resource"], config["redis"]["return_value"]) == ("CONFIG GET", "maxmemory",
                                                                                     "[maxmemory, 0]")
    multi = [e for e in events if e["method"] in ("MULTI", "INCR", "EXEC") and e["resource"] != "mylist"]
    assert [(e["method"], e["redis"]["return_value"]) for e in multi] == [
        ("MULTI", "OK"), ("INCR", "QUEUED"), ("INCR", "QUEUED"), ("EXEC", "[1, 2]")]
    assert all(e["event"]["duration"] >= 0 for e in events)


def server_calls(pair: VethPair) -> dict[str, int]:
    """Calls per command as the server counted them (INFO commandstats)."""
    calls = {}
    for line in cli(pair, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_"):].partition(":")
            calls[name.upper()] = int(stats.split(",")[0].split("=")[1])
    return calls


def test_redis_benchmark_pipelined(tmp_path: Path) -> None:
    requests = 3000
    with redis_server(tmp_path) as pair:
        def traffic() -> None:
            pair.a.run(["redis-benchmark", "-h", pair.b_ip, "-p", str(PORT), "-P", "16", "-c", "4", "-n",
                        str(requests), "-t", "set,get,lpush", "-q"], timeout=120)

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"tcp port {PORT}")
        calls = server_calls(pair)  # redis-benchmark rounds up to whole pipelines
    methods = Counter(e["method"] for e in events)
    assert requests <= calls["SET"] < requests + 100
    assert (methods["SET"], methods["GET"], methods["LPUSH"]) == (calls["SET"], calls["GET"], calls["LPUSH"])
    load = [e for e in events if e["method"] in ("SET", "GET", "LPUSH")]
    assert all(e["status"] == "OK" for e in load)
    assert {e["redis"]["return_value"] for e in load if e["method"] == "SET"} == {"OK"}
    assert len({e["source"]["port"] for e in load}) >= 4


PIPELINE = r"""
import socket, sys
host, n = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, 6379))
cmds = []
for i in range(n):
    k, v = b"pipe:%05d" % i, b"value-%d" % i
    cmds.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
s.sendall(b"".join(cmds))
want = b"+OK\r\n" * n
got = bytearray()
while len(got) < len(want):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
assert bytes(got) == want, len(got)
s.close()
print("ok")
"""


def test_ten_thousand_command_pipeline_pairs_in_order(tmp_path: Path) -> None:
    n = 10_000
    with redis_server(tmp_path) as pair:
        def traffic() -> None:
            assert run_python(pair.a, PIPELINE, pair.b_ip, str(n)).strip() == "ok"

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"tcp port {PORT}")
    assert len(events) == n
    assert all(e["status"] == "OK" and e["redis"] == {"return_value": "OK"} and e["method"] == "SET" for e in events)
    assert [e["resource"] for e in events] == [f"pipe:{i:05d}" for i in range(n)]
    assert events[-1]["query"] == f"SET pipe:{n - 1:05d} value-{n - 1}"
    assert len({e["source"]["port"] for e in events}) == 1
