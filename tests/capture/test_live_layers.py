"""The kernel program's parsing on real packets: VLAN and Q-in-Q, IPv4 options, IPv6 extension headers,
IPv4/IPv6 fragments (and their flows), and the port map changed while running."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agent import metrics
from agent.capture.packet import F_FRAGMENT, F_LAST_CHUNK, F_MORE_FRAGS, F_VLAN, IPPROTO_ICMP, IPPROTO_ICMPV6, Packet
from agent.transport.ipfrag import FRAGMENT_COUNTERS, FragmentReassembler
from tests.helpers.live import kernel_probe, live_available
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]


def _packet(r: dict[str, Any]) -> Packet:
    return Packet(r["ts_ns"], r["family"], r["l4proto"], bytes.fromhex(r["src"]), bytes.fromhex(r["dst"]),
                  r["sport"], r["dport"], bytes.fromhex(r["payload"]), flags=r["flags"], frag_id=r["frag_id"],
                  frag_off=r["frag_off"], missing=r["missing"], wire_len=r["wire_len"])


def _send_frames(pair: VethPair, frames: list[bytes]) -> None:
    """Raw Ethernet frames out of b's veth (this kernel has no 8021q module for VLAN devices)."""
    pair.b.run(["python3", "-c",
                "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
                f"s.bind(('{pair.b_if}', 0)); "
                "[s.send(bytes.fromhex(h)) for h in sys.stdin.read().split()]"],
               input=" ".join(f.hex() for f in frames))


def _icmp_echo(src: str, dst: str, seq: int) -> bytes:
    import socket
    import struct

    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"pktbeat-vlan"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return ip + icmp


@pytest.mark.parametrize("tags", [[(0x8100, 100)], [(0x88A8, 100), (0x8100, 200)]], ids=["vlan", "qinq"])
def test_vlan_tags(tags: list[tuple[int, int]]) -> None:
    import struct

    with veth_pair() as pair:
        a_mac = bytes.fromhex(pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
                              .replace(":", ""))
        b_mac = bytes.fromhex(pair.b.run(["cat", f"/sys/class/net/{pair.b_if}/address"]).stdout.strip()
                              .replace(":", ""))
        frames = []
        for seq in range(3):
            header = a_mac + b_mac
            for tpid, vid in tags:
                header += struct.pack("!HH", tpid, vid)
            frames.append(header + struct.pack("!H", 0x0800) + _icmp_echo(pair.b_ip, pair.a_ip, seq))
        with kernel_probe(pair.a, [pair.a_if], icmp=True, flows=True) as probe:
            _send_frames(pair, frames)
            time.sleep(0.2)
            data = probe.finish()
    echo = [r for r in data["records"] if r["l4proto"] == IPPROTO_ICMP]
    assert len(echo) == 3
    assert all(r["vlan"] == tags[0][1] and r["flags"] & F_VLAN for r in echo)
    assert all(bytes.fromhex(r["payload"]).endswith(b"pktbeat-vlan") for r in echo)
    flows = [f for f in data["flows"] if f["l4proto"] == IPPROTO_ICMP]
    assert len(flows) == 1
    flow = flows[0]
    assert flow["vlan_outer"] == tags[0][1]
    assert flow["vlan_inner"] == (tags[1][1] if len(tags) > 1 else 0)
    assert flow["source_packets"] == 3 and flow["dest_packets"] == 0


def test_three_vlan_tags_are_not_ip() -> None:
    import struct

    with veth_pair() as pair:
        a_mac = bytes.fromhex(pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
                              .replace(":", ""))
        frame = a_mac + b"\x02" * 6 + struct.pack("!HHHHHH", 0x88A8, 1, 0x8100, 2, 0x8100, 3)
        frame += struct.pack("!H", 0x0800) + _icmp_echo(pair.b_ip, pair.a_ip, 1)
        with kernel_probe(pair.a, [pair.a_if], icmp=True) as probe:
            _send_frames(pair, [frame])
            time.sleep(0.2)
            data = probe.finish()
    assert [r for r in data["records"] if r["l4proto"] == IPPROTO_ICMP] == []
    assert data["counters"][str(data["ifindex"][pair.a_if])]["not_ip"] >= 1


