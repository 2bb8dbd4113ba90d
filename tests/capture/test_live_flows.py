"""Flows from the kernel's table: counts equal tcpdump's on the same interface (veth and tun), other ports too."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.capture.decode import FrameDecoder
from agent.capture.packet import IPPROTO_TCP, IPPROTO_UDP
from agent.capture.pcapfile import CaptureReader
from agent.transport.types import ip_text
from tests.helpers.live import kernel_probe, live_agent, live_available, start_tcpdump
from tests.helpers.netns import Namespace, veth_pair
from tests.helpers.tunpair import tun_pair

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

HTTP_PORT = 8080
CONNECTIONS = 20
FLOWS = {"packetbeat.flows": {"timeout": "30s", "period": "10s"}}
HTTP = [{"type": "http", "ports": [HTTP_PORT]}]

Conn = frozenset[tuple[str, int]]


def _tcpdump_counts(pcap: Path, proto: int) -> tuple[dict[Conn, int], dict[Conn, int]]:
    """Packets and frame bytes per bidirectional 5-tuple, as tcpdump saw them."""
    packets: Counter[Conn] = Counter()
    sizes: Counter[Conn] = Counter()
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts, wire_len)
            if pkt is None or pkt.l4proto != proto:
                continue
            key = frozenset({(ip_text(pkt.src), pkt.sport), (ip_text(pkt.dst), pkt.dport)})
            packets[key] += 1
            sizes[key] += wire_len
    return dict(packets), dict(sizes)


def _final_flows(events: list[dict[str, Any]], transport: str) -> dict[Conn, dict[str, Any]]:
    out: dict[Conn, dict[str, Any]] = {}
    for event in events:
        if event.get("type") != "flow" or not event["flow"]["final"]:
            continue
        if event["network"].get("transport") != transport:
            continue
        key = frozenset({(event["source"]["ip"], event["source"].get("port", 0)),
                         (event["destination"]["ip"], event["destination"].get("port", 0))})
        assert key not in out, f"two final reports for {key}"
        out[key] = event
    return out


def _wait_closed(ns: Namespace, port: int, timeout: float = 10.0) -> None:
    """Until every connection to `port` is closed both ways (TIME-WAIT or gone): no packet is still due."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run(["ss", "-Htan", "state", "all", f"( dport = :{port} )"]).stdout
        states = [line.split()[0] for line in out.splitlines() if line.strip()]
        if all(state == "TIME-WAIT" for state in states):
            time.sleep(0.2)  # the last ACK on its way through the forwarder
            return
        time.sleep(0.05)
    raise AssertionError(f"connections to port {port} still open after {timeout}s: {states}")


def _http_server(ns: Namespace, ip: str, root: Path) -> None:
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("<html>" + "x" * 5000 + "</html>\n")
    ns.popen(["python3", "-m", "http.server", "-b", ip, "-d", str(root), str(HTTP_PORT)])
    ns.wait_port(HTTP_PORT, host=ip)


def _compare_with_tcpdump(ns: Namespace, iface: str, server_ip: str, client_ip: str, tmp: Path,
                          traffic: Callable[[], None], settings: dict[str, Any]) -> dict[Conn, dict[str, Any]]:
    pcap = tmp / "seen.pcap"
    dumper = start_tcpdump(ns, iface, pcap, f"tcp port {HTTP_PORT}")
    with live_agent(ns, [iface], HTTP, {**FLOWS, **settings}) as agent:
        traffic()
        _wait_closed(ns, HTTP_PORT)
        dumper.stop()
        assert agent.stop() == 0, agent.log()[-3000:]
        assert agent.stop_seconds is not None and agent.stop_seconds < 2.0
    packets, sizes = _tcpdump_counts(pcap, IPPROTO_TCP)
    assert len(packets) == CONNECTIONS, f"tcpdump saw {len(packets)} connections"
    flows = _final_flows(agent.events(), "tcp")
    for conn, count in packets.items():
        assert conn in flows, f"no flow event for {sorted(conn)}"
        event = flows[conn]
        assert event["network"]["packets"] == count, f"{sorted(conn)}: flow {event['network']} vs tcpdump {count}"
        assert event["network"]["bytes"] == sizes[conn]
        # the client sent first: it is the flow's source
        assert event["source"]["ip"] == client_ip and event["destination"]["port"] == HTTP_PORT
        assert event["source"]["packets"] + event["destination"]["packets"] == count
        assert event["network"]["community_id"].startswith("1:")
    http = [e for e in agent.events() if e["type"] == "http"]
    assert len(http) == CONNECTIONS and all(e["http"]["response"]["status_code"] == 200 for e in http)
    assert {(e["client"]["ip"], e["server"]["ip"], e["server"]["port"]) for e in http} == {
        (client_ip, server_ip, HTTP_PORT)}
    assert all(e["url"]["path"] == "/index.html" and e["http"]["response"]["body"]["bytes"] == 5014 for e in http)
    return flows


