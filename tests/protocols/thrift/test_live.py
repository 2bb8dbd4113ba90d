"""A real TBinary server and client (tbinary_peer.py) in two namespaces, captured live by pktbeat.

One run over TSocket on IPv4, one over TFramed on IPv6: calls with a reply,
a declared exception, a oneway call and a 100 kB string that spans many
segments, checked field by field in the published events.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events, live_available
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [pytest.mark.live]

PEER = str(Path(__file__).parent / "tbinary_peer.py")
IDL = Path(__file__).parent / "idl"
PORT = 9090


def run(transport: str, family: int) -> tuple[list[dict[str, Any]], str]:
    reason = live_available()
    if reason:
        pytest.skip(reason)
    framed = ["--framed"] if transport == "framed" else []
    with veth_pair("pbt") as pair:
        server_ip = pair.b_ip6 if family == 6 else pair.b_ip
        pair.b.popen([sys.executable, PEER, "server", "--host", server_ip, "--port", str(PORT), *framed])
        pair.b.wait_port(PORT)

        def traffic(p: VethPair) -> None:
            p.a.run([sys.executable, PEER, "client", "--host", server_ip, "--port", str(PORT), *framed], timeout=30)

        protocols = [{"type": "thrift", "ports": [PORT], "transport_type": transport, "send_request": True,
                      "send_response": True, "idl_files": [str(IDL / "tutorial.thrift"), str(IDL / "shared.thrift")]}]
        events = capture_events(pair, traffic, protocols)
        return [e for e in events if e.get("type") == "thrift"], server_ip


def check(events: list[dict[str, Any]], server_ip: str) -> None:
    assert [e["method"] for e in events] == ["ping", "add", "echo_string", "calculate", "zip", "echo_string"]
    ping, add, echo, calculate, zip_, big = events
    assert ping["thrift"] == {"params": "()", "service": "Calculator", "return_value": ""}
    assert add["thrift"]["params"] == "(num1: 2, num2: 3)" and add["response"] == "5"
    assert echo["request"] == 'echo_string(s: "hello")' and echo["thrift"]["return_value"] == '"hello"'
    assert calculate["status"] == "Error"
    assert calculate["thrift"]["exceptions"] == '(ouch: (1: 4, 2: "Cannot divide by 0"))'
    assert calculate["response"] == 'Exceptions: (ouch: (1: 4, 2: "Cannot divide by 0"))'
    assert "return_value" not in zip_["thrift"] and "bytes" not in zip_["destination"]
    shown = '"' + ("0123456789" * 20) + '..."'
    assert big["thrift"]["params"] == f"(s: {shown})" and big["thrift"]["return_value"] == shown
    assert big["source"]["bytes"] > 100_000 and big["destination"]["bytes"] > 100_000
    assert all(e["server"]["ip"] == server_ip and e["server"]["port"] == PORT for e in events)
    assert all(e["event"]["duration"] >= 0 for e in events if e is not zip_)


def test_tsocket_ipv4() -> None:
    events, server_ip = run("socket", 4)
    check(events, server_ip)
    assert events[1]["source"]["bytes"] == 30  # header 15 + two i32 fields 14 + STOP: the message's bytes


def test_tframed_ipv6() -> None:
    events, server_ip = run("framed", 6)
    check(events, server_ip)
    assert events[1]["source"]["bytes"] == 30 and events[1]["network"]["type"] == "ipv6"  # the frame size
