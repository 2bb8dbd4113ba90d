"""Decoding of link-layer frames (pcap replay, --dump round trips) into Packet records.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

This is the file-replay twin of the kernel program: it produces the same
records the BPF program would, with hand-written header parsing because
dpkt's object model costs ~10x more per packet.  `agent.capture.decode_dpkt`
is the slow reference built on dpkt; tests check both agree.

Like the kernel program it looks inside tunnels (agent/capture/tunnel.py):
the Packet is the innermost one, with `tunnel` saying what carried it, and,
when link details are kept (flows), `link.carriers` holding a port-less
Packet per outer layer so that the outer flows are counted too.
"""

from __future__ import annotations

import struct
from typing import Final

from agent import metrics
from agent.capture import tunnel as tun
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
    LinkInfo,
    Packet,
)
from agent.capture.tunnel import TunnelInfo, TunnelSettings

# pcap link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW_BSD: Final = 12
LINKTYPE_RAW_OPENBSD: Final = 14
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

SUPPORTED_LINKTYPES: Final = {
    LINKTYPE_NULL: "NULL/loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW_BSD: "raw IP",
    LINKTYPE_RAW_OPENBSD: "raw IP",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_8021Q: Final = 0x8100
ETH_P_8021AD: Final = 0x88A8
ETH_P_QINQ1: Final = 0x9100
VLAN_TYPES: Final = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ1)
MAX_VLAN_TAGS: Final = 2

IPV6_EXT_HEADERS: Final = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAGMENT: Final = 44
IPPROTO_IPIP: Final = 4
IPPROTO_IPV6: Final = 41
IPPROTO_GRE: Final = 47
MAX_IPV6_EXT: Final = 8
_NO_LINK: Final = LinkInfo(b"", b"", ())  # the link of a packet that came out of an IP-level tunnel

_u16: Final = struct.Struct("!H").unpack_from
_tcp: Final = struct.Struct("!HHIIBBH").unpack_from
_ports: Final = struct.Struct("!HH").unpack_from
_ports_header: Final = struct.Struct("!HHHH")

DECODE_COUNTERS: Final = (
    "frames",
    "packets",
    "not_ip",
    "malformed",
    "other_l4",
    "truncated",
    "fragments",
    "decapsulated",
    "tunnel_too_deep",
    "tunnel_not_followed",
)


class _Encap:
    """The encapsulations met so far in one frame (at most tunnel.MAX_ENCAP)."""

    __slots__ = ("carriers", "id", "kinds", "link", "outer", "vlans")

    def __init__(self, link: LinkInfo | None) -> None:
        self.kinds: tuple[str, ...] = ()
        self.id = 0
        self.outer: tuple[bytes, bytes] | None = None  # the outermost IP header that carried a tunnel
        self.link = link  # of the current layer (kept only for flows)
        self.vlans: tuple[int, ...] = ()  # of the current layer's Ethernet header
        self.carriers: list[Packet] = []  # one port-less Packet per outer layer (flows only)

    def push(self, kind: int, tunnel_id: int) -> None:
        self.kinds += (tun.KIND_NAMES[kind],)
        if tunnel_id:
            self.id = tunnel_id

    def info(self) -> TunnelInfo:
        src, dst = self.outer if self.outer is not None else (b"", b"")
        return TunnelInfo(self.kinds, self.id, src, dst)


def _part(frame: bytes, start: int, stop: int) -> bytes:
    """frame[start:stop], empty when a truncated capture ends before `start`.

    Python's slice is already empty then; the mypyc build's raises SystemError
    ("Negative size passed to PyBytes_FromStringAndSize") when start > len(frame).
    """
    stop = min(stop, len(frame))
    return frame[start:stop] if start < stop else b""


