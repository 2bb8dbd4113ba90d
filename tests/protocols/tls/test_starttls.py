"""TLS started part-way, from real servers: one capture per case through the CLI (captures by capture_starttls.py).

Each gives the cleartext part's own events first (where pktbeat decodes that
protocol), then the TLS event of the same connection with SNI, version and
cipher.  LDAP has no decoder: its port is listed under `tls`, whose decoder
skips the StartTLS exchange.  The live test runs the same servers and
clients (starttls_lab.py) under the live agent; PKTBEAT_REGENERATE_PCAPS=1
refreshes the committed captures from tcpdump's recording of that run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import live_agent, live_available
from tests.helpers.netns import stop_tcpdump, tcpdump, veth_pair
from tests.helpers.replay import replay
from tests.protocols.tls.starttls_lab import CASES, PORTS, SNI, lab, missing_tools

PCAPS = Path(__file__).parent / "pcaps"

PROTOCOLS: dict[str, list[dict[str, Any]]] = {
    "pgsql": [{"type": "pgsql", "ports": [PORTS["pgsql"]]}],
    "mysql": [{"type": "mysql", "ports": [PORTS["mysql"]]}],
    "ldap": [{"type": "tls", "ports": [PORTS["ldap"]]}],
    "smtp": [{"type": "smtp", "ports": [PORTS["smtp"]]}],
    "connect": [{"type": "http", "ports": [PORTS["connect"]]}],
}
TLS = {"type": "tls", "ports": [443]}  # enabled, so it can take connections over; no port of these cases


def protocols_for(case: str) -> list[dict[str, Any]]:
    listed = PROTOCOLS[case]
    return listed if any(p["type"] == "tls" for p in listed) else [*listed, TLS]


def check_case(case: str, events: list[dict[str, Any]]) -> None:
    tls = [e for e in events if e["type"] == "tls"]
    assert len(tls) == 1, [e["type"] for e in events]
    [event] = tls
    assert event["tls"]["client"]["server_name"] == SNI[case]
    assert event["tls"]["version"] in ("1.2", "1.3") and event["tls"]["cipher"].startswith("TLS_")
    assert event["tls"]["established"] is True
    assert event["destination"]["port"] == PORTS[case]
    first_tls = events.index(event)
    before = events[:first_tls]
    if case == "smtp":
        commands = [e["smtp"]["command"] if "command" in e.get("smtp", {}) else e.get("method") for e in before]
        assert "STARTTLS" in str(commands), commands
    elif case == "connect":
        [connect] = [e for e in before if e["type"] == "http"]
        assert connect["method"] == "CONNECT" and connect["url"]["domain"] == SNI["connect"]
        refused = [e for e in events[first_tls:] if e["type"] == "http"]
        assert [e["http"]["response"]["status_code"] for e in refused] == [403]


@pytest.mark.parametrize("case", CASES)
def test_capture_through_the_cli(case: str) -> None:
    events, _ = replay(PCAPS / f"starttls-{case}.pcap", protocols_for(case))
    check_case(case, events)


@pytest.mark.server
@pytest.mark.live
@pytest.mark.skipif(live_available() is not None or bool(missing_tools()),
                    reason=f"{live_available()} / missing {missing_tools()}")
def test_real_servers_live() -> None:
    protocols: list[dict[str, Any]] = [{"type": "pgsql", "ports": [PORTS["pgsql"]]},
                                       {"type": "mysql", "ports": [PORTS["mysql"]]},
                                       {"type": "http", "ports": [PORTS["connect"]]},
                                       {"type": "tls", "ports": [443, PORTS["ldap"]]},
                                       {"type": "smtp", "ports": [PORTS["smtp"]]}]
    cases = CASES
    with tempfile.TemporaryDirectory(prefix="pktbeat-starttls-") as tmp, veth_pair("pbs", offload=False) as pair, \
            lab(pair, Path(tmp)) as servers, live_agent(pair.a, [pair.a_if], protocols) as agent:
        pcaps = {case: Path(tmp) / f"starttls-{case}.pcap" for case in cases}
        for case in cases:
            dump = tcpdump(pair.a, pair.a_if, pcaps[case], f"tcp port {PORTS[case]}")
            try:
                servers.case(case)()
            finally:
                stop_tcpdump(dump)
        time.sleep(0.3)
        assert agent.stop() == 0, agent.log()[-3000:]
        events = agent.events()
        if os.environ.get("PKTBEAT_REGENERATE_PCAPS"):
            for pcap in pcaps.values():
                shutil.copy(pcap, PCAPS / pcap.name)
    for case in cases:
        port = PORTS[case]
        check_case(case, [e for e in events if e["destination"]["port"] == port])
