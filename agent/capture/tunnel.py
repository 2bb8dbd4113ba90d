"""What carried a decapsulated packet: the tunnel facts live capture and replay both attach to a Packet.

The kernel program (bpf/pktbeat.bpf.c) and the replay decoder (decode.py)
look inside the same encapsulations, at most `MAX_ENCAP` nested: GRE (with
or without key, sequence number and checksum; IP or Ethernet inside),
ERSPAN I, II and III, VXLAN and GENEVE on configured UDP ports, IPv4 and
IPv6 inside IPv4 or IPv6, and PPPoE sessions.  The inner packet is then the
packet: its addresses, ports and payload go to the decoders as if it had
been captured on the tunnel's inner interface, and a `TunnelInfo` says what
carried it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

# PB_TUN_* in bpf/record.h, and the names events report (pktbeat.tunnel.type).
KIND_GRE = 1
KIND_ERSPAN1 = 2
KIND_ERSPAN2 = 3
KIND_ERSPAN3 = 4
KIND_VXLAN = 5
KIND_GENEVE = 6
KIND_IPIP = 7
KIND_IP6 = 8
KIND_PPPOE = 9
KIND_NAMES: dict[int, str] = {
    KIND_GRE: "gre",
    KIND_ERSPAN1: "erspan1",
    KIND_ERSPAN2: "erspan2",
    KIND_ERSPAN3: "erspan3",
    KIND_VXLAN: "vxlan",
    KIND_GENEVE: "geneve",
    KIND_IPIP: "ip-in-ip",
    KIND_IP6: "ipv6-in-ip",
    KIND_PPPOE: "pppoe",
}
MAX_ENCAP = 3  # PB_MAX_ENCAP: encapsulations looked inside, nested, PPPoE included
MAX_TUNNEL_PORTS = 8  # PB_MAX_TUNNEL_PORTS: UDP ports per tunnel kind (VXLAN, GENEVE)

# Well-known UDP destination ports (packetbeat.tunnels.* overrides them).
VXLAN_PORTS = (4789, 8472)  # IANA's, and the Linux kernel's default (flannel, older OVS)
GENEVE_PORTS = (6081,)


class TunnelInfo(NamedTuple):
    """The encapsulations around a packet, outermost first, as seen in the packet's own direction."""

    kinds: tuple[str, ...]  # KIND_NAMES values, outermost first
    id: int  # VNI, GRE key, ERSPAN or PPPoE session of the innermost encapsulation having one; 0 when none
    outer_src: bytes  # the outermost IP header that carried a tunnel (b"" when none did: PPPoE)
    outer_dst: bytes

    @property
    def depth(self) -> int:
        return len(self.kinds)

    def reversed(self) -> TunnelInfo:
        """The same tunnel seen from the other end."""
        return TunnelInfo(self.kinds, self.id, self.outer_dst, self.outer_src)

    @property
    def zone(self) -> tuple[tuple[str, ...], int, bytes, bytes]:
        """Equal for both directions of one tunnel: the same inner addresses in two tunnels are two conversations."""
        a, b = self.outer_src, self.outer_dst
        if b < a:
            a, b = b, a
        return self.kinds, self.id, a, b


@lru_cache(maxsize=256)
def kinds_of(code: int, depth: int) -> tuple[str, ...]:
    """The names packed in a record's `tunnel_kinds` (4 bits per layer, outermost in the lowest)."""
    return tuple(KIND_NAMES.get((code >> (4 * i)) & 0xF, "unknown") for i in range(min(depth, 4)))


def pack_kinds(kinds: tuple[str, ...]) -> int:
    """The inverse of `kinds_of` (tests and --dump round trips)."""
    codes = {name: code for code, name in KIND_NAMES.items()}
    value = 0
    for i, name in enumerate(kinds[:4]):
        value |= codes[name] << (4 * i)
    return value


class TunnelSettings(NamedTuple):
    """Which encapsulations replay decapsulates (the kernel gets the same from KernelSettings)."""

    enabled: bool = True
    vxlan_ports: tuple[int, ...] = VXLAN_PORTS
    geneve_ports: tuple[int, ...] = GENEVE_PORTS