class FrameDecoder:
    """Frames of one link type in, Packets out; anything else is counted, never raised."""

    def __init__(self, linktype: int, snaplen: int = 65535, keep_link: bool = False,
                 tunnels: TunnelSettings | None = None, counters: metrics.Counters | None = None) -> None:
        if linktype not in SUPPORTED_LINKTYPES:
            raise ValueError(f"unsupported link type {linktype}")
        self.linktype = linktype
        self.snaplen = snaplen
        self.keep_link = keep_link
        self.stats = counters if counters is not None else metrics.register("decode", DECODE_COUNTERS)
        # Flows need the link layer of every frame: the fast path (which skips it) is off then.
        self._plain_ethernet = linktype == LINKTYPE_ETHERNET and not keep_link
        settings = tunnels if tunnels is not None else TunnelSettings()
        self.decap = settings.enabled
        self.vxlan_ports = frozenset(settings.vxlan_ports)
        self.geneve_ports = frozenset(settings.geneve_ports)
        self.tunnel_ports = self.vxlan_ports | self.geneve_ports

    def tcp_fields(self, frame: bytes) -> tuple[bytes, bytes, int, int, int, int, int, bytes, int] | None:
        """An Ethernet/IPv4/TCP frame as Dispatcher.tcp's arguments after the timestamp (src, dst,
        sport, dport, seq, ack, flags, payload, missing), without building a Packet.

        None for every other frame (and whenever link details are kept): `decode` it instead.
        `decode` gives the same values.
        """
        fields = self.plain_tcp(frame)
        if fields is not None:
            self.count_plain(1)
        return fields

    def plain_tcp(self, frame: bytes) -> tuple[bytes, bytes, int, int, int, int, int, bytes, int] | None:
        """`tcp_fields` without counting the frame: file replay, which spends most of its per-packet time
        here, counts a batch's frames at once (`count_plain`)."""
        if not self._plain_ethernet or len(frame) < 54:
            return None
        # IPv4 (no options) carrying TCP, not a fragment: checked in place, before anything is unpacked
        if frame[12] != 8 or frame[13] or frame[14] != 0x45 or frame[23] != IPPROTO_TCP or frame[20] & 0x3F \
                or frame[21]:
            return None
        total_len = (frame[16] << 8) | frame[17]
        data_off = frame[46]
        end = 14 + total_len
        start = 34 + (data_off >> 4) * 4
        if total_len < 20 or data_off < 0x50 or start > end:
            return None
        # Byte by byte: compiled, these are machine operations, where a struct call boxes four ints.
        sport = (frame[34] << 8) | frame[35]
        dport = (frame[36] << 8) | frame[37]
        seq = (frame[38] << 24) | (frame[39] << 16) | (frame[40] << 8) | frame[41]
        ack = (frame[42] << 24) | (frame[43] << 16) | (frame[44] << 8) | frame[45]
        payload = _part(frame, start, end)
        missing = end - start - len(payload)
        if missing:
            self.stats["truncated"] += 1
        return frame[26:30], frame[30:34], sport, dport, seq, ack, frame[47], payload, missing

    def count_plain(self, frames: int) -> None:
        """Count `frames` taken by `plain_tcp` (frames and packets, as `decode` counts each)."""
        stats = self.stats
        stats["frames"] += frames
        stats["packets"] += frames

    def decode(self, frame: bytes, ts_ns: int, wire_len: int = 0) -> Packet | None:
        if not wire_len:
            wire_len = len(frame)
        fields = self.tcp_fields(frame)  # the common case; it counts the frames it takes
        if fields is not None:
            src, dst, sport, dport, seq, ack, tcp_flags, payload, missing = fields
            return Packet(ts_ns, 4, IPPROTO_TCP, src, dst, sport, dport, payload, seq=seq, ack=ack,
                          tcp_flags=tcp_flags, window=_u16(frame, 48)[0], wire_len=wire_len,
                          flags=F_LAST_CHUNK | F_TRUNCATED if missing else F_LAST_CHUNK, missing=missing)
        stats = self.stats
        stats["frames"] += 1
        try:
            ethertype, offset, vlans, link, encap = self._link_header(frame)
        except (struct.error, IndexError):
            stats["malformed"] += 1
            return None
        version = 4 if ethertype == ETH_P_IP else 6 if ethertype == ETH_P_IPV6 else 0
        if version == 0:
            stats["not_ip"] += 1
            return None
        try:
            pkt = self._decode_ip(frame, offset, version, ts_ns, wire_len, encap, link)
        except (struct.error, IndexError, _Malformed):
            stats["malformed"] += 1
            return None
        if pkt is None:
            return None
        if pkt.tunnel is None:
            if vlans:
                pkt.vlan = vlans[0]
                pkt.flags |= F_VLAN
            pkt.link = link
        stats["packets"] += 1
        return pkt

    def _link_header(self, frame: bytes) -> tuple[int, int, tuple[int, ...], LinkInfo | None, _Encap | None]:
        """The frame's link layer: (ethertype of what it carries, its offset, VLAN ids, link addresses when kept,
        the PPPoE encapsulation); struct.error or IndexError when the frame is too short for it."""
        link: LinkInfo | None = None
        vlans: tuple[int, ...] = ()
        encap: _Encap | None = None
        lt = self.linktype
        if lt == LINKTYPE_ETHERNET:
            vlans, ethertype, offset = _ethernet(frame, 0)
            if self.keep_link:
                link = LinkInfo(frame[6:12], frame[0:6], vlans)
        elif lt == LINKTYPE_LINUX_SLL:
            ethertype = _u16(frame, 14)[0]
            offset = 16
            while ethertype in VLAN_TYPES and len(vlans) < MAX_VLAN_TAGS:
                vlans += (_u16(frame, offset)[0] & 0x0FFF,)
                ethertype = _u16(frame, offset + 2)[0]
                offset += 4
            if self.keep_link:
                addr_len = min(_u16(frame, 4)[0], 8)
                link = LinkInfo(frame[6:6 + min(addr_len, 6)], b"", vlans)
        elif lt == LINKTYPE_LINUX_SLL2:
            ethertype = _u16(frame, 0)[0]
            offset = 20
            if self.keep_link:
                addr_len = min(frame[11], 8)
                link = LinkInfo(frame[12:12 + min(addr_len, 6)], b"", ())
        elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
            family = int.from_bytes(frame[:4], "big" if lt == LINKTYPE_LOOP else "little")
            if family > 0xFFFF:  # a capture written with the other byte order
                family = int.from_bytes(frame[:4], "big")
            offset = 4
            ethertype = ETH_P_IP if family == 2 else ETH_P_IPV6 if family in (10, 24, 28, 30) else 0
        else:  # raw IP
            offset = 0
            version = frame[0] >> 4 if frame else 0
            if (lt == LINKTYPE_IPV4 and version != 4) or (lt == LINKTYPE_IPV6 and version != 6):
                version = 0
            ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6 if version == 6 else 0
        if ethertype == tun.ETH_P_PPP_SES:
            encap = _Encap(link)
            encap.vlans = vlans
            ethertype, offset = self._pppoe(frame, offset, encap)
        return ethertype, offset, vlans, link, encap

    def reassembled(self, pkt: Packet) -> Packet | None:
        """The inner packet of a tunnel datagram that arrived IP-fragmented (the dispatcher reassembled it),
        or None when it carries no tunnel pktbeat follows.  `pkt.payload` is the UDP payload, or the whole
        L4 datagram of GRE and IP-in-IP."""
        proto = pkt.l4proto
        if not self.decap or not (proto in _CARRIERS or proto == IPPROTO_UDP):
            return None
        frame = pkt.payload
        if proto == IPPROTO_UDP:  # the tunnel parsers read the ports: put the header back
            frame = _ports_header.pack(pkt.sport, pkt.dport, 8 + len(frame), 0) + frame
        inner = self._tunnel(frame, proto, 0, len(frame))
        if inner is None:
            return None
        try:
            return self._decap(frame, inner, pkt.family, proto, pkt.src, pkt.dst, 0, pkt.ts_ns, pkt.wire_len, None,
                               None)
        except (struct.error, IndexError, _Malformed):
            self.stats["malformed"] += 1
            return None

    def _pppoe(self, frame: bytes, offset: int, encap: _Encap) -> tuple[int, int]:
        """(ethertype, offset) of what a PPPoE session header at `offset` carries (0: not IP, or too deep)."""
        session = tun.pppoe_inner(frame, offset)
        if session is None or not self.decap:
            return 0, offset
        if len(encap.kinds) >= tun.MAX_ENCAP:
            self.stats["tunnel_too_deep"] += 1
            return 0, offset
        encap.push(tun.KIND_PPPOE, session[1])
        return ETH_P_IP if session[0] == 4 else ETH_P_IPV6, offset + 8

    def _decode_ip(self, frame: bytes, offset: int, version: int, ts_ns: int, wire_len: int,
                   encap: _Encap | None, link: LinkInfo | None) -> Packet | None:
        if version == 4:
            proto, src, dst, l4, end, frag_off, more, frag_id = _ipv4_header(frame, offset)
            family = 4
        else:
            proto, src, dst, l4, end, frag_off, more, frag_id = _ipv6_header(frame, offset)
            family = 6
        captured_end = min(end, len(frame))
        if self.decap and not (frag_off or more) and (proto in _CARRIERS or proto == IPPROTO_UDP):
            inner = self._tunnel(frame, proto, l4, captured_end)
            if inner is not None:
                if encap is None or len(encap.kinds) < tun.MAX_ENCAP:
                    return self._decap(frame, inner, family, proto, src, dst, l4, ts_ns, wire_len, encap, link)
                self.stats["tunnel_too_deep"] += 1
        if frag_off or more:
            self.stats["fragments"] += 1
            pkt = Packet(ts_ns, family, proto, src, dst, 0, 0, _part(frame, l4, captured_end),
                         flags=F_FRAGMENT | F_LAST_CHUNK | (F_MORE_FRAGS if more else 0),
                         frag_id=frag_id, frag_off=frag_off, wire_len=wire_len,
                         missing=end - captured_end)
        else:
            pkt = self._transport(frame, family, proto, src, dst, l4, end, ts_ns, wire_len)
        if encap is not None:
            self._inside(pkt, encap)
        return pkt

    def _transport(self, frame: bytes, family: int, proto: int, src: bytes, dst: bytes, l4: int, end: int,
                   ts_ns: int, wire_len: int) -> Packet:
        """The Packet of a whole (not fragmented) IP datagram whose L4 header starts at `l4`."""
        stats = self.stats
        captured_end = min(end, len(frame))
        if proto == IPPROTO_TCP:
            sport, dport, seq, ack, data_off, tcp_flags, window = _tcp(frame, l4)
            doff = (data_off >> 4) * 4
            if doff < 20:
                raise _Malformed
            start = l4 + doff
            if start > end:
                raise _Malformed
            payload = _part(frame, start, captured_end)
            missing = end - start - len(payload) if end > start else 0
            flags = F_LAST_CHUNK
            if missing:
                flags |= F_TRUNCATED
                stats["truncated"] += 1
            return Packet(ts_ns, family, proto, src, dst, sport, dport, payload, seq=seq, ack=ack,
                          tcp_flags=tcp_flags, window=window, wire_len=wire_len, flags=flags, missing=missing)
        if proto == IPPROTO_UDP:
            if len(frame) < l4 + 6:  # ports and length are read (a capture may end inside the checksum)
                raise _Malformed
            sport = frame[l4] << 8 | frame[l4 + 1]
            dport = frame[l4 + 2] << 8 | frame[l4 + 3]
            udp_len = frame[l4 + 4] << 8 | frame[l4 + 5]
            if udp_len >= 8 and l4 + udp_len <= end:
                end = l4 + udp_len
            captured_end = min(end, len(frame))
            payload = _part(frame, l4 + 8, captured_end)
            missing = max(0, end - (l4 + 8) - len(payload))
            flags = F_LAST_CHUNK
            if missing:
                flags |= F_TRUNCATED
                stats["truncated"] += 1
            return Packet(ts_ns, family, proto, src, dst, sport, dport, payload, wire_len=wire_len,
                          flags=flags, missing=missing)
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            if captured_end - l4 < 4:
                raise _Malformed
            return Packet(ts_ns, family, proto, src, dst, 0, 0, _part(frame, l4, captured_end), wire_len=wire_len,
                          missing=end - captured_end)
        stats["other_l4"] += 1
        # Flows still count other transports; no application payload is decoded.
        return Packet(ts_ns, family, proto, src, dst, 0, 0, b"", wire_len=wire_len)


    def _tunnel(self, frame: bytes, proto: int, l4: int, end: int) -> tun.Inner | None:
        """Where the inner packet of a tunnel this IP packet carries starts, or None."""
        try:
            if proto == IPPROTO_IPIP:
                return tun.KIND_IPIP, 0, l4, ETH_P_IP
            if proto == IPPROTO_IPV6:
                return tun.KIND_IP6, 0, l4, ETH_P_IPV6
            if proto == IPPROTO_GRE:
                return tun.gre_inner(frame, l4, end)
            if len(frame) < l4 + 4:
                raise _Malformed
            dport = frame[l4 + 2] << 8 | frame[l4 + 3]
            if dport not in self.tunnel_ports:  # nearly every UDP packet: one look-up
                return None
            if dport in self.vxlan_ports:
                return tun.vxlan_inner(frame, l4 + 8, end)
            if dport in self.geneve_ports:
                return tun.geneve_inner(frame, l4 + 8, end)
        except tun.NotFollowed:
            self.stats["tunnel_not_followed"] += 1
        return None

    def _decap(self, frame: bytes, inner: tun.Inner, family: int, proto: int, src: bytes, dst: bytes, l4: int,
               ts_ns: int, wire_len: int, encap: _Encap | None, link: LinkInfo | None) -> Packet | None:
        """Go inside: the outer layer becomes a carrier (flows), the inner packet is decoded."""
        kind, tunnel_id, offset, ethertype = inner
        if encap is None:
            encap = _Encap(link)
        if self.keep_link:
            sport, dport = _ports(frame, l4) if proto == IPPROTO_UDP else (0, 0)
            carrier = Packet(ts_ns, family, proto, src, dst, sport, dport, b"", wire_len=wire_len,
                             link=encap.link, tunnel=encap.info() if encap.kinds else None)
            encap.carriers.append(carrier)
        if encap.outer is None:
            encap.outer = (src, dst)
        encap.push(kind, tunnel_id)
        encap.link = _NO_LINK if self.keep_link else None
        encap.vlans = ()
        try:
            if ethertype == tun.ETH_P_TEB:
                vlans, ethertype, offset_after = _ethernet(frame, offset)
                if self.keep_link:
                    encap.link = LinkInfo(frame[offset + 6:offset + 12], frame[offset:offset + 6], vlans)
                encap.vlans = vlans
                offset = offset_after
                if ethertype == tun.ETH_P_PPP_SES:
                    ethertype, offset = self._pppoe(frame, offset, encap)
            version = 4 if ethertype == ETH_P_IP else 6 if ethertype == ETH_P_IPV6 else 0
            if version == 0:
                self.stats["not_ip"] += 1
                return self._carrier_only(encap)
            return self._decode_ip(frame, offset, version, ts_ns, wire_len, encap, encap.link)
        except (struct.error, IndexError, _Malformed):
            if not self.keep_link:
                raise
            self.stats["malformed"] += 1
            return self._carrier_only(encap)

    @staticmethod
    def _carrier_only(encap: _Encap) -> Packet | None:
        """An inner packet that cannot be decoded: its outer layers still count as flows."""
        if not encap.carriers:
            return None
        last = encap.carriers[-1]
        last.link = (last.link if last.link is not None else _NO_LINK)._replace(carriers=tuple(encap.carriers[:-1]))
        return last

    def _inside(self, pkt: Packet, encap: _Encap) -> None:
        """The innermost packet of a decapsulated frame: its tunnel, VLANs and (for flows) link and carriers."""
        self.stats["decapsulated"] += 1
        pkt.tunnel = encap.info()
        pkt.flags |= F_TUNNEL
        if encap.vlans:
            pkt.vlan = encap.vlans[0]
            pkt.flags |= F_VLAN
        if self.keep_link:
            own = encap.link if encap.link is not None else _NO_LINK
            pkt.link = own._replace(carriers=tuple(encap.carriers))


