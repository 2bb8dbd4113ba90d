"""Decoding of link-layer frames (pcap replay, --dump round trips) into Packet records.

This is the file-replay twin of the kernel program: it produces the same
records the BPF program would, with hand-written header parsing because
dpkt's object model costs ~10x more per packet.  `agent.capture.decode_dpkt`
is the slow reference built on dpkt; tests check both agree.
"""

from __future__ import annotations

import struct

from agent import metrics
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
    LinkInfo,
    Packet,
)

# pcap link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
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

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ1 = 0x9100
VLAN_TYPES = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ1)
MAX_VLAN_TAGS = 2
MAX_IP_LAYERS = 2  # IP-in-IP, as Packetbeat

IPV6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
MAX_IPV6_EXT = 8

_u16 = struct.Struct("!H").unpack_from
_ipv4 = struct.Struct("!BBHHHBBH4s4s").unpack_from
_tcp = struct.Struct("!HHIIBBH").unpack_from
_ports = struct.Struct("!HH").unpack_from
# Ethernet type; IPv4 version/IHL, total length, fragment field, protocol, addresses; TCP up to its flags.
_ether_ipv4_tcp = struct.Struct("!12xHBxHxxHxBxx4s4sHHIIBB").unpack_from

DECODE_COUNTERS = (
    "frames",
    "packets",
    "not_ip",
    "malformed",
    "other_l4",
    "truncated",
    "fragments",
)


