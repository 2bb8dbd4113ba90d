"""Transactions inside tunnels, live on the underlay veth and replayed from its capture.

Namespaces a and b are joined by one veth (the underlay) and three tunnels
over it: VXLAN built with `ip link` (VNI 42, UDP 4789), GRE with key and
sequence numbers over IPv6 and IP-in-IP over IPv4 (both in user space,
tests/helpers/tunnel_forwarder.py: this kernel has no GRE or IP-in-IP
devices).  curl and dig in a talk to a web server and dnsmasq in b through
each tunnel (IPv4 and IPv6 inside), and socat to a port no protocol is
configured on.  One agent captures on a's veth: the transactions come out
with the inner addresses, the tunnel under pktbeat.tunnel; the kernel passes
exactly the inner packets of the configured ports; flows exist for the inner
conversations and the outer tunnels.  The tcpdump capture of the same veth,
replayed with -I, gives the same transactions.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.capture.decode import FrameDecoder
from agent.capture.pcapfile import CaptureReader
from agent.transport.types import ip_bytes
from tests.helpers.live import live_agent, live_available, start_tcpdump
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.replay import replay
from tests.helpers.tunnel_forwarder import GRE_KEY
from tests.helpers.tunnellab import VXLAN_VNI, Tunnel, tunnel

pytestmark = [
    pytest.mark.live, pytest.mark.server,
    pytest.mark.skipif(live_available() is not None, reason=str(live_available())),
    pytest.mark.skipif(not (shutil.which("dnsmasq") and shutil.which("dig") and shutil.which("socat")),
                       reason="needs dnsmasq, dig and socat"),
]

PROTOCOLS = [{"type": "http", "ports": [80]}, {"type": "dns", "ports": [53]}]
SETTINGS = {"packetbeat.flows": {"timeout": "30s", "period": "10s"}}
OTHER_PORT = 9999
# kind -> (tunnel kind, over IPv6, pktbeat.tunnel.type of IPv4 inside, of IPv6 inside, id)
TUNNELS = {
    "vxlan": ("vxlan", False, "vxlan", "vxlan", VXLAN_VNI),
    "gre": ("gre-keyseq", True, "gre", "gre", GRE_KEY),
    "ipip": ("ipip", False, "ip-in-ip", "ipv6-in-ip", 0),
}


@dataclass
class Lab:
    pair: VethPair
    tunnels: dict[str, Tunnel]
    events: list[dict[str, Any]]
    replayed: list[dict[str, Any]]
    counters: dict[str, int]
    inner_ports: dict[int, int]  # port -> inner packets tcpdump saw on the underlay


def _servers(pair: VethPair, tunnels: list[Tunnel], root: Path) -> None:
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("<html>inside</html>\n")
    pair.b.popen(["python3", "-m", "http.server", "-b", "::", "-d", str(root), "80"])
    args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=53",
            "--bind-interfaces", "--pid-file=", "--user=root", "--group=root",
            "--host-record=inside.example.test,10.99.0.7,fd00:99::7"]
    for t in tunnels:
        args += [f"--listen-address={t.b_ip}", f"--listen-address={t.b_ip6}"]
    pair.b.popen(args, log=root / "dnsmasq.log")
    pair.b.popen(["socat", f"TCP6-LISTEN:{OTHER_PORT},ipv6only=0,reuseaddr,fork", "EXEC:cat"])
    pair.b.wait_port(80)
    pair.b.wait_port(53, udp=True)
    pair.b.wait_port(OTHER_PORT)


def _traffic(pair: VethPair, t: Tunnel) -> None:
    for ip in (t.b_ip, t.b_ip6):
        host = f"[{ip}]" if ":" in ip else ip
        out = pair.a.run(["curl", "-s", "-g", "--max-time", "10", f"http://{host}/index.html"])
        assert "inside" in out.stdout
        out = pair.a.run(["dig", "+short", "+tries=2", "+time=2", f"@{ip}", "inside.example.test", "A"])
        assert out.stdout.strip() == "10.99.0.7"
        pair.a.run(["socat", "-", f"TCP:{host}:{OTHER_PORT}"], input="not for any protocol\n")


def _inner_ports(pcap: Path) -> dict[int, int]:
    """Inner packets per configured/unconfigured port, as the replay decoder sees the capture."""
    counts = dict.fromkeys((80, 53, OTHER_PORT), 0)
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts, wire_len)
            if pkt is None or pkt.tunnel is None:
                continue
            for port in counts:
                if port in (pkt.sport, pkt.dport):
                    counts[port] += 1
    return counts


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("tunnels")
    pcap = tmp / "underlay.pcap"
    with veth_pair() as pair, contextlib.ExitStack() as stack:
        tunnels = {name: stack.enter_context(tunnel(pair, kind, outer6=v6))
                   for name, (kind, v6, *_) in TUNNELS.items()}
        _servers(pair, list(tunnels.values()), tmp / "www")
        dumper = start_tcpdump(pair.a, pair.a_if, pcap)
        with live_agent(pair.a, [pair.a_if], PROTOCOLS, SETTINGS) as agent:
            for t in tunnels.values():
                _traffic(pair, t)
            time.sleep(0.5)
            dumper.stop()
            assert agent.stop() == 0, agent.log()[-3000:]
        line = next(line for line in agent.log().splitlines() if f"capture counters at exit, {pair.a_if}" in line)
        counters = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        replayed, _ = replay(pcap, PROTOCOLS, SETTINGS)
        yield Lab(pair, tunnels, agent.events(), replayed, counters, _inner_ports(pcap))


def _transactions(events: list[dict[str, Any]], kind: str, t: Tunnel) -> list[dict[str, Any]]:
    inner = {t.a_ip, t.b_ip, t.a_ip6, t.b_ip6}
    return [e for e in events if e.get("type") == kind and e["client"]["ip"] in inner]


@pytest.mark.parametrize("source", ["live", "replay"])
@pytest.mark.parametrize("name", list(TUNNELS))
def test_transactions_inside_come_out_with_inner_addresses(lab: Lab, name: str, source: str) -> None:
    _, outer6, type4, type6, tunnel_id = TUNNELS[name]
    t = lab.tunnels[name]
    events = lab.events if source == "live" else lab.replayed
    under_a, under_b = (lab.pair.a_ip6, lab.pair.b_ip6) if outer6 else (lab.pair.a_ip, lab.pair.b_ip)
    http = _transactions(events, "http", t)
    dns = _transactions(events, "dns", t)
    assert {(e["client"]["ip"], e["server"]["ip"], e["server"]["port"]) for e in http} == {
        (t.a_ip, t.b_ip, 80), (t.a_ip6, t.b_ip6, 80)}
    assert all(e["http"]["response"]["status_code"] == 200 and e["url"]["path"] == "/index.html" for e in http)
    assert {(e["client"]["ip"], e["server"]["ip"], e["dns"]["question"]["name"]) for e in dns} == {
        (t.a_ip, t.b_ip, "inside.example.test"), (t.a_ip6, t.b_ip6, "inside.example.test")}
    for event in http + dns:
        v6 = ":" in event["client"]["ip"]
        assert event["network"]["type"] == ("ipv6" if v6 else "ipv4")
        expected = {"type": type6 if v6 else type4, "depth": 1, "source": {"ip": under_a},
                    "destination": {"ip": under_b}}
        if tunnel_id:
            expected["id"] = tunnel_id
        assert event["pktbeat"]["tunnel"] == expected, event["pktbeat"]
        assert {under_a, under_b} <= set(event["related"]["ip"])


def test_the_kernel_passes_exactly_the_inner_packets_of_configured_ports(lab: Lab) -> None:
    ports = lab.inner_ports
    assert ports[OTHER_PORT] >= 3 * 2 * 6, ports  # three tunnels, two families, a short TCP exchange each
    assert lab.counters["matched"] == ports[80] + ports[53], (lab.counters, ports)
    assert lab.counters["unmatched"] >= ports[OTHER_PORT]
    assert lab.counters["decapsulated"] >= sum(ports.values())
    assert not [e for e in lab.events if e.get("destination", {}).get("port") == OTHER_PORT and e["type"] != "flow"]


@pytest.mark.parametrize("source", ["live", "replay"])
def test_flows_inside_and_outside_the_tunnels(lab: Lab, source: str) -> None:
    events = lab.events if source == "live" else lab.replayed
    flows = [e for e in events if e.get("type") == "flow"]
    pair = lab.pair
    for name, (_, _outer6, type4, _, tunnel_id) in TUNNELS.items():
        t = lab.tunnels[name]
        other = [f for f in flows if f["destination"].get("port") == OTHER_PORT and f["source"]["ip"] == t.a_ip]
        assert other and other[0]["pktbeat"]["tunnel"]["type"] == type4
        assert other[0]["network"]["packets"] >= 6
        if tunnel_id:
            assert other[0]["pktbeat"]["tunnel"]["id"] == tunnel_id
    # The outer flows: VXLAN's UDP, GRE over IPv6, IP-in-IP (protocol 4) and IPv6-in-IP (41), between the veths.
    outer = {(f["network"].get("transport") or f["network"].get("iana_number"), f["source"]["ip"])
             for f in flows if "pktbeat" not in f}
    assert ("udp", pair.a_ip) in outer or ("udp", pair.b_ip) in outer
    assert any(kind == "47" and ip in (pair.a_ip6, pair.b_ip6) for kind, ip in outer)
    assert {"4", "41"} <= {kind for kind, ip in outer if ip in (pair.a_ip, pair.b_ip)}
    assert all(ip_bytes(f["source"]["ip"]) for f in flows)
