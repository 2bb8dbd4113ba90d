"""The SIP corpus pcaps through the CLI, checked key by key against Packetbeat's golden files."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers.replay import CORPUS, corpus, replay

# What the golden comparison leaves out: per-run values, plus what the harness ignores.
IGNORED = {"@metadata.version", "agent.ephemeral_id", "agent.id", "agent.name", "agent.type", "agent.version",
           "ecs.version", "event.end", "event.start", "host.name", "@timestamp", "network.direction",
           "sip.timestamp"}


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(flatten(item, name + "."))
        else:
            out[name] = item
    return out


def canonical(event: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in flatten(event).items() if k not in IGNORED}, sort_keys=True)


@pytest.mark.parametrize(("pcap", "golden", "options"), [
    ("sip.pcap", "sip-expected.json", {}),
    ("sip_authenticated_register.pcap", "sip_authenticated_register-expected.json", {}),
    ("sip_tcp.pcap", "sip_through_tcp-expected.json", {"transport_protocol": "tcp"}),
])
def test_golden(pcap: str, golden: str, options: dict[str, Any]) -> None:
    events, _ = replay(corpus(pcap), [{"type": "sip", "ports": [5060], **options}])
    expected = json.loads((CORPUS / "golden" / golden).read_text())
    got = sorted(canonical(e) for e in events)
    want = sorted(json.dumps({k: v for k, v in e.items() if k not in IGNORED}, sort_keys=True) for e in expected)
    assert got == want


def test_tcp_capture_is_not_decoded_when_sip_is_on_udp() -> None:
    events, _ = replay(corpus("sip_tcp.pcap"), [{"type": "sip", "ports": [5060]}])
    assert events == []


def test_udp_events_in_order() -> None:
    events, _ = replay(corpus("sip.pcap"), [{"type": "sip", "ports": [5060], "keep_original": False}])
    assert [(e["sip"]["type"], e["event"]["action"], e["sip"].get("code")) for e in events[:6]] == [
        ("request", "sip-invite", None), ("response", "sip-invite", 100), ("response", "sip-invite", 200),
        ("request", "sip-ack", None), ("request", "sip-bye", None), ("response", "sip-bye", 200)]
    assert all("original" not in e["event"] for e in events)
    assert all(e["network"]["iana_number"] == "17" and e["event"]["duration"] == 0 for e in events)
