"""Literal packets and flow tables for the flow tests."""

from __future__ import annotations

import ipaddress
from typing import Any

from agent.capture.packet import F_LAST_CHUNK, F_TUNNEL, IPPROTO_TCP, LinkInfo, Packet
from agent.capture.tunnel import TunnelInfo
from agent.config.model import FlowsConfig
from agent.config.typed import build
from agent.flows.table import FlowTable

S = 1_000_000_000
T0 = 1_700_000_000 * S  # on a 10 s boundary, so Packetbeat's timer grid starts at T0 + tick

MAC_A = bytes.fromhex("0242ac110002")
MAC_B = bytes.fromhex("0242ac110003")


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def packet(ts_ns: int, src: str, dst: str, sport: int = 0, dport: int = 0, *, proto: int = IPPROTO_TCP,
           wire_len: int = 60, payload: bytes = b"", macs: tuple[bytes, bytes] | None = (MAC_A, MAC_B),
           vlans: tuple[int, ...] = (), outer: tuple[str, str] | None = None, tcp_flags: int = 0,
           flags: int = F_LAST_CHUNK, frag_id: int = 0, frag_off: int = 0) -> Packet:
    s, d = ip(src), ip(dst)
    link = None
    if macs is not None or vlans:
        smac, dmac = macs if macs is not None else (b"", b"")
        link = LinkInfo(smac, dmac, vlans)
    tunnel = None
    if outer is not None:  # an IP-in-IP packet
        tunnel = TunnelInfo(("ip-in-ip",), 0, ip(outer[0]), ip(outer[1]))
        flags |= F_TUNNEL
    return Packet(ts_ns, 4 if len(s) == 4 else 6, proto, s, d, sport, dport, payload, wire_len=wire_len,
                  tcp_flags=tcp_flags, flags=flags, frag_id=frag_id, frag_off=frag_off, link=link, tunnel=tunnel)


def reply(p: Packet, ts_ns: int, wire_len: int | None = None, payload: bytes | None = None) -> Packet:
    """The same packet in the other direction."""
    link = None
    if p.link is not None:
        link = LinkInfo(p.link.dst_mac, p.link.src_mac, p.link.vlans)
    return Packet(ts_ns, p.family, p.l4proto, p.dst, p.src, p.dport, p.sport,
                  p.payload if payload is None else payload, wire_len=p.wire_len if wire_len is None else wire_len,
                  link=link, tunnel=p.tunnel.reversed() if p.tunnel is not None else None, flags=p.flags)


def flows_config(**settings: Any) -> FlowsConfig:
    return build(FlowsConfig, settings, "packetbeat.flows")


def table(follow_clock: bool = False, **settings: Any) -> tuple[FlowTable, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return FlowTable(flows_config(**settings), events.append, follow_clock=follow_clock), events