class FrameDecoder:
    """Frames of one link type in, Packets out; anything else is counted, never raised."""

    def __init__(self, linktype: int, snaplen: int = 65535, keep_link: bool = False,
                 counters: metrics.Counters | None = None) -> None:
        if linktype not in SUPPORTED_LINKTYPES:
            raise ValueError(f"unsupported link type {linktype}")
        self.linktype = linktype
        self.snaplen = snaplen
        self.keep_link = keep_link
        self.stats = counters if counters is not None else metrics.register("decode", DECODE_COUNTERS)
        # Flows need the link layer of every frame: the fast path (which skips it) is off then.
        self._plain_ethernet = linktype == LINKTYPE_ETHERNET and not keep_link

    def tcp_fields(self, frame: bytes) -> tuple[bytes, bytes, int, int, int, int, int, bytes, int] | None:
        """An Ethernet/IPv4/TCP frame as Dispatcher.tcp's arguments after the timestamp (src, dst,
        sport, dport, seq, ack, flags, payload, missing), without building a Packet.

        None for every other frame (and whenever link details are kept): `decode` it instead.
        File replay spends most of its per-packet time here; `decode` gives the same values.
        """
        if not self._plain_ethernet or len(frame) < 54:
            return None
        (ethertype, vihl, total_len, frag, proto, src, dst, sport, dport, seq, ack, data_off,
         tcp_flags) = _ether_ipv4_tcp(frame)
        if ethertype != ETH_P_IP or vihl != 0x45 or proto != IPPROTO_TCP or frag & 0x3FFF or total_len < 20:
            return None
        end = 14 + total_len
        start = 34 + (data_off >> 4) * 4
        if data_off < 0x50 or start > end:
            return None
        payload = frame[start:end]
        missing = end - start - len(payload)
        stats = self.stats
        stats["frames"] += 1
        stats["packets"] += 1
        if missing:
            stats["truncated"] += 1
        return src, dst, sport, dport, seq, ack, tcp_flags, payload, missing

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
        link: LinkInfo | None = None
        vlans: tuple[int, ...] = ()
        lt = self.linktype
        try:
            if lt == LINKTYPE_ETHERNET:
                ethertype = _u16(frame, 12)[0]
                offset = 14
                while ethertype in VLAN_TYPES:
                    if len(vlans) >= MAX_VLAN_TAGS:
                        stats["not_ip"] += 1
                        return None
                    vlans += (_u16(frame, offset)[0] & 0x0FFF,)
                    ethertype = _u16(frame, offset + 2)[0]
                    offset += 4
                if self.keep_link:
                    link = LinkInfo(frame[6:12], frame[0:6], vlans, None)
                version = 4 if ethertype == ETH_P_IP else 6 if ethertype == ETH_P_IPV6 else 0
            elif lt == LINKTYPE_LINUX_SLL:
                ethertype = _u16(frame, 14)[0]
                offset = 16
                while ethertype in VLAN_TYPES and len(vlans) < MAX_VLAN_TAGS:
                    vlans += (_u16(frame, offset)[0] & 0x0FFF,)
                    ethertype = _u16(frame, offset + 2)[0]
                    offset += 4
                if self.keep_link:
                    addr_len = min(_u16(frame, 4)[0], 8)
                    link = LinkInfo(frame[6:6 + min(addr_len, 6)], b"", vlans, None)
                version = 4 if ethertype == ETH_P_IP else 6 if ethertype == ETH_P_IPV6 else 0
            elif lt == LINKTYPE_LINUX_SLL2:
                ethertype = _u16(frame, 0)[0]
                offset = 20
                if self.keep_link:
                    addr_len = min(frame[11], 8)
                    link = LinkInfo(frame[12:12 + min(addr_len, 6)], b"", (), None)
                version = 4 if ethertype == ETH_P_IP else 6 if ethertype == ETH_P_IPV6 else 0
            elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
                family = int.from_bytes(frame[:4], "big" if lt == LINKTYPE_LOOP else "little")
                if family > 0xFFFF:  # a capture written with the other byte order
                    family = int.from_bytes(frame[:4], "big")
                offset = 4
                version = 4 if family == 2 else 6 if family in (10, 24, 28, 30) else 0
            else:  # raw IP
                offset = 0
                version = frame[0] >> 4 if frame else 0
                if (lt == LINKTYPE_IPV4 and version != 4) or (lt == LINKTYPE_IPV6 and version != 6):
                    version = 0
        except (struct.error, IndexError):
            stats["malformed"] += 1
            return None
        if version == 0:
            stats["not_ip"] += 1
            return None
        try:
            pkt = self._decode_ip(frame, offset, version, ts_ns, wire_len, 0)
        except (struct.error, IndexError, _Malformed):
            stats["malformed"] += 1
            return None
        if pkt is None:
            return None
        if vlans:
            pkt.vlan = vlans[0]
            pkt.flags |= F_VLAN
        if link is not None:
            if pkt.link is not None:  # IP-in-IP: keep the outer addresses seen on the way
                link = link._replace(outer_ips=pkt.link.outer_ips)
            pkt.link = link
        stats["packets"] += 1
        return pkt

    def _decode_ip(self, frame: bytes, offset: int, version: int, ts_ns: int, wire_len: int,
                   depth: int) -> Packet | None:
        stats = self.stats
        if version == 4:
            (vihl, _tos, total_len, ident, frag, _ttl, proto, _csum, src, dst) = _ipv4(frame, offset)
            if vihl >> 4 != 4:
                raise _Malformed
            ihl = (vihl & 0x0F) * 4
            if ihl < 20 or total_len < ihl:
                raise _Malformed
            l4 = offset + ihl
            end = offset + total_len
            frag_off = (frag & 0x1FFF) * 8
            more = frag & 0x2000
            frag_id = ident
            family = 4
        else:
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
            frag_off = 0
            more = 0
            frag_id = 0
            fragmented = False
            for _ in range(MAX_IPV6_EXT):
                if proto in IPV6_EXT_HEADERS:
                    proto, hlen = frame[l4], (frame[l4 + 1] + 1) * 8
                    l4 += hlen
                elif proto == IPV6_FRAGMENT:
                    nxt = frame[l4]
                    fo = _u16(frame, l4 + 2)[0]
                    frag_off = fo & 0xFFF8
                    more = fo & 1
                    frag_id = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
                    fragmented = bool(frag_off or more)
                    proto = nxt
                    l4 += 8
                    if fragmented:
                        break  # what follows belongs to the fragment; the reassembler reads it
                else:
                    break
            if l4 > end:
                raise _Malformed
            if not fragmented:
                frag_off = more = 0
            family = 6
        captured_end = min(end, len(frame))
        if proto in (IPPROTO_IPIP, IPPROTO_IPV6) and depth + 1 < MAX_IP_LAYERS and not (frag_off or more):
            inner = self._decode_ip(frame, l4, 4 if proto == IPPROTO_IPIP else 6, ts_ns, wire_len, depth + 1)
            if inner is not None and self.keep_link:
                inner.link = LinkInfo(b"", b"", (), (src, dst))
            return inner
        if frag_off or more:
            stats["fragments"] += 1
            return Packet(ts_ns, family, proto, src, dst, 0, 0, frame[l4:captured_end],
                          flags=F_FRAGMENT | F_LAST_CHUNK | (F_MORE_FRAGS if more else 0),
                          frag_id=frag_id, frag_off=frag_off, wire_len=wire_len,
                          missing=end - captured_end)
        if proto == IPPROTO_TCP:
            sport, dport, seq, ack, data_off, tcp_flags, window = _tcp(frame, l4)
            doff = (data_off >> 4) * 4
            if doff < 20:
                raise _Malformed
            start = l4 + doff
            if start > end:
                raise _Malformed
            payload = frame[start:captured_end]
            missing = end - start - len(payload) if end > start else 0
            flags = F_LAST_CHUNK
            if missing:
                flags |= F_TRUNCATED
                stats["truncated"] += 1
            return Packet(ts_ns, family, proto, src, dst, sport, dport, payload, seq=seq, ack=ack,
                          tcp_flags=tcp_flags, window=window, wire_len=wire_len, flags=flags,
                          missing=missing)
        if proto == IPPROTO_UDP:
            sport, dport = _ports(frame, l4)
            udp_len = _u16(frame, l4 + 4)[0]
            if udp_len >= 8 and l4 + udp_len <= end:
                end = l4 + udp_len
            captured_end = min(end, len(frame))
            payload = frame[l4 + 8:captured_end]
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
            return Packet(ts_ns, family, proto, src, dst, 0, 0, frame[l4:captured_end], wire_len=wire_len,
                          missing=end - captured_end)
        stats["other_l4"] += 1
        # Flows still count other transports; no application payload is decoded.
        return Packet(ts_ns, family, proto, src, dst, 0, 0, b"", wire_len=wire_len)


class _Malformed(Exception):
    pass
