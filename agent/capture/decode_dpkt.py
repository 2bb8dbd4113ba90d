"""The slow reference decoder, built on dpkt's link, IP, GRE and PPPoE layers.

`FrameDecoder` (decode.py) hand-parses headers for speed; this module gets
the same Packet from dpkt's object model.  Tests run both over every corpus
capture and the tunnel captures and require identical records, so the fast
path cannot drift.  dpkt has no VXLAN, GENEVE or ERSPAN layer: their fixed
headers are skipped here by their RFCs' lengths, and dpkt parses what
follows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import dpkt

from agent.capture import decode as fast
from agent.capture.packet import (
    F_FRAGMENT,
    F_LAST_CHUNK,
    F_MORE_FRAGS,
    F_TRUNCATED,
    F_TUNNEL,
    F_VLAN,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Packet,
)
from agent.capture.tunnel import MAX_ENCAP, TunnelInfo, TunnelSettings

_IP_TYPES = {dpkt.ethernet.ETH_TYPE_IP: 4, dpkt.ethernet.ETH_TYPE_IP6: 6}


@dataclass
class _Layers:
    """The encapsulations met so far (outermost first) and the VLANs of the current Ethernet header."""

    settings: TunnelSettings
    kinds: list[str] = field(default_factory=list)
    id: int = 0
    outer: tuple[bytes, bytes] | None = None
    vlans: tuple[int, ...] = ()

    def push(self, kind: str, tunnel_id: int = 0) -> None:
        self.kinds.append(kind)
        if tunnel_id:
            self.id = tunnel_id

    def info(self) -> TunnelInfo:
        src, dst = self.outer or (b"", b"")
        return TunnelInfo(tuple(self.kinds), self.id, src, dst)


def _ethernet_ip(eth: dpkt.ethernet.Ethernet, layers: _Layers) -> bytes | None:
    """The IP packet an Ethernet frame carries (through a PPPoE session), its VLANs noted in `layers`."""
    tags = getattr(eth, "vlan_tags", None) or []
    layers.vlans = tuple(t.id for t in tags)
    data = eth.data
    if isinstance(data, dpkt.pppoe.PPPoE):
        ppp = data.data
        if not isinstance(ppp, dpkt.ppp.PPP) or not isinstance(ppp.data, (dpkt.ip.IP, dpkt.ip6.IP6)):
            return None
        if not layers.settings.enabled or len(layers.kinds) >= MAX_ENCAP:
            return None
        layers.push("pppoe", data.session)
        return bytes(ppp.data)
    return bytes(data) if isinstance(data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def _link_payload(linktype: int, frame: bytes, layers: _Layers) -> bytes | None:
    """The IP packet inside a frame."""
    if linktype == fast.LINKTYPE_ETHERNET:
        return _ethernet_ip(dpkt.ethernet.Ethernet(frame), layers)
    if linktype == fast.LINKTYPE_LINUX_SLL:
        sll = dpkt.sll.SLL(frame)
        return bytes(sll.data) if isinstance(sll.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
    if linktype == fast.LINKTYPE_LINUX_SLL2:
        sll2 = dpkt.sll2.SLL2(frame)
        return bytes(sll2.data) if isinstance(sll2.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
    if linktype in (fast.LINKTYPE_NULL, fast.LINKTYPE_LOOP):
        return frame[4:]
    return frame


def decode(linktype: int, frame: bytes, ts_ns: int, wire_len: int = 0,
           tunnels: TunnelSettings | None = None) -> Packet | None:
    wire_len = wire_len or len(frame)
    layers = _Layers(tunnels or TunnelSettings())
    try:
        raw = _link_payload(linktype, frame, layers)
        if not raw:
            return None
        pkt = _from_raw_ip(raw, ts_ns, wire_len, layers)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    if pkt is not None:
        if layers.vlans:
            pkt.vlan = layers.vlans[0]
            pkt.flags |= F_VLAN
        if layers.kinds:
            pkt.tunnel = layers.info()
            pkt.flags |= F_TUNNEL
    return pkt


def _from_raw_ip(raw: bytes, ts_ns: int, wire_len: int, layers: _Layers) -> Packet | None:
    ip: dpkt.ip.IP | dpkt.ip6.IP6 = dpkt.ip.IP(raw) if raw[0] >> 4 == 4 else dpkt.ip6.IP6(raw)
    return _from_ip(ip, ts_ns, wire_len, raw, layers)


def _inner(proto: int, l4: bytes, layers: _Layers) -> tuple[str, int, bytes, int] | None:
    """(kind, id, inner bytes, 0 for Ethernet or 4/6 for IP) of a tunnel pktbeat follows, else None."""
    settings = layers.settings
    if proto == fast.IPPROTO_IPIP:
        return "ip-in-ip", 0, l4, 4
    if proto == dpkt.ip.IP_PROTO_IP6:
        return "ipv6-in-ip", 0, l4, 6
    if proto == dpkt.ip.IP_PROTO_GRE:
        gre = dpkt.gre.GRE(l4)
        if gre.v != 0 or gre.flags & dpkt.gre.GRE_RP:
            return None
        _, formats = gre.opt_fields_fmts()
        inner = l4[4 + struct.calcsize("!" + "".join(formats)):]  # dpkt re-packs what it parsed: slice instead
        key = getattr(gre, "key", 0)
        if gre.p in _IP_TYPES:
            return "gre", key, inner, _IP_TYPES[gre.p]
        if gre.p == 0x6558:
            return "gre", key, inner, 0
        if gre.p == 0x88BE and not gre.flags & dpkt.gre.GRE_SP:
            return "erspan1", key, inner, 0
        if gre.p == 0x88BE and inner[0] >> 4 == 1:
            return "erspan2", (inner[2] & 3) << 8 | inner[3], inner[8:], 0
        if gre.p == 0x22EB and inner[0] >> 4 == 2:
            return "erspan3", (inner[2] & 3) << 8 | inner[3], inner[12 + (8 if inner[11] & 1 else 0):], 0
        return None
    if proto == IPPROTO_UDP:
        udp = dpkt.udp.UDP(l4)
        body = bytes(udp.data)
        if udp.dport in settings.vxlan_ports and body and body[0] & 0x08:
            return "vxlan", int.from_bytes(body[4:7], "big"), body[8:], 0
        if udp.dport in settings.geneve_ports and body and body[0] >> 6 == 0:
            kind = int.from_bytes(body[2:4], "big")
            rest = body[8 + (body[0] & 0x3F) * 4:]
            version = 0 if kind == 0x6558 else _IP_TYPES.get(kind)
            return ("geneve", int.from_bytes(body[4:7], "big"), rest, version) if version is not None else None
    return None


def _decapsulate(proto: int, l4: bytes, src: bytes, dst: bytes, ts_ns: int, wire_len: int,
                 layers: _Layers) -> Packet | None:
    inner = _inner(proto, l4, layers)
    if inner is None or len(layers.kinds) >= MAX_ENCAP:
        return None
    kind, tunnel_id, data, version = inner
    if layers.outer is None:
        layers.outer = (src, dst)
    layers.push(kind, tunnel_id)
    layers.vlans = ()
    if version == 0:
        raw = _ethernet_ip(dpkt.ethernet.Ethernet(data), layers)
        if raw is None:
            raise ValueError("not IP inside")
        return _from_raw_ip(raw, ts_ns, wire_len, layers)
    return _from_raw_ip(data, ts_ns, wire_len, layers)


def _from_ip(ip: dpkt.ip.IP | dpkt.ip6.IP6, ts_ns: int, wire_len: int, raw: bytes, layers: _Layers) -> Packet | None:
    if isinstance(ip, dpkt.ip.IP):
        family, src, dst, proto = 4, ip.src, ip.dst, ip.p
        frag_off = ip.offset * 8
        more = bool(ip.mf)
        frag_id = ip.id
        header_len = ip.hl * 4
        l4 = raw[header_len:ip.len]
    else:
        family, src, dst = 6, ip.src, ip.dst
        proto = ip.p
        frag = ip.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT) if hasattr(ip, "extension_hdrs") else None
        frag_off = frag_id = 0
        more = False
        if frag is not None:
            frag_off = frag.frag_off * 8
            more = bool(frag.m_flag)
            frag_id = frag.id
        ext = sum(len(h) for h in (ip.extension_hdrs or {}).values() if h is not None) if hasattr(
            ip, "extension_hdrs") else 0
        l4 = raw[40 + ext:40 + ip.plen]
    end_missing = 0
    if layers.settings.enabled and not (frag_off or more):
        inner = _decapsulate(proto, l4, src, dst, ts_ns, wire_len, layers)
        if inner is not None:
            return inner
    if frag_off or more:
        return Packet(ts_ns, family, proto, src, dst, 0, 0, bytes(l4),
                      flags=F_FRAGMENT | F_LAST_CHUNK | (F_MORE_FRAGS if more else 0), frag_id=frag_id,
                      frag_off=frag_off, wire_len=wire_len)
    if proto == IPPROTO_TCP:
        tcp = dpkt.tcp.TCP(l4)
        payload = bytes(tcp.data)
        return Packet(ts_ns, family, proto, src, dst, tcp.sport, tcp.dport, payload, seq=tcp.seq, ack=tcp.ack,
                      tcp_flags=tcp.flags & 0xFF, window=tcp.win, wire_len=wire_len,
                      flags=F_LAST_CHUNK | (F_TRUNCATED if end_missing else 0))
    if proto == IPPROTO_UDP:
        udp = dpkt.udp.UDP(l4)
        payload = bytes(udp.data)[: max(0, udp.ulen - 8)] if udp.ulen >= 8 else bytes(udp.data)
        return Packet(ts_ns, family, proto, src, dst, udp.sport, udp.dport, payload, wire_len=wire_len)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return Packet(ts_ns, family, proto, src, dst, 0, 0, bytes(l4), wire_len=wire_len)
    return Packet(ts_ns, family, proto, src, dst, 0, 0, b"", wire_len=wire_len)
