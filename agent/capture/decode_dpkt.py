"""The slow reference decoder, built on dpkt's link and IP layers.

`FrameDecoder` (decode.py) hand-parses headers for speed; this module gets
the same Packet from dpkt's object model.  Tests run both over every corpus
capture and require identical records, so the fast path cannot drift.
"""

from __future__ import annotations

import dpkt

from agent.capture import decode as fast
from agent.capture.packet import (
    F_FRAGMENT,
    F_LAST_CHUNK,
    F_MORE_FRAGS,
    F_TRUNCATED,
    F_VLAN,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Packet,
)


def _link_payload(linktype: int, frame: bytes) -> tuple[bytes | None, tuple[int, ...]]:
    """The IP packet inside a frame, and the VLAN ids on the way."""
    vlans: tuple[int, ...] = ()
    if linktype == fast.LINKTYPE_ETHERNET:
        eth = dpkt.ethernet.Ethernet(frame)
        tags = getattr(eth, "vlan_tags", None) or []
        vlans = tuple(t.id for t in tags)
        ip = eth.data
        return (bytes(ip) if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) else None), vlans
    if linktype == fast.LINKTYPE_LINUX_SLL:
        sll = dpkt.sll.SLL(frame)
        return (bytes(sll.data) if isinstance(sll.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None), vlans
    if linktype == fast.LINKTYPE_LINUX_SLL2:
        sll2 = dpkt.sll2.SLL2(frame)
        return (bytes(sll2.data) if isinstance(sll2.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None), vlans
    if linktype in (fast.LINKTYPE_NULL, fast.LINKTYPE_LOOP):
        return frame[4:], vlans
    return frame, vlans


def decode(linktype: int, frame: bytes, ts_ns: int, wire_len: int = 0) -> Packet | None:
    wire_len = wire_len or len(frame)
    try:
        raw, vlans = _link_payload(linktype, frame)
        if not raw:
            return None
        version = raw[0] >> 4
        ip: dpkt.ip.IP | dpkt.ip6.IP6 = dpkt.ip.IP(raw) if version == 4 else dpkt.ip6.IP6(raw)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    pkt = _from_ip(ip, ts_ns, wire_len, raw)
    if pkt is not None and vlans:
        pkt.vlan = vlans[0]
        pkt.flags |= F_VLAN
    return pkt


def _from_ip(ip: dpkt.ip.IP | dpkt.ip6.IP6, ts_ns: int, wire_len: int, raw: bytes) -> Packet | None:
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
    if proto in (4, 41) and not (frag_off or more):
        try:
            inner = dpkt.ip.IP(l4) if proto == 4 else dpkt.ip6.IP6(l4)
        except dpkt.UnpackError:
            return None
        return _from_ip(inner, ts_ns, wire_len, l4)
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
