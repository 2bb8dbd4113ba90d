"""Packet counts as the wire has them: GSO/GRO super-packets count as the segments they stand for.

The agent captures on the *sending* side, where TC sees the stack's super-packets
(TCP always builds them; with `tso off gso off` the device segments them after
the TC hook), and its final flow counts must equal tcpdump's on the receiving
side, where the packets are on the wire.  With offloads on, the super-packet
crosses the veth whole and tcpdump sees it as one packet; the agent's count must
then equal the segments the TCP stacks say they sent and received (the sum of
gso_segs: TcpOutSegs + TcpRetransSegs + TcpInSegs of the server's namespace).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.capture.decode import FrameDecoder
from agent.capture.packet import IPPROTO_TCP
from agent.capture.pcapfile import CaptureReader
from tests.helpers.live import live_agent, live_available, start_tcpdump
from tests.helpers.netns import Namespace, veth_pair
from tests.helpers.tunpair import tun_pair

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

PORT = 8080
BODY = 4 * 1024 * 1024  # about 2,900 full-size segments
SETTINGS = {"packetbeat.flows": {"timeout": "30s", "period": "10s"}}
HTTP = [{"type": "http", "ports": [PORT]}]


def _serve(ns: Namespace, ip: str, root: Path) -> None:
    root.mkdir(exist_ok=True)
    (root / "big.bin").write_bytes(b"\x5a" * BODY)
    ns.popen(["python3", "-m", "http.server", "-b", ip, "-d", str(root), str(PORT)])
    ns.wait_port(PORT, host=ip)


def _tcp_counters(ns: Namespace) -> dict[str, int]:
    """The Tcp line of the namespace's /proc/net/snmp (segments as the TCP stack counts them)."""
    lines = [line.split() for line in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines() if line.startswith("Tcp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))


def _wire(pcap: Path) -> tuple[int, int]:
    """Packets and frame bytes of the HTTP connection in a tcpdump capture."""
    packets, sizes = Counter[str](), Counter[str]()
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts, wire_len)
            if pkt is not None and pkt.l4proto == IPPROTO_TCP and PORT in (pkt.sport, pkt.dport):
                packets["tcp"] += 1
                sizes["tcp"] += wire_len
    return packets["tcp"], sizes["tcp"]


def _final_flow(events: list[dict[str, Any]], server_ip: str) -> dict[str, Any]:
    flows = [e for e in events if e.get("type") == "flow" and e["flow"]["final"]
             and e["network"].get("transport") == "tcp" and e["destination"].get("port") == PORT
             and e["destination"]["ip"] == server_ip]
    assert len(flows) == 1, f"expected one final flow for the download, got {flows}"
    return flows[0]


def _download(ns: Namespace, server_ip: str) -> None:
    out = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", f"http://{server_ip}:{PORT}/big.bin"])
    assert out.stdout.strip() == str(BODY)
    time.sleep(0.5)  # the last ACKs and FINs


def _measure(sender: Namespace, sender_if: str, receiver: Namespace, receiver_if: str, server_ip: str,
             tmp: Path) -> tuple[dict[str, Any], tuple[int, int], int]:
    """(the agent's final flow on the sending side, tcpdump's (packets, bytes) on the receiving side,
    the segments the server's TCP stack sent and received)."""
    pcap = tmp / "receiver.pcap"
    dumper = start_tcpdump(receiver, receiver_if, pcap, f"tcp port {PORT}", snaplen=128)  # headers: the count
    before = _tcp_counters(sender)
    with live_agent(sender, [sender_if], HTTP, SETTINGS) as agent:
        _download(receiver, server_ip)
        after = _tcp_counters(sender)
        dumper.stop()
        assert agent.stop() == 0, agent.log()[-3000:]
    segments = sum(after[name] - before[name] for name in ("OutSegs", "RetransSegs", "InSegs"))
    flow, wire = _final_flow(agent.events(), server_ip), _wire(pcap)
    print(f"{sender_if}: agent {flow['network']['packets']} packets {flow['network']['bytes']} bytes; receiver's "
          f"tcpdump {wire[0]} packets {wire[1]} bytes; the server's TCP stack {segments} segments")
    return flow, wire, segments


@pytest.mark.server
def test_sender_side_counts_equal_receiver_tcpdump_with_offloads_off(tmp_path: Path) -> None:
    with veth_pair() as pair:
        pair.b.run(f"ethtool -K {pair.b_if} tso off gso off")
        pair.a.run(f"ethtool -K {pair.a_if} gro off")  # tcpdump on the receiver then sees the wire
        _serve(pair.b, pair.b_ip, tmp_path / "www")
        flow, (packets, size), segments = _measure(pair.b, pair.b_if, pair.a, pair.a_if, pair.b_ip, tmp_path)
    assert packets > BODY // 1500, f"tcpdump saw only {packets} packets"
    assert (flow["network"]["packets"], flow["network"]["bytes"]) == (packets, size), \
        f"agent {flow['network']} vs tcpdump {packets} packets, {size} bytes (stack: {segments} segments)"
    assert flow["network"]["packets"] == segments


@pytest.mark.server
def test_sender_side_counts_equal_receiver_tcpdump_over_tun(tmp_path: Path) -> None:
    with tun_pair() as pair:
        _serve(pair.b, pair.b_ip, tmp_path / "www")
        flow, (packets, size), segments = _measure(pair.b, pair.b_if, pair.a, pair.a_if, pair.b_ip, tmp_path)
    assert packets > BODY // 1500, f"tcpdump saw only {packets} packets"
    assert (flow["network"]["packets"], flow["network"]["bytes"]) == (packets, size), \
        f"agent {flow['network']} vs tcpdump {packets} packets, {size} bytes (stack: {segments} segments)"


@pytest.mark.server
def test_with_offloads_on_counts_are_the_sum_of_gso_segs(tmp_path: Path) -> None:
    with veth_pair() as pair:
        _serve(pair.b, pair.b_ip, tmp_path / "www")
        flow, (packets, _), segments = _measure(pair.b, pair.b_if, pair.a, pair.a_if, pair.b_ip, tmp_path)
    assert packets < segments, "the veth carried no super-packet: nothing was tested"
    assert flow["network"]["packets"] == segments, f"agent {flow['network']} vs the stack's {segments} segments"
