"""Capture the HTTP/2 pcaps from real servers (h2_lab.py): nginx h2c with curl, and grpcio.

    .venv/bin/python -m tests.protocols.http.capture_h2 [directory]

writes h2c-nginx.pcap and grpc.pcap there (default: tests/protocols/http/pcaps/,
the captures test_h2_pcaps.py replays and compares with tshark).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.helpers.netns import stop_tcpdump, tcpdump, veth_pair
from tests.protocols.http.h2_lab import GRPC_PORT, NGINX_PORT, curl_h2c, grpc_client, grpc_server, nginx_h2c

PCAPS = Path(__file__).parent / "pcaps"


def capture_all(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    nginx_pcap, grpc_pcap = directory / "h2c-nginx.pcap", directory / "grpc.pcap"
    with tempfile.TemporaryDirectory(prefix="pktbeat-h2-") as tmp, veth_pair("pbh", offload=False) as pair:
        root = Path(tmp)
        with nginx_h2c(pair, root) as base:
            proc = tcpdump(pair.a, pair.a_if, nginx_pcap, f"tcp port {NGINX_PORT}")
            try:
                curl_h2c(pair, base)
            finally:
                stop_tcpdump(proc)
        with grpc_server(pair, root) as target:
            proc = tcpdump(pair.a, pair.a_if, grpc_pcap, f"tcp port {GRPC_PORT}")
            try:
                grpc_client(pair, root, target)
            finally:
                stop_tcpdump(proc)
    return {"nginx": nginx_pcap, "grpc": grpc_pcap}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PCAPS
    for case, path in capture_all(target).items():
        print(f"{case}: {path} ({path.stat().st_size} bytes)")
