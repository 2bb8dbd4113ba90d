"""The packet record every capture source produces and the transport layer consumes.

The kernel program and the pcap reader both end in this one shape, so all
decoding after capture is shared.  It mirrors `struct pb_record` in
bpf/record.h; `payload` holds the bytes that follow the record header.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from agent.capture.tunnel import TunnelInfo

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58

# Values of Packet.flags, identical to PB_F_* in bpf/record.h.
F_TRUNCATED: Final = 0x0001
F_FRAGMENT: Final = 0x0002
F_MORE_FRAGS: Final = 0x0004
F_LAST_CHUNK: Final = 0x0008
F_L3_DEVICE: Final = 0x0010
F_VLAN: Final = 0x0020
F_TUNNEL: Final = 0x0040

DIR_INGRESS: Final = 0
DIR_EGRESS: Final = 1

# TCP flag bits as they sit in the TCP header's 13th byte.
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10


class LinkInfo(NamedTuple):
    """What the link layer said about a frame (of the innermost packet); only file replay fills it (for flows)."""

    src_mac: bytes
    dst_mac: bytes
    vlans: tuple[int, ...]
    carriers: tuple[Packet, ...] = ()  # the outer layers of a decapsulated packet, outermost first (flows)


# Every attribute of a Packet (its __slots__ when it runs as plain Python; compiled, its fields).
PACKET_FIELDS: Final = (
    "ack",
    "direction",
    "dport",
    "dst",
    "family",
    "flags",
    "flow_hash",
    "frag_id",
    "frag_off",
    "ifindex",
    "l4proto",
    "link",
    "missing",
    "payload",
    "seq",
    "sport",
    "src",
    "tcp_flags",
    "ts_ns",
    "tunnel",
    "vlan",
    "window",
    "wire_len",
)


class Packet:
    """One captured packet (or one chunk of a split super-packet); compiled, a native class built by its
    constructor (never `object.__new__`)."""

    __slots__ = PACKET_FIELDS

    def __init__(
        self,
        ts_ns: int,
        family: int,
        l4proto: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        payload: bytes,
        *,
        seq: int = 0,
        ack: int = 0,
        tcp_flags: int = 0,
        window: int = 0,
        wire_len: int = 0,
        flags: int = F_LAST_CHUNK,
        missing: int = 0,
        frag_id: int = 0,
        frag_off: int = 0,
        ifindex: int = 0,
        direction: int = DIR_INGRESS,
        flow_hash: int = 0,
        vlan: int = 0,
        link: LinkInfo | None = None,
        tunnel: TunnelInfo | None = None,
    ) -> None:
        self.ts_ns = ts_ns
        self.family = family
        self.l4proto = l4proto
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.payload = payload
        self.seq = seq
        self.ack = ack
        self.tcp_flags = tcp_flags
        self.window = window
        self.wire_len = wire_len
        self.flags = flags
        self.missing = missing
        self.frag_id = frag_id
        self.frag_off = frag_off
        self.ifindex = ifindex
        self.direction = direction
        self.flow_hash = flow_hash
        self.vlan = vlan
        self.link = link
        self.tunnel = tunnel  # what carried the packet, when it was decapsulated

    def __copy__(self) -> Packet:
        """copy.copy: compiled, a Packet has no __reduce__ that rebuilds it without its arguments."""
        return Packet(self.ts_ns, self.family, self.l4proto, self.src, self.dst, self.sport, self.dport, self.payload,
                      seq=self.seq, ack=self.ack, tcp_flags=self.tcp_flags, window=self.window,
                      wire_len=self.wire_len, flags=self.flags, missing=self.missing, frag_id=self.frag_id,
                      frag_off=self.frag_off, ifindex=self.ifindex, direction=self.direction,
                      flow_hash=self.flow_hash, vlan=self.vlan, link=self.link, tunnel=self.tunnel)

    def __repr__(self) -> str:
        return (
            f"Packet(ts_ns={self.ts_ns}, proto={self.l4proto}, {self.src.hex()}:{self.sport} -> "
            f"{self.dst.hex()}:{self.dport}, seq={self.seq}, flags=0x{self.tcp_flags:02x}, "
            f"len={len(self.payload)}, missing={self.missing}, pbflags=0x{self.flags:x})"
        )

