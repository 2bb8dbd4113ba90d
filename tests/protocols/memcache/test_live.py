"""memcached in namespace b (TCP and UDP on 11211), clients in namespace a.

Text commands through pymemcache (including noreply and a miss), the binary protocol through a small
socket client (GET, GETKQ + NOOP, SET, INCR, STAT), and text over UDP with memcache's frame header.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import VethPair, veth_pair
from tests.protocols.redis.capture import capture_events, run_python

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("memcached", "tcpdump")),
                       reason="needs memcached and tcpdump"),
]

PORT = 11211
PROTOCOLS = [{"type": "memcache", "ports": [PORT], "maxvalues": -1}]


@contextlib.contextmanager
def memcached(tmp_path: Path) -> Iterator[VethPair]:
    with veth_pair("pbm") as pair:
        pair.b.popen(["memcached", "-u", "nobody", "-l", pair.b_ip, "-p", str(PORT), "-U", str(PORT), "-m", "16"],
                     log=tmp_path / "memcached.log")
        pair.b.wait_port(PORT, pair.b_ip)
        pair.b.wait_port(PORT, pair.b_ip, udp=True)
        yield pair


TEXT_CLIENT = r"""
import sys
from pymemcache.client.base import Client
c = Client((sys.argv[1], 11211))
assert c.set("k", b"hello", noreply=False)
assert c.get("k") == b"hello"
assert c.get("missing") is None
c.set("n", b"10", noreply=False)
assert c.incr("n", 5, noreply=False) == 15
c.set("quiet", b"shh", noreply=True)
assert c.get_many(["k", "n", "zz"]) == {"k": b"hello", "n": b"15"}
assert c.delete("k", noreply=False)
assert c.stats()[b"pid"] > 0
c.quit()
print("ok")
"""


def by_command(events: list[dict[str, Any]], command: str) -> list[dict[str, Any]]:
    return [e for e in events if e["memcache"].get("request", {}).get("command") == command]


def test_text_protocol_with_pymemcache(tmp_path: Path) -> None:
    with memcached(tmp_path) as pair:
        def traffic() -> None:
            assert run_python(pair.a, TEXT_CLIENT, pair.b_ip).strip() == "ok"

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"port {PORT}")
    assert all(e["memcache"]["protocol_type"] == "text" and e["network"]["transport"] == "tcp" for e in events)
    sets = {e["memcache"]["request"]["keys"][0]: e for e in by_command(events, "set")}
    stored = sets["k"]
    assert stored["memcache"]["request"]["bytes"] == 5 and stored["memcache"]["request"]["noreply"] is False
    assert stored["memcache"]["request"]["values"] == "aGVsbG8="
    assert stored["memcache"]["response"] == {"command": "STORED", "type": "Success"}
    assert (stored["source"]["bytes"], stored["destination"]["bytes"]) == (8, len(b"set k 0 0 5\r\nhello\r\n"))
    assert stored["client"]["ip"] == pair.a_ip and stored["server"]["port"] == PORT
    quiet = sets["quiet"]
    assert quiet["memcache"]["request"]["noreply"] is True and "response" not in quiet["memcache"]
    assert quiet["status"] == "OK"
    gets = by_command(events, "get")
    hit = next(e for e in gets if e["memcache"]["request"]["keys"] == ["k"])
    assert hit["memcache"]["response"]["command"] == "VALUE" and hit["memcache"]["response"]["bytes"] == 5
    miss = next(e for e in gets if e["memcache"]["request"]["keys"] == ["missing"])
    assert miss["memcache"]["response"]["command"] == "END" and miss["status"] == "OK"
    multi = next(e for e in gets if len(e["memcache"]["request"]["keys"]) == 3)
    assert multi["memcache"]["response"]["keys"] == ["k", "n"] and multi["memcache"]["response"]["count_values"] == 2
    (incr,) = by_command(events, "incr")
    assert incr["memcache"]["request"]["delta"] == 5 and incr["memcache"]["response"]["value"] == 15
    assert incr["event"]["action"] == "memcache.counter"
    (delete,) = by_command(events, "delete")
    assert delete["memcache"]["response"]["command"] == "DELETED"
    (stats,) = by_command(events, "stats")
    assert len(stats["memcache"]["response"]["stats"]) > 40
    assert by_command(events, "quit")[0]["status"] == "OK"


BINARY_CLIENT = r"""
import socket, struct, sys

def msg(op, key=b"", extras=b"", value=b"", opaque=0):
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, len(extras) + len(key) + len(value),
                       opaque, 0) + extras + key + value

