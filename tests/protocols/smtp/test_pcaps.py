"""A capture of exim's sessions (made by test_server.py) through the CLI, and against tshark's SMTP dissector."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.replay import replay

PCAP = Path(__file__).parent / "pcaps" / "exim_sessions.pcap"
PROTOCOLS: list[dict[str, Any]] = [{"type": "smtp", "ports": [25, 587]}, {"type": "tls", "ports": [465]}]


def sessions(events: list[dict[str, Any]] | None = None) -> dict[int, list[dict[str, Any]]]:
    """The smtp events of each connection (by client port)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for event in events if events is not None else replay(PCAP, PROTOCOLS)[0]:
        if event["type"] == "smtp":
            out.setdefault(event["client"]["port"], []).append(event)
    return out


def test_exim_capture_through_the_cli() -> None:
    events, _ = replay(PCAP, PROTOCOLS)
    plain, tls, python, bdat = sessions(events).values()
    message = next(e for e in plain if e["event"]["action"] == "smtp.message")
    assert message["email"]["subject"] == "你好世界" and message["email"]["local_id"] == "1xaOLA-000052-34"
    assert message["email"]["attachments"][0]["file"]["name"] == "report.pdf"
    assert message["smtp"]["rcpt_rejected"] == ["nobody@pktbeat.test"]
    auth = next(e for e in plain if e["event"]["action"] == "smtp.auth")
    assert auth["query"] == "AUTH PLAIN *" and auth["status"] == "OK"
    assert [e["event"]["action"] for e in tls] == ["smtp.greeting", "smtp.ehlo", "smtp.starttls"]
    # After the 220 to STARTTLS the TLS decoder has the connection: its handshake is the connection's last event.
    [handshake] = [e for e in events if e["type"] == "tls"]
    assert handshake["client"]["port"] == tls[0]["client"]["port"] and handshake["tls"]["established"] is True
    assert handshake["tls"]["version"] in ("1.2", "1.3") and handshake["tls"]["cipher"].startswith("TLS_")
    utf8 = next(e for e in python if e["event"]["action"] == "smtp.message")
    assert utf8["email"]["subject"] == "Grüße 你好" and utf8["smtp"]["mail_from"] == "cärol@example.com"
    chunked = next(e for e in bdat if e["event"]["action"] == "smtp.message")
    assert chunked["smtp"]["message"] == {"bytes": 85, "chunks": 2}
    assert all(e["server"]["port"] in (25, 587) for s in (plain, tls, python, bdat) for e in s)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_reply_codes_agree_with_tshark() -> None:
    out = subprocess.run(["tshark", "-r", str(PCAP), "-d", "tcp.port==587,smtp", "-Y", "smtp.response.code",
                          "-T", "fields", "-e", "tcp.dstport", "-e", "smtp.response.code"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    theirs: dict[int, list[int]] = {}
    for line in out.splitlines():
        port, codes = line.split("\t")
        theirs.setdefault(int(port), []).extend(int(c) for c in codes.split(","))
    ours: dict[int, list[int]] = {}
    for port, session in sessions().items():
        for event in session:
            if event["smtp"].get("message", {}).get("chunks"):
                continue  # a BDAT message's reply is its LAST chunk's, already counted
            reply = event["smtp"]["reply"]
            ours.setdefault(port, []).extend([*reply.get("intermediate_codes", []), reply["code"]])
    assert ours == theirs
