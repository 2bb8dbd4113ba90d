"""The kernel program and the replay decoder on crafted encapsulated frames: the same inner packet, tunnel and flows.

Frames are built from the RFCs by tests/helpers/encap.py and run through the
loaded TC program with BPF_PROG_TEST_RUN (tests/helpers/progrun.py): what
the kernel writes to the ring and counts in its flow table is compared with
what FrameDecoder (replay) makes of the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from agent.capture.decode import LINKTYPE_ETHERNET, FrameDecoder
from agent.capture.packet import F_TUNNEL, IPPROTO_TCP, Packet
from agent.capture.record import OUTCOME_COUNTERS
from agent.capture.tunnel import GENEVE_PORTS, VXLAN_PORTS, TunnelInfo, TunnelSettings
from agent.flows.types import FlowSnapshot
from agent.flows.usertable import UserFlowSource
from tests.helpers import encap
from tests.helpers.live import live_available
from tests.helpers.progrun import ProgRunError, ProgRunner

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
OUT_A, OUT_B = bytes((192, 0, 2, 1)), bytes((192, 0, 2, 2))
OUT6_A, OUT6_B = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
HTTP = b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"
_next_host = iter(range(1, 250))


def tcp(sport: int, dport: int, payload: bytes, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 1, 0x50, flags, 512, 0, 0) + payload


def inner_http(v6: bool = False, dport: int = 80) -> tuple[bytes, bytes, bytes]:
    """(IP packet, src, dst): a request from a fresh inner address, so every test has flows of its own."""
    n = next(_next_host)
    if v6:
        src, dst = bytes.fromhex(f"fd00{n:04x}" + "0" * 23 + "1"), bytes.fromhex(f"fd00{n:04x}" + "0" * 23 + "2")
        return encap.ipv6(src, dst, IPPROTO_TCP, tcp(40000, dport, HTTP)), src, dst
    src, dst = bytes((10, n, 0, 1)), bytes((10, n, 0, 2))
    return encap.ipv4(src, dst, IPPROTO_TCP, tcp(40000, dport, HTTP)), src, dst


def eth(packet: bytes, ethertype: int | None = None, vlan: int | None = None) -> bytes:
    return encap.ethernet(MAC_B, MAC_A, ethertype or encap.ethertype_of(packet), packet, vlan=vlan)


def outer(payload: bytes, proto: int, v6: bool = False) -> bytes:
    return encap.ip(OUT6_A if v6 else OUT_A, OUT6_B if v6 else OUT_B, proto, payload)


def udp_outer(payload: bytes, dport: int, v6: bool = False, sport: int = 50123) -> bytes:
    a, b = (OUT6_A, OUT6_B) if v6 else (OUT_A, OUT_B)
    return encap.ip(a, b, 17, encap.udp(a, b, sport, dport, payload))


@pytest.fixture(scope="module")
def run() -> Iterator[ProgRunner]:
    with ProgRunner({(IPPROTO_TCP, 80): 1}) as runner:
        yield runner


def replay(frame: bytes, tunnels: TunnelSettings | None = None) -> Packet | None:
    return FrameDecoder(LINKTYPE_ETHERNET, keep_link=True, tunnels=tunnels).decode(frame, 1)


def kernel_record(run: ProgRunner, frame: bytes, **kwargs: int) -> Packet:
    run.records()  # drain
    run.frame(frame, **kwargs)
    records = run.records()
    assert len(records) == 1, f"expected one record, got {records}"
    return records[0]


def counted(run: ProgRunner, frame: bytes, **kwargs: int) -> dict[str, int]:
    """The counters one run of `frame` moved."""
    before = run.counters()
    run.frame(frame, **kwargs)
    return {name: value - before[name] for name, value in run.counters().items() if value != before[name]}


def kernel_flows(run: ProgRunner, *addresses: bytes) -> list[FlowSnapshot]:
    return [f for f in run.flows() if {f.key.addr_lo, f.key.addr_hi} & set(addresses)]


def _ip_proto(packet: bytes) -> int:
    return encap.IPPROTO_IPIP if encap.ip_version(packet) == 4 else encap.IPPROTO_IPV6


CASES = {
    # name: (frame builder taking the inner IP packet, expected kinds, expected id, outer v6)
    "gre": (lambda p: eth(outer(encap.gre(encap.ethertype_of(p), p), 47)), ("gre",), 0, False),
    "gre key+seq+csum": (lambda p: eth(outer(encap.gre(encap.ethertype_of(p), p, key=0xABCD, seq=9, csum=True), 47)),
                         ("gre",), 0xABCD, False),
    "gre over ipv6": (lambda p: eth(outer(encap.gre(encap.ethertype_of(p), p, key=5), 47, v6=True)), ("gre",), 5,
                      True),
    "gre ethernet (nvgre)": (lambda p: eth(outer(encap.gre(encap.ETH_P_TEB, eth(p), key=0x100), 47)), ("gre",),
                             0x100, False),
    "erspan1": (lambda p: eth(outer(encap.erspan1(eth(p)), 47)), ("erspan1",), 0, False),
    "erspan2": (lambda p: eth(outer(encap.erspan2(eth(p, vlan=30), 0x155, 3), 47)), ("erspan2",), 0x155, False),
    "erspan3": (lambda p: eth(outer(encap.erspan3(eth(p), 0x2AA, 4), 47)), ("erspan3",), 0x2AA, False),
    "vxlan": (lambda p: eth(udp_outer(encap.vxlan(eth(p), 4242), 4789)), ("vxlan",), 4242, False),
    "vxlan linux port": (lambda p: eth(udp_outer(encap.vxlan(eth(p), 7), 8472, v6=True)), ("vxlan",), 7, True),
    "geneve": (lambda p: eth(udp_outer(encap.geneve(eth(p), 99, options=encap.GENEVE_OPTION), 6081)), ("geneve",),
               99, False),
    "geneve ip": (lambda p: eth(udp_outer(encap.geneve(p, 98, proto=encap.ethertype_of(p)), 6081)), ("geneve",), 98,
                  False),
    "ip-in-ip": (lambda p: eth(outer(p, _ip_proto(p))), ("ip-in-ip",), 0, False),
    "ip-in-ipv6": (lambda p: eth(outer(p, _ip_proto(p), v6=True)), ("ip-in-ip",), 0, True),
    "pppoe": (lambda p: eth(encap.pppoe_session(p, 0x1234), encap.ETH_P_PPP_SES), ("pppoe",), 0x1234, None),
    "vxlan in gre": (lambda p: eth(outer(encap.gre(encap.ETH_P_IP, udp_outer(encap.vxlan(eth(p), 11), 4789)), 47)),
                     ("gre", "vxlan"), 11, False),
    "pppoe in vxlan in gre": (
        lambda p: eth(outer(encap.gre(encap.ETH_P_IP, udp_outer(encap.vxlan(
            eth(encap.pppoe_session(p, 77), encap.ETH_P_PPP_SES), 12), 4789)), 47)),
        ("gre", "vxlan", "pppoe"), 77, False),
}


@pytest.mark.parametrize("inner_v6", [False, True], ids=["inner4", "inner6"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_and_replay_decapsulate_alike(run: ProgRunner, case: str, inner_v6: bool) -> None:
    build, kinds, tunnel_id, outer_v6 = CASES[case]
    if case in {"ip-in-ip", "ip-in-ipv6"}:
        kinds = ("ipv6-in-ip",) if inner_v6 else ("ip-in-ip",)
    packet, src, dst = inner_http(inner_v6)
    frame = build(packet)
    got = kernel_record(run, frame)
    want = replay(frame)
    assert want is not None
    expected_outer = (b"", b"") if outer_v6 is None else (OUT6_A, OUT6_B) if outer_v6 else (OUT_A, OUT_B)
    assert got.tunnel == TunnelInfo(kinds, tunnel_id, *expected_outer)
    assert want.tunnel == got.tunnel
    for name in ("family", "l4proto", "src", "dst", "sport", "dport", "seq", "payload", "vlan", "flags"):
        assert getattr(got, name) == getattr(want, name), name
    assert (got.src, got.dst, got.dport, got.payload) == (src, dst, 80, HTTP) and got.flags & F_TUNNEL
    # Flows: the inner one with its tunnel, and one per outer layer, as replay counts them.
    table = UserFlowSource(100)
    table.packet(want)
    user = {(s.key.l4proto, s.key.addr_lo, s.key.addr_hi, s.source_packets, s.tunnel) for s in table.snapshot()}
    kernel = run.flows()
    inner_flows = [f for f in kernel if {f.key.addr_lo, f.key.addr_hi} == {src, dst}]
    assert len(inner_flows) == 1 and inner_flows[0].tunnel == got.tunnel and inner_flows[0].key.zone
    assert inner_flows[0].source_packets == 1 and inner_flows[0].source_bytes == len(frame)
    assert (IPPROTO_TCP, *sorted((src, dst)), 1, got.tunnel) in user
    assert len(user) == len(kinds) + 1 - (kinds[-1:] == ("pppoe",))  # PPPoE has no IP layer of its own


def test_the_same_inner_addresses_in_two_vxlan_segments_are_two_flows(run: ProgRunner) -> None:
    packet, src, _dst = inner_http()
    for vni in (1, 2):
        run.frame(eth(udp_outer(encap.vxlan(eth(packet), vni), 4789)))
    inner = [f for f in kernel_flows(run, src) if f.key.l4proto == IPPROTO_TCP]
    assert sorted(f.tunnel.id for f in inner if f.tunnel) == [1, 2]
    assert len({f.key.zone for f in inner}) == 2


def test_inner_traffic_on_unconfigured_ports_is_counted_but_not_passed(run: ProgRunner) -> None:
    packet, src, _dst = inner_http(dport=9999)
    frame = eth(outer(encap.gre(encap.ETH_P_IP, packet, key=1), 47))
    run.records()
    moved = counted(run, frame)
    assert moved["unmatched"] == 1 and moved["decapsulated"] == 1 and "matched" not in moved
    assert run.records() == []
    assert [f.key.port_hi for f in kernel_flows(run, src)] == [9999]


def test_vxlan_ports_come_from_the_settings(run: ProgRunner) -> None:
    packet, _src, _dst = inner_http()
    frame = eth(udp_outer(encap.vxlan(eth(packet), 5), 4790))
    assert "decapsulated" not in counted(run, frame)  # 4790 is VXLAN-GPE, not configured
    assert replay(frame).tunnel is None  # type: ignore[union-attr]
    run.kernel.set_tunnels(True, (4790,), GENEVE_PORTS)
    try:
        assert kernel_record(run, frame).tunnel == TunnelInfo(("vxlan",), 5, OUT_A, OUT_B)
    finally:
        run.kernel.set_tunnels(True, VXLAN_PORTS, GENEVE_PORTS)
    settings = TunnelSettings(vxlan_ports=(4790,))
    assert replay(frame, settings).tunnel == TunnelInfo(("vxlan",), 5, OUT_A, OUT_B)  # type: ignore[union-attr]


def test_decapsulation_can_be_turned_off(run: ProgRunner) -> None:
    packet, src, _dst = inner_http()
    frame = eth(outer(encap.gre(encap.ETH_P_IP, packet), 47))
    run.kernel.set_tunnels(False, VXLAN_PORTS, GENEVE_PORTS)
    try:
        moved = counted(run, frame)
    finally:
        run.kernel.set_tunnels(True, VXLAN_PORTS, GENEVE_PORTS)
    assert moved["other_l4"] == 1 and "decapsulated" not in moved
    assert not kernel_flows(run, src)
    plain = replay(frame, TunnelSettings(enabled=False))
    assert plain is not None and plain.tunnel is None and plain.l4proto == 47


def test_nesting_is_bounded(run: ProgRunner) -> None:
    """A fourth encapsulation is not opened: the packet ends at the third (a GRE packet: other_l4)."""
    packet, src, _dst = inner_http()
    four = eth(outer(encap.gre(encap.ETH_P_IP, outer(encap.gre(encap.ETH_P_IP, outer(encap.gre(
        encap.ETH_P_IP, outer(encap.gre(encap.ETH_P_IP, packet), 47)), 47)), 47)), 47))
    moved = counted(run, four)
    assert moved["tunnel_too_deep"] == 1 and moved["other_l4"] == 1 and moved["decapsulated"] == 1
    assert not kernel_flows(run, src)
    decoder = FrameDecoder(LINKTYPE_ETHERNET, keep_link=True)
    got = decoder.decode(four, 1)
    assert got is not None and got.l4proto == 47 and got.tunnel is not None and got.tunnel.depth == 3
    assert decoder.stats["tunnel_too_deep"] >= 1


@pytest.mark.parametrize("frame", [
    eth(outer(struct.pack("!HH", 0x0001, 0x880B) + b"\0" * 40, 47)),  # GRE version 1 (PPTP)
    eth(udp_outer(b"\x00" * 8 + b"\0" * 40, 4789)),  # VXLAN without the I flag
    eth(udp_outer(encap.geneve(b"\0" * 40, 1, proto=0x8847), 6081)),  # GENEVE carrying MPLS
    eth(outer(encap.gre(encap.ETH_P_ERSPAN2, b"\x20" + b"\0" * 40, seq=1), 47)),  # ERSPAN II header, version 2
], ids=["gre-v1", "vxlan-no-i-flag", "geneve-mpls", "erspan2-bad-version"])
def test_tunnel_headers_not_followed_leave_the_outer_packet(run: ProgRunner, frame: bytes) -> None:
    moved = counted(run, frame)
    assert moved["tunnel_not_followed"] == 1 and "decapsulated" not in moved
    got = replay(frame)
    assert got is not None and got.tunnel is None and (got.src, got.dst) == (OUT_A, OUT_B)


def test_outer_flows_count_when_the_inner_packet_is_not_ip_or_malformed(run: ProgRunner) -> None:
    arp = eth(b"\x00\x01" + b"\0" * 26, 0x0806)
    frame = eth(udp_outer(encap.vxlan(arp, 3), 4789, v6=True))
    moved = counted(run, frame)
    assert moved["not_ip"] == 1
    assert any(f.key.port_hi == 4789 and OUT6_A in (f.key.addr_lo, f.key.addr_hi) for f in run.flows())
    carrier = replay(frame)
    assert carrier is not None and carrier.dport == 4789 and carrier.tunnel is None  # flows still count it
    truncated = eth(outer(encap.gre(encap.ETH_P_IP, b"\x45\x00\x00\x50" + b"\0" * 8), 47))
    assert counted(run, truncated)["malformed"] == 1


@pytest.mark.parametrize("ppp", [0xC021, 0x8021], ids=["lcp", "ipcp"])
def test_pppoe_control_traffic_is_not_ip(run: ProgRunner, ppp: int) -> None:
    frame = eth(struct.pack("!BBHHH", 0x11, 0, 5, 10, ppp) + b"\0" * 8, encap.ETH_P_PPP_SES)
    assert counted(run, frame)["not_ip"] == 1
    assert replay(frame) is None


def test_super_packets_count_as_their_segments_with_their_headers(run: ProgRunner) -> None:
    packet, src, _dst = inner_http()
    frame = eth(packet)
    header = 14 + (40 if len(src) == 16 else 20) + 20
    moved = counted(run, frame, gso_segs=5)
    assert (moved["seen"], moved["skbs"], moved["gso"]) == (5, 1, 1)
    assert moved["bytes"] == len(frame) + 4 * header
    flow = kernel_flows(run, src)[0]
    assert (flow.source_packets, flow.source_bytes) == (5, len(frame) + 4 * header)
    # A virtio-net header (tun) leaves gso_segs to be worked out from gso_size.
    moved = counted(run, frame, gso_size=10)
    assert moved["seen"] == -(-len(HTTP) // 10)


def test_super_packets_inside_a_tunnel_carry_every_header_per_segment(run: ProgRunner) -> None:
    packet, src, _dst = inner_http()
    frame = eth(udp_outer(encap.vxlan(eth(packet), 8), 4789, sport=41414))
    header = len(frame) - len(HTTP)
    moved = counted(run, frame, gso_segs=3)
    assert (moved["seen"], moved["bytes"]) == (3, len(frame) + 2 * header)
    inner = kernel_flows(run, src)[0]
    vxlan = [f for f in run.flows() if {f.key.port_lo, f.key.port_hi} == {41414, 4789}]
    assert (inner.source_packets, inner.source_bytes) == (3, len(frame) + 2 * header)
    assert len(vxlan) == 1 and (vxlan[0].source_packets, vxlan[0].source_bytes) == (3, len(frame) + 2 * header)


def test_every_run_has_one_outcome_on_mutated_tunnel_frames(run: ProgRunner) -> None:
    """Random damage to every kind of encapsulated frame: the outcomes still add up, records still decode."""
    import random

    rng = random.Random(1234)
    bases = [build(inner_http(v6)[0]) for build, *_ in CASES.values() for v6 in (False, True)]
    before = run.counters()
    runs = 0
    for _ in range(600):
        frame = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(14, min(len(frame), 140))] = rng.randrange(256)
        try:
            run.frame(bytes(frame[:rng.randint(14, len(frame))]))
            runs += 1
        except ProgRunError:
            pass  # the test-run harness refuses IP frames shorter than an IP header
    after = run.counters()
    moved = {name: after[name] - before[name] for name in after}
    assert moved["skbs"] == runs > 300
    assert moved["skbs"] == sum(moved[name] for name in OUTCOME_COUNTERS)
    assert all(isinstance(p, Packet) for p in run.records())


def test_fragments_of_tunnel_packets_go_to_user_space(run: ProgRunner) -> None:
    """Fragmented on the underlay, a GRE packet cannot be opened in the kernel: its fragments are passed on."""
    packet, _, _ = inner_http()
    fragments = encap.ipv4_fragments(outer(encap.gre(encap.ETH_P_IP, packet), 47), 32)
    run.records()
    moved: dict[str, int] = {}
    for piece in fragments:
        for name, value in counted(run, eth(piece)).items():
            moved[name] = moved.get(name, 0) + value
    assert moved["fragment"] == moved["sent"] == len(fragments) >= 2
    assert [r.l4proto for r in run.records()] == [47] * len(fragments)