def _ipv4_header(frame: bytes, offset: int) -> tuple[int, bytes, bytes, int, int, int, int, int]:
    """What _ipv6_header returns, of an IPv4 header at `offset` (read byte by byte: typed, mypyc keeps the
    numbers native)."""
    if len(frame) < offset + 20:
        raise _Malformed
    vihl = frame[offset]
    if vihl >> 4 != 4:
        raise _Malformed
    ihl = (vihl & 0x0F) * 4
    total_len = frame[offset + 2] << 8 | frame[offset + 3]
    if ihl < 20 or total_len < ihl:
        raise _Malformed
    frag = frame[offset + 6] << 8 | frame[offset + 7]
    return (frame[offset + 9], frame[offset + 12:offset + 16], frame[offset + 16:offset + 20], offset + ihl,
            offset + total_len, (frag & 0x1FFF) * 8, frag & 0x2000, frame[offset + 4] << 8 | frame[offset + 5])


def _ipv6_header(frame: bytes, offset: int) -> tuple[int, bytes, bytes, int, int, int, int, int]:
    """(protocol, source, destination, L4 offset, end, fragment offset, more fragments, fragment id) of an
    IPv6 header at `offset`, its extension headers walked."""
    if frame[offset] >> 4 != 6:
        raise _Malformed
    plen = _u16(frame, offset + 4)[0]
    proto = frame[offset + 6]
    src = frame[offset + 8:offset + 24]
    dst = frame[offset + 24:offset + 40]
    if len(dst) != 16:
        raise _Malformed
    l4 = offset + 40
    end = l4 + plen
    frag_off = more = frag_id = 0
    for _ in range(MAX_IPV6_EXT):
        if proto in IPV6_EXT_HEADERS:
            proto, hlen = frame[l4], (frame[l4 + 1] + 1) * 8
            l4 += hlen
        elif proto == IPV6_FRAGMENT:
            nxt = frame[l4]
            fo = _u16(frame, l4 + 2)[0]
            proto = nxt
            l4 += 8
            if fo & 0xFFF9:  # an offset or more fragments: what follows belongs to the fragment
                frag_off, more, frag_id = fo & 0xFFF8, fo & 1, int.from_bytes(frame[l4 - 4:l4], "big")
                break
        else:
            break
    if l4 > end:
        raise _Malformed
    return proto, src, dst, l4, end, frag_off, more, frag_id


def _ethernet(frame: bytes, offset: int) -> tuple[tuple[int, ...], int, int]:
    """(VLAN ids, ethertype, offset after the header) of an Ethernet header at `offset`; ethertype 0
    when it has more tags than pktbeat reads."""
    ethertype = frame[offset + 12] << 8 | frame[offset + 13]  # IndexError when cut short, as struct.error
    offset += 14
    vlans: tuple[int, ...] = ()
    while ethertype in VLAN_TYPES:
        if len(vlans) >= MAX_VLAN_TAGS:
            return vlans, 0, offset
        vlans += (_u16(frame, offset)[0] & 0x0FFF,)
        ethertype = _u16(frame, offset + 2)[0]
        offset += 4
    return vlans, ethertype, offset


_CARRIERS: Final = (IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE)


class _Malformed(Exception):
    pass
