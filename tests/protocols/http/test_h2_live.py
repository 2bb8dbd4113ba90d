"""HTTP/2 live: nginx h2c with curl and nghttp, and grpcio, in namespaces, captured by the live agent.

One veth pair, both servers in namespace b, clients in a.  The live agent
and tcpdump record a's veth at the same time; the agent's events must match
tshark's HTTP/2 dissection of tcpdump's capture stream for stream (method,
path, authority, status, grpc-status).  PKTBEAT_REGENERATE_PCAPS=1 copies
the capture of each server to tests/protocols/http/pcaps/.
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
from tests.protocols.http.h2_lab import (
    GRPC_PORT,
    NGINX_PORT,
    curl_h2c,
    grpc_client,
    grpc_server,
    nginx_h2c,
    tshark_streams,
)
from tests.protocols.http.test_h2_pcaps import PCAPS, _key

pytestmark = [
    pytest.mark.server,
    pytest.mark.live,
    pytest.mark.skipif(live_available() is not None, reason=str(live_available())),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("nginx", "curl", "nghttp", "tshark", "tcpdump")),
                       reason="needs nginx, curl, nghttp (nghttp2-client), tshark and tcpdump"),
]


def _streams(events: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    out = []
    for event in events:
        if event.get("type") != "http" or event["destination"]["port"] != port:
            continue
        url = event["url"]
        entry = {"method": event["method"], "path": url["path"], "authority": f"{url['domain']}:{url['port']}",
                 "status": str(event["http"]["response"]["status_code"])}
        if "rpc" in event:
            entry["grpc_status"] = str(event["rpc"]["grpc"]["status_code"])
        out.append(entry)
    return out


def test_nginx_h2c_and_grpc_live_match_tshark() -> None:
    protocols = [{"type": "http", "ports": [NGINX_PORT, GRPC_PORT]}]
    with tempfile.TemporaryDirectory(prefix="pktbeat-h2live-") as tmp, veth_pair("pbl", offload=False) as pair:
        root = Path(tmp)
        captures = {port: root / f"{port}.pcap" for port in (NGINX_PORT, GRPC_PORT)}
        with nginx_h2c(pair, root) as base, grpc_server(pair, root) as target, \
                live_agent(pair.a, [pair.a_if], protocols) as agent:
            dumps = [tcpdump(pair.a, pair.a_if, pcap, f"tcp port {port}") for port, pcap in captures.items()]
            try:
                curl_h2c(pair, base)
                grpc_client(pair, root, target)
                time.sleep(0.3)
            finally:
                for dump in dumps:
                    stop_tcpdump(dump)
            assert agent.stop() == 0, agent.log()[-3000:]
            events = agent.events()
        if os.environ.get("PKTBEAT_REGENERATE_PCAPS"):
            shutil.copy(captures[NGINX_PORT], PCAPS / "h2c-nginx.pcap")
            shutil.copy(captures[GRPC_PORT], PCAPS / "grpc.pcap")
        for port, pcap in captures.items():
            theirs = tshark_streams(pcap, port)
            ours = _streams(events, port)
            assert len(ours) == len(theirs) >= 4, (port, ours, theirs)
            assert sorted(map(_key, ours)) == sorted(map(_key, theirs))
    grpc = {e["rpc"]["method"]: e for e in events if "rpc" in e}
    assert grpc["Fail"]["error"]["message"] == "no such thing: x42 (100% missing)"
    assert grpc["Count"]["status"] == "OK" and grpc["Missing"]["status"] == "Error"
