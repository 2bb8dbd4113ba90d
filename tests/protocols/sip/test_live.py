"""sipp's UAS scenario in namespace b, its UAC scenario in namespace a, over UDP and over TCP.

The calls are captured on namespace a's veth and replayed through the CLI
(`capture_events`); when live eBPF capture lands, only that function
changes.  sipp logs every message it sends and receives (`-trace_msg`):
each event's `event.original` must be that message, in order, and its
fields must agree with it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events as live_capture
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("sipp") and shutil.which("tcpdump")),
                       reason="needs sipp (Debian's sip-tester) and tcpdump"),
]

CALLS = 3
SEPARATOR = "----------------------------------------------- "


@dataclass
class Lab:
    pair: VethPair
    tmp: Path


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="pktbeat-sip-live-") as tmpdir, veth_pair("sip") as pair:
        yield Lab(pair, Path(tmpdir))


def capture_events(lab: Lab, traffic: Callable[[], None], transport: str, name: str) -> list[dict[str, Any]]:
    """Run `traffic` while capturing on namespace a's veth, then replay the capture through the CLI."""
    events = live_capture(lab.pair, lambda _pair: traffic(),
                          [{"type": "sip", "ports": [5060], "transport_protocol": transport}])
    return [e for e in events if e["type"] == "sip"]


def run_calls(lab: Lab, transport: str) -> list[tuple[bool, str]]:
    """CALLS calls from the UAC to the UAS; returns sipp's own log of (sent by the UAC?, message)."""
    flag = "u1" if transport == "udp" else "t1"
    log = lab.tmp / f"{transport}-messages.log"
    uas = lab.pair.b.popen(["sipp", "-sn", "uas", "-i", lab.pair.b_ip, "-p", "5060", "-t", flag, "-nostdin"],
                           log=lab.tmp / f"uas-{transport}.log")
    try:
        lab.pair.b.wait_port(5060, host=lab.pair.b_ip, udp=transport == "udp")
        result = lab.pair.a.run(["sipp", "-sn", "uac", f"{lab.pair.b_ip}:5060", "-i", lab.pair.a_ip, "-p", "5070",
                                 "-t", flag, "-m", str(CALLS), "-s", "bob", "-nostdin", "-timeout", "20s",
                                 "-timeout_error", "-trace_msg", "-message_file", str(log)], check=False, timeout=60)
    finally:
        uas.terminate()
        uas.wait(timeout=10)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    messages = []
    for entry in log.read_bytes().decode().split(SEPARATOR)[1:]:
        head, _, message = entry.partition("\n\n")
        messages.append((" sent " in head, message[:-1]))  # the log adds one "\n" after each message
    return messages


def header(message: str, name: str) -> str:
    found = re.search(rf"^{name}:\s*(.*?)\r$", message, re.MULTILINE | re.IGNORECASE)
    assert found, (name, message)
    return found.group(1)


def check_calls(lab: Lab, events: list[dict[str, Any]], messages: list[tuple[bool, str]], transport: str) -> None:
    # INVITE, 180, 200, ACK, BYE, 200 per call (100 Trying is optional and the UAS does not send it)
    assert len(messages) == len(events) == CALLS * 6
    assert [e["event"]["original"] for e in events] == [m for _, m in messages]
    a, b = lab.pair.a_ip, lab.pair.b_ip
    for e, (sent, message) in zip(events, messages, strict=True):
        s = e["sip"]
        assert e["type"] == "sip" and e["status"] == "OK" and e["network"]["protocol"] == "sip"
        assert e["network"]["transport"] == transport and e["network"]["iana_number"] == "17"
        assert e["network"]["application"] == "sip" and e["event"]["duration"] == 0
        assert e["event"]["type"] == ["info", "protocol"] and e["event"]["category"] == ["network"]
        assert (e["source"]["ip"], e["destination"]["ip"]) == ((a, b) if sent else (b, a))
        assert (e["destination"] if sent else e["source"])["port"] == 5060
        assert s["call_id"] == header(message, "Call-ID")
        code, method = header(message, "CSeq").split()
        assert s["cseq"] == {"code": int(code), "method": method} and e["event"]["sequence"] == int(code)
        assert e["event"]["action"] == f"sip-{method.lower()}"
        assert s["from"]["display_info"] == "sipp" and s["from"]["uri"]["host"] == a
        assert s["to"]["display_info"] == "bob" and s["to"]["uri"]["username"] == "bob"
        assert s["via"]["original"] == [header(message, "Via")]
        assert s["via"]["original"][0].startswith(f"SIP/2.0/{transport.upper()} {a}:5070")
        if s["type"] == "request":
            assert s["method"] == message.split(" ", 1)[0] and s["uri"]["host"] == b and s["uri"]["port"] == 5060
            assert "outcome" not in e["event"]
        else:
            assert (s["code"], s["status"]) == (int(message.split(" ")[1]), message.split("\r\n")[0].split(" ", 2)[2])
            assert e["event"]["reason"] == s["status"]
            assert e["event"].get("outcome") == ("success" if s["code"] == 200 else None)
            assert "tag" in s["to"]
        if "sdp" in s:
            owner_ip = a if sent else b
            assert s["content_type"] == "application/sdp"
            assert s["content_length"] == int(header(message, "Content-Length"))
            assert s["sdp"]["owner"]["ip"] == owner_ip and s["sdp"]["connection"]["address"] == owner_ip
            assert s["sdp"]["body"]["original"] == message.split("\r\n\r\n", 1)[1]
            assert owner_ip in e["related"]["ip"]
    invites = [e for e in events if e["sip"].get("method") == "INVITE"]
    assert len(invites) == CALLS and all("sdp" in e["sip"] for e in invites)
    assert len({e["sip"]["call_id"] for e in events}) == CALLS


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_calls(lab: Lab, transport: str) -> None:
    messages: list[tuple[bool, str]] = []
    events = capture_events(lab, lambda: messages.extend(run_calls(lab, transport)), transport, transport)
    check_calls(lab, events, messages, transport)
