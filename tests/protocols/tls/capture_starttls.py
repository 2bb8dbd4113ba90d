"""Capture one pcap per STARTTLS case from the real servers of starttls_lab.py.

    .venv/bin/python -m tests.protocols.tls.capture_starttls [directory]

writes starttls-<case>.pcap there (default: tests/protocols/tls/pcaps/, the
captures test_starttls.py replays).  tcpdump records namespace a's veth,
one capture per server port, while each client runs once.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.helpers.netns import stop_tcpdump, tcpdump, veth_pair
from tests.protocols.tls.starttls_lab import CASES, PORTS, lab

PCAPS = Path(__file__).parent / "pcaps"


def capture_all(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="pktbeat-starttls-") as tmp, veth_pair("pbs", offload=False) as pair, \
            lab(pair, Path(tmp)) as servers:
        for case in CASES:
            pcap = directory / f"starttls-{case}.pcap"
            proc = tcpdump(pair.a, pair.a_if, pcap, f"tcp port {PORTS[case]}")
            try:
                servers.case(case)()
            finally:
                stop_tcpdump(proc)
            out[case] = pcap
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PCAPS
    for case, path in capture_all(target).items():
        print(f"{case}: {path} ({path.stat().st_size} bytes)")
