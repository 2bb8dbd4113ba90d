"""The TCP streams of a capture as session steps (for feeding a TNS session the bytes a real client sent)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.inprocess import read_packets
from tests.helpers.sessions import C2S, S2C, Step

PCAP = Path(__file__).parent / "pcaps" / "oracledb_sessions.pcap"
SERVER_PORTS = (1521, 1522)


def streams(pcap: Path = PCAP) -> list[list[Step]]:
    """One list of steps per connection, in capture order (client port order of first appearance)."""
    out: dict[int, list[Step]] = {}
    for pkt in read_packets(pcap):
        if not pkt.payload:
            continue
        if pkt.dport in SERVER_PORTS:
            out.setdefault(pkt.sport, []).append(Step(C2S, bytes(pkt.payload), pkt.ts_ns))
        elif pkt.sport in SERVER_PORTS:
            out.setdefault(pkt.dport, []).append(Step(S2C, bytes(pkt.payload), pkt.ts_ns))
    return list(out.values())