def read(s, until_op, until_empty_key=False):
    buf = b""
    while True:
        while len(buf) >= 24:
            _, op, klen, _, _, _, total, _, _ = struct.unpack_from(">BBHBBHIIQ", buf)
            if len(buf) < 24 + total:
                break
            done = op == until_op and (not until_empty_key or klen == 0)
            buf = buf[24 + total:]
            if done:
                return
        buf += s.recv(65536)

s = socket.create_connection((sys.argv[1], 11211))
s.sendall(msg(0x00, b"nope", opaque=1)); read(s, 0x00)
s.sendall(msg(0x01, b"bk", struct.pack(">II", 7, 0), b"bin", opaque=2)); read(s, 0x01)
s.sendall(msg(0x0D, b"bk", opaque=3) + msg(0x0D, b"nope", opaque=4) + msg(0x0A, opaque=5)); read(s, 0x0A)
s.sendall(msg(0x05, b"ctr", struct.pack(">QQI", 3, 10, 0), opaque=6)); read(s, 0x05)
s.sendall(msg(0x05, b"ctr", struct.pack(">QQI", 3, 10, 0), opaque=7)); read(s, 0x05)
s.sendall(msg(0x10, opaque=8)); read(s, 0x10, until_empty_key=True)
s.close()
print("ok")
"""


def test_binary_protocol(tmp_path: Path) -> None:
    with memcached(tmp_path) as pair:
        def traffic() -> None:
            assert run_python(pair.a, BINARY_CLIENT, pair.b_ip).strip() == "ok"

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"port {PORT}")
    assert all(e["memcache"]["protocol_type"] == "binary" for e in events)
    opaque = {e["memcache"]["request"]["opaque"]: e for e in events}
    assert sorted(opaque) == [1, 2, 3, 4, 5, 6, 7, 8]
    miss = opaque[1]
    assert miss["status"] == "Error" and miss["memcache"]["response"]["status"] == "Key not found"
    stored = opaque[2]
    assert stored["memcache"]["request"]["flags"] == 7 and stored["memcache"]["response"]["status"] == "Success"
    assert stored["memcache"]["response"]["cas_unique"] > 0
    hit, quiet_miss, noop = opaque[3], opaque[4], opaque[5]
    assert hit["memcache"]["request"]["quiet"] is True and hit["memcache"]["response"]["keys"] == ["bk"]
    assert hit["memcache"]["response"]["values"] == ["Ymlu"] and hit["memcache"]["response"]["flags"] == 7
    assert "response" not in quiet_miss["memcache"] and quiet_miss["status"] == "OK" and not quiet_miss.get("error")
    assert noop["memcache"]["request"]["opcode"] == "No-op" and noop["memcache"]["response"]["opaque"] == 5
    assert (opaque[6]["memcache"]["response"]["value"], opaque[7]["memcache"]["response"]["value"]) == (10, 13)
    assert opaque[6]["memcache"]["request"]["delta"] == 3 and opaque[6]["memcache"]["request"]["initial"] == 10
    stats = opaque[8]["memcache"]["response"]["stats"]
    assert len(stats) > 40 and all(s["name"] for s in stats)


UDP_CLIENT = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
addr = (sys.argv[1], 11211)
frame = lambda rid, payload: struct.pack(">HHHH", rid, 0, 1, 0) + payload
s.sendto(frame(1, b"set u 0 0 2\r\nhi\r\n"), addr)
assert s.recvfrom(2048)[0][8:] == b"STORED\r\n"
s.sendto(frame(2, b"get u\r\n"), addr)
assert s.recvfrom(2048)[0][8:] == b"VALUE u 0 2\r\nhi\r\nEND\r\n"
s.sendto(frame(3, b"set v 0 0 1 noreply\r\nz\r\n"), addr)
print("ok")
"""


def test_text_over_udp(tmp_path: Path) -> None:
    with memcached(tmp_path) as pair:
        def traffic() -> None:
            assert run_python(pair.a, UDP_CLIENT, pair.b_ip).strip() == "ok"

        events = capture_events(pair, traffic, PROTOCOLS, tmp_path, f"udp port {PORT}")
    assert len(events) == 3 and all(e["network"]["transport"] == "udp" for e in events)
    keys = {e["memcache"]["request"]["keys"][0]: e for e in events}
    assert keys["u"]["memcache"]["response"]["type"] in ("Success", "Load")
    get = next(e for e in events if e["memcache"]["request"]["command"] == "get")
    assert get["memcache"]["response"]["values"] == ["aGk="] and get["source"]["bytes"] == len(
        b"VALUE u 0 2\r\nhi\r\nEND\r\n")
    assert keys["v"]["memcache"]["request"]["noreply"] is True and "response" not in keys["v"]["memcache"]