@pytest.mark.server
def test_flow_counts_equal_tcpdump_over_veth(tmp_path: Path) -> None:
    """Offloads off: the packets cross the veth as the wire would carry them, so tcpdump on it counts them as the
    agent does.  (With TSO on, a super-packet crosses whole: tcpdump shows one, the agent counts its segments;
    tests/capture/test_live_wire_counts.py checks that case.)"""
    with veth_pair(offload=False) as pair:
        _http_server(pair.b, pair.b_ip, tmp_path / "www")

        def traffic() -> None:
            for _ in range(CONNECTIONS):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:{HTTP_PORT}/index.html"])

        flows = _compare_with_tcpdump(pair.a, pair.a_if, pair.b_ip, pair.a_ip, tmp_path, traffic, {})
    for event in flows.values():
        assert event["source"]["mac"] and event["destination"]["mac"]  # Ethernet: MACs reported


@pytest.mark.server
def test_flow_counts_equal_tcpdump_over_tun(tmp_path: Path) -> None:
    """An L3 device: no link header; flows carry the tunnel's inner addresses and no MACs."""
    with tun_pair() as pair:
        _http_server(pair.b, pair.b_ip, tmp_path / "www")

        def traffic() -> None:
            for _ in range(CONNECTIONS):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:{HTTP_PORT}/index.html"])

        flows = _compare_with_tcpdump(pair.a, pair.a_if, pair.b_ip, pair.a_ip, tmp_path, traffic, {})
    for event in flows.values():
        assert event["source"]["ip"] == pair.a_ip and event["destination"]["ip"] == pair.b_ip
        assert "mac" not in event["source"] and "mac" not in event["destination"]
        assert event["network"]["type"] == "ipv4"


def test_unconfigured_ports_reach_no_ring_but_count_in_flows() -> None:
    """Only port 8080 is configured: TCP 9999 and UDP 9998 traffic yields no record, is counted, and has flows."""
    with veth_pair() as pair:
        pair.b.popen(["socat", f"TCP-LISTEN:9999,bind={pair.b_ip},reuseaddr,fork", "EXEC:cat"])
        pair.b.wait_port(9999, host=pair.b_ip)
        pcap = Path(f"/tmp/pktbeat-unconf-{pair.a_if}.pcap")
        try:
            dumper = start_tcpdump(pair.a, pair.a_if, pcap, "port 9999 or port 9998")
            with kernel_probe(pair.a, [pair.a_if], ports=[f"tcp:{HTTP_PORT}"], flows=True) as probe:
                for i in range(3):
                    pair.a.run(["socat", "-", f"TCP:{pair.b_ip}:9999"], input=f"hello {i}\n" * 50)
                    pair.a.run(["socat", "-u", "-", f"UDP:{pair.b_ip}:9998"], input=f"datagram {i}\n")
                _wait_closed(pair.a, 9999)
                dumper.stop()
                data = probe.finish()
            tcp_packets, tcp_bytes = _tcpdump_counts(pcap, IPPROTO_TCP)
            udp_packets, _ = _tcpdump_counts(pcap, IPPROTO_UDP)
        finally:
            pcap.unlink(missing_ok=True)
    assert data["records"] == []
    counters = data["counters"][str(data["ifindex"][pair.a_if])]
    seen_on_ports = sum(tcp_packets.values()) + sum(udp_packets.values())
    assert seen_on_ports >= 3 * 6
    assert counters["unmatched"] >= seen_on_ports
    assert counters["emitted"] == counters["matched"] == 0
    outcomes = ("not_ip", "malformed", "other_l4", "unmatched", "no_payload", "sent", "ring_full", "load_failed",
                "emit_failed")
    assert counters["skbs"] == sum(counters[name] for name in outcomes)
    assert counters["seen"] >= counters["skbs"]
    flows = {frozenset({(ip_text(bytes.fromhex(f["addr_lo"])), f["port_lo"]),
                        (ip_text(bytes.fromhex(f["addr_hi"])), f["port_hi"])}): f for f in data["flows"]}
    for conn, count in {**tcp_packets, **udp_packets}.items():
        flow = flows[conn]
        assert flow["source_packets"] + flow["dest_packets"] == count
    for conn, size in tcp_bytes.items():
        assert flows[conn]["source_bytes"] + flows[conn]["dest_bytes"] == size