def test_ipv4_options_are_skipped() -> None:
    with veth_pair() as pair, kernel_probe(pair.a, [pair.a_if], icmp=True) as probe:
        pair.a.run(f"ping -R -c 2 -i 0.2 {pair.b_ip}")  # record-route: a 40-byte options field
        data = probe.finish()
    echo = [r for r in data["records"] if r["l4proto"] == IPPROTO_ICMP]
    assert len(echo) == 4
    for r in echo:
        payload = bytes.fromhex(r["payload"])
        assert payload[0] in (0, 8) and payload[1] == 0
        assert r["wire_len"] >= 14 + 60 + 8  # the options were on the wire


def test_ipv6_hop_by_hop_header_is_walked() -> None:
    """MLD reports carry a hop-by-hop (router alert) header before the ICMPv6 message."""
    with veth_pair() as pair, kernel_probe(pair.a, [pair.a_if], icmp=True) as probe:
        pair.a.run(f"ip -6 maddr add 33:33:00:00:12:34 dev {pair.a_if}", check=False)
        pair.a.run(["python3", "-c",
                    "import socket,struct; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
                    "grp=socket.inet_pton(socket.AF_INET6,'ff02::1:3'); "
                    f"s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, grp+struct.pack('I', "
                    f"socket.if_nametoindex('{pair.a_if}'))); import time; time.sleep(0.5)"])
        time.sleep(0.3)
        data = probe.finish()
    mld = [r for r in data["records"] if r["l4proto"] == IPPROTO_ICMPV6 and bytes.fromhex(r["payload"])[0] == 143]
    assert mld, "no MLDv2 report seen"


@pytest.mark.parametrize("family", [4, 6])
def test_fragments_reach_user_space_and_reassemble(family: int) -> None:
    with veth_pair() as pair:
        target = pair.b_ip if family == 4 else pair.b_ip6
        flag = "-4" if family == 4 else "-6"
        with kernel_probe(pair.a, [pair.a_if], icmp=True, flows=True) as probe:
            pair.a.run(f"ping {flag} -c 2 -i 0.2 -s 4000 {target}")
            data = probe.finish()
    proto = IPPROTO_ICMP if family == 4 else IPPROTO_ICMPV6
    frags = [r for r in data["records"] if r["flags"] & F_FRAGMENT and r["family"] == family]
    assert len(frags) >= 2 * 2 * 3  # 2 requests + 2 replies, 3 pieces each
    assert all(r["l4proto"] == proto for r in frags)
    assert any(r["flags"] & F_MORE_FRAGS for r in frags) and any(r["frag_off"] > 0 for r in frags)
    reassembler = FragmentReassembler(metrics.Counters("t.frag", FRAGMENT_COUNTERS))
    whole = [p for p in (reassembler.add(_packet(r)) for r in frags) if p is not None]
    assert len(whole) == 4
    for pkt in whole:
        assert pkt.payload[0] in ((8, 0) if family == 4 else (128, 129))
        assert len(pkt.payload) == 8 + 4000 and pkt.flags & F_LAST_CHUNK
    counters = data["counters"][str(data["ifindex"][pair.a_if])]
    assert counters["fragment"] == len(frags)


def test_udp_fragments_count_in_their_datagrams_flow() -> None:
    """Later fragments carry no ports; the kernel remembers them from the first, so one flow holds all."""
    with veth_pair() as pair, kernel_probe(pair.a, [pair.a_if], ports=["udp:7777"], flows=True) as probe:
        for _ in range(2):
            pair.a.run(["socat", "-u", "-", f"UDP:{pair.b_ip}:7777,sourceport=7000,reuseaddr"],
                       input="z" * 4000)
        data = probe.finish()
    frags = [r for r in data["records"] if r["flags"] & F_FRAGMENT]
    assert len(frags) == 2 * 3
    udp_flows = [f for f in data["flows"] if f["l4proto"] == 17]
    assert len(udp_flows) == 1, udp_flows
    flow = udp_flows[0]
    assert {flow["port_lo"], flow["port_hi"]} == {7000, 7777}
    assert flow["source_packets"] == 6 and flow["dest_packets"] == 0


