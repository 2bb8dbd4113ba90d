"""Every corpus pcap through the CLI with flows on: no error, and flow counts equal tcpdump's.

The pcaps go in a few batches (several `-I` files per `pktbeat` run) so the
module stays fast; a batch whose totals disagree with tcpdump is replayed
file by file to name the culprit.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers.replay import CORPUS, replay

FLOWS = {"packetbeat.flows": {"timeout": "2s", "period": "-1s"}}
PCAPS = sorted(CORPUS.glob("*.pcap")) if CORPUS.is_dir() else []
N_BATCHES = 4
BATCHES = [PCAPS[i::N_BATCHES] for i in range(N_BATCHES)]
# IP frames as tcpdump sees them, with up to two VLAN tags (BPF's `vlan` shifts later offsets).
# Links without VLANs (SLL, BSD loopback) reject `vlan`: plain `ip or ip6` there.
IP_FILTERS = ("ip or ip6 or (vlan and (ip or ip6 or (vlan and (ip or ip6))))", "ip or ip6")

pytestmark = [
    pytest.mark.skipif(not PCAPS, reason="corpus not present"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed"),
]


def tcpdump_ip_frames(pcap: Path) -> tuple[int, int]:
    """(frames, sum of original frame lengths) of the IP frames tcpdump finds in `pcap`."""
    with tempfile.TemporaryDirectory(prefix="pktbeat-flows-") as tmp:
        out = Path(tmp) / "ip.pcap"
        for ip_filter in IP_FILTERS:
            proc = subprocess.run(["tcpdump", "-nn", "-r", str(pcap), "-w", str(out), ip_filter],
                                  capture_output=True, timeout=60)
            if proc.returncode == 0:
                break
        else:
            raise AssertionError(f"tcpdump cannot read {pcap.name}: {proc.stderr.decode(errors='replace')}")
        data = out.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    record = struct.Struct(endian + "IIII")
    frames = total = 0
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, origlen = record.unpack_from(data, offset)
        frames += 1
        total += origlen
        offset += 16 + caplen
    return frames, total


def flow_totals(pcaps: list[Path]) -> tuple[int, int]:
    """Replay `pcaps` in one run; checks the run and every flow event, returns (packets, bytes)."""
    extra: list[str] = []
    for pcap in pcaps[1:]:
        extra += ["-I", str(pcap)]
    events, log = replay(pcaps[0], settings=FLOWS, extra_args=extra, timeout=120)
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
    flows = [e for e in events if e.get("type") == "flow"]
    for ev in flows:
        assert ev["flow"]["final"] is True
        assert ev["event"]["type"] == ["connection", "end"]
        assert ev["event"]["duration"] >= 0
        assert ev["network"]["packets"] == ev["source"]["packets"] + ev["destination"].get("packets", 0)
        assert ev["network"]["bytes"] == ev["source"]["bytes"] + ev["destination"].get("bytes", 0)
    return sum(e["network"]["packets"] for e in flows), sum(e["network"]["bytes"] for e in flows)


@pytest.mark.parametrize("batch", range(N_BATCHES))
def test_corpus_replays_with_flows_and_counts_match_tcpdump(batch: int) -> None:
    pcaps = BATCHES[batch]
    expected = [tcpdump_ip_frames(p) for p in pcaps]
    totals = flow_totals(pcaps)
    want = (sum(f for f, _ in expected), sum(b for _, b in expected))
    if totals != want:
        per_file = [(p.name, flow_totals([p]), exp) for p, exp in zip(pcaps, expected, strict=True)]
        wrong = [(name, got, exp) for name, got, exp in per_file if got != exp]
        pytest.fail(f"flow (packets, bytes) differ from tcpdump's: {wrong}")
    assert want[0] > 0
