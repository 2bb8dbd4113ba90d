"""Encapsulation headers built from their RFCs, for the user-space tunnel forwarder and the tunnel pcaps.

Written independently of agent/capture/tunnel.py (which parses them): the
pcaps made with these are also checked with tshark.  Every builder takes the
inner packet (an IP packet, or an Ethernet frame for the Ethernet-carrying
tunnels) and returns it wrapped; `HEADER_BYTES` says how much to strip on the
way out.
"""

from __future__ import annotations

import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_TEB = 0x6558
ETH_P_ERSPAN2 = 0x88BE
ETH_P_ERSPAN3 = 0x22EB
ETH_P_PPP_SES = 0x8864
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_UDP = 17
IPPROTO_GRE = 47
GENEVE_PORT = 6081
VXLAN_PORT = 4789
# Ethernet addresses of the frames the Ethernet-carrying tunnels wrap the tun's IP packets in.
INNER_MAC_A = bytes.fromhex("02000000a001")
INNER_MAC_B = bytes.fromhex("02000000b001")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_version(packet: bytes) -> int:
    return packet[0] >> 4


def ethertype_of(packet: bytes) -> int:
    return ETH_P_IP if ip_version(packet) == 4 else ETH_P_IPV6


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit, src, dst) + payload


def ip(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0) -> bytes:
    """IPv4 or IPv6 by the length of the addresses."""
    return ipv4(src, dst, proto, payload, ident) if len(src) == 4 else ipv6(src, dst, proto, payload)


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum (mandatory over IPv6)."""
    length = 8 + len(payload)
    if len(src) == 4:
        pseudo = struct.pack("!4s4sBBH", src, dst, 0, IPPROTO_UDP, length)
    else:
        pseudo = struct.pack("!16s16sIxxxB", src, dst, length, IPPROTO_UDP)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    value = checksum(pseudo + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, value) + payload


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    if vlan is not None:
        return dst + src + struct.pack("!HHH", 0x8100, vlan, ethertype) + payload
    return dst + src + struct.pack("!H", ethertype) + payload


def in_ethernet(packet: bytes, a_to_b: bool) -> bytes:
    """An IP packet from a tun device as an Ethernet frame between the two inner MACs."""
    dst, src = (INNER_MAC_B, INNER_MAC_A) if a_to_b else (INNER_MAC_A, INNER_MAC_B)
    return ethernet(dst, src, ethertype_of(packet), packet)


def gre(proto: int, payload: bytes, key: int | None = None, seq: int | None = None, csum: bool = False) -> bytes:
    """GRE (RFC 2784, with RFC 2890's key and sequence number)."""
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    fields = b""
    if csum:
        fields += b"\0\0\0\0"  # the checksum is filled in below, over the whole GRE packet
    if key is not None:
        fields += struct.pack("!I", key)
    if seq is not None:
        fields += struct.pack("!I", seq)
    packet = struct.pack("!HH", flags, proto) + fields + payload
    if csum:
        packet = packet[:4] + struct.pack("!H", checksum(packet)) + packet[6:]
    return packet


def gre_header_bytes(key: bool, seq: bool, csum: bool = False) -> int:
    return 4 + 4 * (key + seq + csum)


def erspan2(frame: bytes, session: int, seq: int, vlan: int = 0, index: int = 0) -> bytes:
    """ERSPAN type II: GRE with a sequence number, 8-byte header (version 1), the mirrored frame."""
    header = struct.pack("!HHI", (1 << 12) | vlan, session & 0x3FF, index & 0xFFFFF)
    return gre(ETH_P_ERSPAN2, header + frame, seq=seq)


def erspan1(frame: bytes) -> bytes:
    """ERSPAN type I: GRE protocol 0x88BE without sequence number, and no ERSPAN header."""
    return gre(ETH_P_ERSPAN2, frame)


def erspan3(frame: bytes, session: int, seq: int, timestamp: int = 0) -> bytes:
    """ERSPAN type III: 12-byte header (version 2), without the optional subheader."""
    header = struct.pack("!HHIHH", 2 << 12, session & 0x3FF, timestamp, 0, 0)
    return gre(ETH_P_ERSPAN3, header + frame, seq=seq)


def vxlan(frame: bytes, vni: int) -> bytes:
    """A VXLAN header (RFC 7348, I flag set) and the frame: a UDP payload."""
    return struct.pack("!B3xI", 0x08, vni << 8) + frame


def geneve(payload: bytes, vni: int, proto: int = ETH_P_TEB, options: bytes = b"") -> bytes:
    """A GENEVE header (RFC 8926, version 0) with `options` (a multiple of 4 bytes): a UDP payload."""
    assert len(options) % 4 == 0
    return struct.pack("!BBHI", len(options) // 4, 0, proto, vni << 8) + options + payload


GENEVE_OPTION = struct.pack("!HBB", 0x0102, 0x80, 1) + b"\xde\xad\xbe\xef"  # class, type, length 1 word, data


def pppoe_session(packet: bytes, session: int) -> bytes:
    """A PPPoE session header (RFC 2516) and the PPP protocol of an IP packet: an 0x8864 Ethernet payload."""
    ppp = 0x0021 if ip_version(packet) == 4 else 0x0057
    return struct.pack("!BBHHH", 0x11, 0, session, len(packet) + 2, ppp) + packet


def ipv4_fragments(packet: bytes, size: int) -> list[bytes]:
    """An IPv4 packet cut in fragments of at most `size` payload bytes (a multiple of 8), as a router would."""
    header, payload = packet[:20], packet[20:]
    ident = struct.unpack_from("!H", header, 4)[0] or 0x1234
    src, dst, proto = header[12:16], header[16:20], header[9]
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off:off + size]
        more = 0x2000 if off + size < len(payload) else 0
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, more | (off // 8), 64, proto, 0, src,
                           dst)
        out.append(head[:10] + struct.pack("!H", checksum(head)) + head[12:] + piece)
    return out