# -- header parsing for replay (the kernel program has its own, in C) ---------------------------

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_TEB = 0x6558  # an Ethernet frame follows
ETH_P_ERSPAN2 = 0x88BE
ETH_P_ERSPAN3 = 0x22EB
ETH_P_PPP_SES = 0x8864
_PPP_VERSIONS = {0x0021: 4, 0x0057: 6}
_INNER_TYPES = (ETH_P_IP, ETH_P_IPV6, ETH_P_TEB)


class NotFollowed(Exception):
    """A tunnel header pktbeat does not follow: the packet is handled as the outer packet."""


Inner = tuple[int, int, int, int]  # (kind, id, offset of the inner packet, ETH_P_IP / ETH_P_IPV6 / ETH_P_TEB)


def gre_inner(frame: bytes, l4: int, end: int) -> Inner:
    """GRE (RFC 2784/2890) and the ERSPAN types carried in it."""
    if l4 + 4 > end:
        raise NotFollowed
    flags = int.from_bytes(frame[l4:l4 + 2], "big")
    proto = int.from_bytes(frame[l4 + 2:l4 + 4], "big")
    if flags & 0x4007:  # routing present (RFC 1701), or version 1 (PPTP's enhanced GRE)
        raise NotFollowed
    off = l4 + 4 + (4 if flags & 0x8000 else 0)
    key = 0
    if flags & 0x2000:
        if off + 4 > end:
            raise NotFollowed
        key = int.from_bytes(frame[off:off + 4], "big")
        off += 4
    sequenced = flags & 0x1000
    if sequenced:
        off += 4
    if proto in _INNER_TYPES:
        return KIND_GRE, key, off, proto
    if proto == ETH_P_ERSPAN2 and not sequenced:
        return KIND_ERSPAN1, key, off, ETH_P_TEB
    if proto == ETH_P_ERSPAN2:
        if off + 8 > end or frame[off] >> 4 != 1:
            raise NotFollowed
        return KIND_ERSPAN2, _erspan_session(frame, off), off + 8, ETH_P_TEB
    if proto == ETH_P_ERSPAN3:
        if off + 12 > end or frame[off] >> 4 != 2:
            raise NotFollowed
        return KIND_ERSPAN3, _erspan_session(frame, off), off + 12 + (8 if frame[off + 11] & 1 else 0), ETH_P_TEB
    raise NotFollowed


def _erspan_session(frame: bytes, off: int) -> int:
    return (frame[off + 2] & 0x03) << 8 | frame[off + 3]


def vxlan_inner(frame: bytes, start: int, end: int) -> Inner:
    """A VXLAN header (RFC 7348) at `start`: the I flag must be set; an Ethernet frame follows."""
    if start + 8 > end or not frame[start] & 0x08:
        raise NotFollowed
    return KIND_VXLAN, int.from_bytes(frame[start + 4:start + 7], "big"), start + 8, ETH_P_TEB


def geneve_inner(frame: bytes, start: int, end: int) -> Inner:
    """A GENEVE header (RFC 8926) at `start`, version 0, options skipped; Ethernet or IP follows."""
    if start + 8 > end or frame[start] >> 6:
        raise NotFollowed
    proto = int.from_bytes(frame[start + 2:start + 4], "big")
    if proto not in _INNER_TYPES:
        raise NotFollowed
    vni = int.from_bytes(frame[start + 4:start + 7], "big")
    return KIND_GENEVE, vni, start + 8 + (frame[start] & 0x3F) * 4, proto


def pppoe_inner(frame: bytes, off: int) -> tuple[int, int] | None:
    """(IP version, session id) of a PPPoE session header (RFC 2516) at `off`; None for its control traffic."""
    if len(frame) < off + 8 or frame[off] != 0x11 or frame[off + 1] != 0:
        return None
    version = _PPP_VERSIONS.get(int.from_bytes(frame[off + 6:off + 8], "big"))
    if version is None:
        return None
    return version, int.from_bytes(frame[off + 2:off + 4], "big")
