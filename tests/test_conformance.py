"""Packetbeat's own system-test expectations on its own captures, scored by the shared runner.

Every entry must pass except the known, documented deviations below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.replay import ROOT, SHARED

RUNNER = SHARED / "conformance" / "beats_conformance.py"

# Where pktbeat is right and Packetbeat is not (see the closing notes of the database issue).
KNOWN_DEVIATIONS = {
    # MySQL 8 with CLIENT_DEPRECATE_EOF: Packetbeat merges four replies into one event; pktbeat reports
    # all five queries of the connection.
    "test_0067_mysql_connection_phase.py::Test::test_connection_phase",
    # Its capture also holds a PostgreSQL connection that switches to TLS (SSLRequest, 'S'): pktbeat hands it
    # to the TLS decoder and reports the handshake (issue 11); Packetbeat publishes nothing for it, and the entry
    # counts exactly one event (the HTTP one).
    "test_0010_http_10_connection_close.py::Test::test_http_sample",
}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_conformance_entry_passes(tmp_path: Path) -> None:
    assert RUNNER.exists(), f"conformance runner not found at {RUNNER}"
    out = tmp_path / "conformance.json"
    proc = subprocess.run([sys.executable, str(RUNNER), "--project", str(ROOT), "--corpus",
                           str(SHARED / "corpus" / "beats"), "--jobs", "2", "--json", str(out),
                           # Packetbeat's golden events carry its own JA3S variant, not the standard one,
                           # and no event for a method refused by a channel close (amqp_channel_error.pcap).
                           "--protocol-option", "tls.ja3s=packetbeat",
                           "--protocol-option", "amqp.publish_refused_methods=false"],
                          capture_output=True, text=True, timeout=1150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = json.loads(out.read_text())["entries"]
    failing = {e["test"]: f"{e['status']}: {e['reason']}" for e in entries
               if e["status"] in ("FAIL", "ERROR") and e["test"] not in KNOWN_DEVIATIONS}
    assert not failing, "\n".join(f"{k} -> {v}" for k, v in sorted(failing.items()))
    passed = sum(1 for e in entries if e["status"] == "PASS")
    assert passed >= 186 - len(KNOWN_DEVIATIONS), proc.stdout[-2000:]