def test_port_map_changes_while_running() -> None:
    with veth_pair() as pair:
        pair.b.popen(["socat", f"UDP-RECVFROM:9100,bind={pair.b_ip},reuseaddr,fork", "EXEC:cat"])
        pair.b.wait_port(9100, host=pair.b_ip, udp=True)

        def send(text: str) -> None:
            pair.a.run(["socat", "-t", "0.2", "-", f"UDP:{pair.b_ip}:9100"], input=text)

        with kernel_probe(pair.a, [pair.a_if], ports=["udp:53"]) as probe:
            send("before\n")
            probe.set_ports(["udp:53", "udp:9100"])
            send("during\n")
            probe.set_ports(["udp:53"])
            send("after\n")
            data = probe.finish()
    payloads = [bytes.fromhex(r["payload"]) for r in data["records"] if 9100 in (r["sport"], r["dport"])]
    assert payloads == [b"during\n", b"during\n"]  # the datagram and its echo


def test_payload_beyond_snaplen_is_flagged_missing() -> None:
    payload = "q" * 5000
    with veth_pair() as pair:
        pair.b.popen(["socat", "-u", f"TCP-LISTEN:9200,bind={pair.b_ip},reuseaddr", "OPEN:/dev/null"])
        pair.b.wait_port(9200, host=pair.b_ip)
        with kernel_probe(pair.a, [pair.a_if], ports=["tcp:9200"], snaplen=1000) as probe:
            pair.a.run(["socat", "-u", "-", f"TCP:{pair.b_ip}:9200"], input=payload)
            time.sleep(0.2)
            data = probe.finish()
    sent = [r for r in data["records"] if r["dport"] == 9200 and (r["payload"] or r["missing"])]
    assert sent
    assert all(len(r["payload"]) // 2 <= 1000 for r in sent)
    assert sum(len(r["payload"]) // 2 + r["missing"] for r in sent) == len(payload)
    cut = [r for r in sent if r["missing"]]
    assert cut and all(r["flags"] & 0x0001 and r["flags"] & F_LAST_CHUNK for r in cut)  # PB_F_TRUNCATED
    counters = data["counters"][str(data["ifindex"][pair.a_if])]
    assert counters["truncated"] == len(cut)


def test_ipv6_extension_header_chain() -> None:
    """Hop-by-hop, destination options and routing headers before UDP (crafted: no tool sends all three)."""
    import socket
    import struct

    with veth_pair() as pair:
        a_mac = bytes.fromhex(pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
                              .replace(":", ""))
        payload = b"extension headers!"
        udp = struct.pack("!HHHH", 5555, 7777, 8 + len(payload), 0) + payload
        hbh = struct.pack("!BB", 60, 0) + b"\x01\x04\x00\x00\x00\x00"  # next: dest options; PadN
        dst = struct.pack("!BB", 43, 0) + b"\x01\x04\x00\x00\x00\x00"  # next: routing
        rth = struct.pack("!BBBB", 17, 0, 4, 0) + b"\x00" * 4  # next: UDP; type 4 (SRH), segments left 0
        body = hbh + dst + rth + udp
        ip6 = struct.pack("!IHBB", 6 << 28, len(body), 0, 64) + socket.inet_pton(socket.AF_INET6, pair.b_ip6) \
            + socket.inet_pton(socket.AF_INET6, pair.a_ip6)
        frame = a_mac + b"\x02" * 6 + struct.pack("!H", 0x86DD) + ip6 + body
        with kernel_probe(pair.a, [pair.a_if], ports=["udp:7777"], flows=True) as probe:
            _send_frames(pair, [frame])
            time.sleep(0.2)
            data = probe.finish()
    records = [r for r in data["records"] if r["dport"] == 7777]
    assert len(records) == 1
    r = records[0]
    assert (r["family"], r["l4proto"], r["sport"], bytes.fromhex(r["payload"])) == (6, 17, 5555, payload)
    flows = [f for f in data["flows"] if f["l4proto"] == 17]
    assert len(flows) == 1 and {flows[0]["port_lo"], flows[0]["port_hi"]} == {5555, 7777}
