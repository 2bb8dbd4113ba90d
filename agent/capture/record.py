"""Decoding of `struct pb_record` (bpf/record.h) into Packet objects, and the layouts of the shared maps.

This is the live hot path: one `struct.unpack_from` per record, no dpkt.
tests/capture/test_record_layout.py compiles bpf/record.h and checks every
format here against the C offsets, so the two cannot drift apart.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Final

import agent
from agent.capture.packet import F_TUNNEL, Packet
from agent.capture.tunnel import MAX_TUNNEL_PORTS, TunnelInfo, kinds_of, pack_kinds

RECORD_VERSION: Final = 3

# Field order and widths of struct pb_record, little-endian as the kernel writes it.
RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts_ns", "Q"),
    ("ifindex", "I"),
    ("wire_len", "I"),
    ("seq", "I"),
    ("ack", "I"),
    ("frag_id", "I"),
    ("missing", "I"),
    ("flow_hash", "I"),
    ("sport", "H"),
    ("dport", "H"),
    ("window", "H"),
    ("payload_len", "H"),
    ("payload_off", "H"),
    ("frag_off", "H"),
    ("flags", "H"),
    ("vlan", "H"),
    ("direction", "B"),
    ("family", "B"),
    ("l4proto", "B"),
    ("tcp_flags", "B"),
    ("saddr", "16s"),
    ("daddr", "16s"),
    ("tunnel_id", "I"),
    ("tunnel_kinds", "H"),
    ("tunnel_depth", "B"),
    ("outer_family", "B"),
    ("outer_saddr", "16s"),
    ("outer_daddr", "16s"),
)
RECORD_FORMAT: Final = "<" + "".join(code for _, code in RECORD_FIELDS)
RECORD: Final = struct.Struct(RECORD_FORMAT)
RECORD_SIZE: Final = RECORD.size

# PB_CHUNK of the default build: the payload bytes one record can carry.
DEFAULT_CHUNK: Final = 65535
MAX_SNAPLEN: Final = 65535

# Names of the per-CPU counters, in the order of enum pb_counter.
COUNTER_NAMES: tuple[str, ...] = (
    "seen",
    "not_ip",
    "malformed",
    "other_l4",
    "unmatched",
    "no_payload",
    "sent",
    "ring_full",
    "load_failed",
    "emit_failed",
    "matched",
    "emitted",
    "truncated",
    "fragment",
    "wakeups",
    "flow_new",
    "flow_failed",
    "bytes",
    "frag_no_ports",
    "skbs",
    "gso",
    "decapsulated",
    "tunnel_too_deep",
    "tunnel_not_followed",
)
# Every run of the program ("skbs") ends in exactly one of these (record.h: [outcome]); "seen" counts
# wire packets (a GSO/GRO super-packet as its segments).
OUTCOME_COUNTERS: tuple[str, ...] = (
    "not_ip", "malformed", "other_l4", "unmatched", "no_payload", "sent", "ring_full", "load_failed", "emit_failed",
)
# The outcomes that lose a packet user space should have had.
DROP_COUNTERS: tuple[str, ...] = ("ring_full", "load_failed", "emit_failed")

# struct pb_counters: one u64 per counter.
COUNTERS: Final = struct.Struct("<" + "Q" * len(COUNTER_NAMES))

# struct pb_iface {u32 slot; u16 link_len; u16 flags}
IFACE_FIELDS: tuple[tuple[str, str], ...] = (("slot", "I"), ("link_len", "H"), ("flags", "H"))
IFACE: Final = struct.Struct("<" + "".join(c for _, c in IFACE_FIELDS))

# struct pb_settings
SETTINGS_FIELDS: tuple[tuple[str, str], ...] = (
    ("snaplen", "I"), ("wake_every", "I"), ("icmp", "B"), ("flows", "B"), ("decap", "B"), ("pad", "5s"),
    ("vxlan_ports", f"{MAX_TUNNEL_PORTS}H"), ("geneve_ports", f"{MAX_TUNNEL_PORTS}H"),
)
SETTINGS: Final = struct.Struct("<" + "".join(c for _, c in SETTINGS_FIELDS))

# struct pb_port_key {u8 l4proto; u8 pad; u16 port}
PORT_KEY_FIELDS: tuple[tuple[str, str], ...] = (("l4proto", "B"), ("pad", "B"), ("port", "H"))
PORT_KEY: Final = struct.Struct("<" + "".join(c for _, c in PORT_KEY_FIELDS))

# struct pb_flow_key
FLOW_KEY_FIELDS: tuple[tuple[str, str], ...] = (
    ("family", "B"),
    ("l4proto", "B"),
    ("port_lo", "H"),
    ("port_hi", "H"),
    ("icmp_id", "H"),
    ("vlan_outer", "H"),
    ("vlan_inner", "H"),
    ("zone", "I"),
    ("addr_lo", "16s"),
    ("addr_hi", "16s"),
)
FLOW_KEY: Final = struct.Struct("<" + "".join(c for _, c in FLOW_KEY_FIELDS))

# struct pb_flow (mac[2][6] is read as two 6-byte strings)
FLOW_VALUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("first_ns", "Q"),
    ("last_ns", "Q"),
    ("packets", "2Q"),
    ("bytes", "2Q"),
    ("tcp_flags", "I"),
    ("first_side", "B"),
    ("has_mac", "B"),
    ("icmp_type", "B"),
    ("icmp_code", "B"),
    ("mac", "12s"),
    ("tunnel_id", "I"),
    ("tunnel_kinds", "H"),
    ("tunnel_depth", "B"),
    ("outer_family", "B"),
    ("outer", "32s"),
    ("pad", "4s"),
)
FLOW_VALUE: Final = struct.Struct("<" + "".join(c for _, c in FLOW_VALUE_FIELDS))

# Beside the `agent` package: found from the package, not from this module, which may be a compiled copy
# that lives elsewhere (agent/accel.py).
BPF_DIR: Final = Path(agent.__file__).resolve().parent.parent / "bpf"
PROGRAM_FILE: Final = BPF_DIR / "pktbeat.bpf.c"
HEADER_FILE: Final = BPF_DIR / "record.h"


Buffer = bytes | bytearray | memoryview | mmap.mmap


class RecordError(ValueError):
    """A ring-buffer record that does not fit the layout (a bug, or a mismatched program)."""


def checked_addresses(kind: str, marker: int, expected: int, family: int, laddr: bytes, raddr: bytes,
                      error: type[ValueError]) -> tuple[bytes, bytes]:
    """The two 16-byte address fields of a bit-63 record (socket or plaintext), cut to the family's size.

    Raises `error` when the record's marker is not the one this build expects, or the family is neither 4 nor 6.
    """
    if marker != expected:
        raise error(f"{kind} record marker {marker:#x}, expected {expected:#x} (version mismatch)")
    if family == 4:
        return laddr[:4], raddr[:4]
    if family != 6:
        raise error(f"{kind} record with address family {family}")
    return laddr, raddr


# The record splits in the fields every packet has and the tunnel fields, read only when PB_F_TUNNEL says so.
_HEAD_FIELDS: Final = 22
_head: Final = struct.Struct("<" + "".join(code for _, code in RECORD_FIELDS[:_HEAD_FIELDS]))
_tail: Final = struct.Struct("<" + "".join(code for _, code in RECORD_FIELDS[_HEAD_FIELDS:]))
_unpack: Final = _head.unpack_from
_unpack_tunnel: Final = _tail.unpack_from
_HEAD_SIZE: Final = _head.size


def decode_record(buf: Buffer, offset: int = 0, length: int | None = None, ts_offset: int = 0) -> Packet:
    """Turn one record at `offset` of `buf` into a Packet.

    `length` is the record's size as the ring buffer reports it; the payload
    must fit inside it.  `ts_offset` turns the kernel's boot-time clock into
    wall-clock ns.  `Packet.seq` of a TCP chunk already includes its offset;
    the offset itself is returned by `chunk_offset` for the non-TCP joiner.

    Compiled with Packet (both native), the fields are typed locals and the
    Packet is built by a direct constructor call: the path every record takes
    (tests/capture/test_record_layout.py checks that every field is set).
    """
    ts_ns: int
    ifindex: int
    wire_len: int
    seq: int
    ack: int
    frag_id: int
    missing: int
    flow_hash: int
    sport: int
    dport: int
    window: int
    payload_len: int
    frag_off: int
    flags: int
    vlan: int
    direction: int
    family: int
    l4proto: int
    tcp_flags: int
    saddr: bytes
    daddr: bytes
    (ts_ns, ifindex, wire_len, seq, ack, frag_id, missing, flow_hash, sport, dport, window,
     payload_len, _payload_off, frag_off, flags, vlan, direction, family, l4proto, tcp_flags,
     saddr, daddr) = _unpack(buf, offset)
    start = offset + RECORD_SIZE
    end = start + payload_len
    limit = len(buf) if length is None else offset + length
    if end > limit:
        raise RecordError(f"record payload of {payload_len} bytes overruns its {limit - offset}-byte record")
    if family == 4:
        saddr = saddr[:4]
        daddr = daddr[:4]
    elif family != 6:
        raise RecordError(f"record with address family {family}")
    tunnel = _tunnel(buf, offset + _HEAD_SIZE) if flags & F_TUNNEL else None
    return Packet(ts_ns + ts_offset, family, l4proto, saddr, daddr, sport, dport, bytes(buf[start:end]),
                  seq=seq, ack=ack, tcp_flags=tcp_flags, window=window, wire_len=wire_len, flags=flags,
                  missing=missing, frag_id=frag_id, frag_off=frag_off, ifindex=ifindex, direction=direction,
                  flow_hash=flow_hash, vlan=vlan, link=None, tunnel=tunnel)


def _tunnel(buf: Buffer, at: int) -> TunnelInfo:
    tunnel_id, kinds, depth, outer_family, outer_src, outer_dst = _unpack_tunnel(buf, at)
    if outer_family == 4:
        outer_src, outer_dst = outer_src[:4], outer_dst[:4]
    elif outer_family != 6:
        outer_src = outer_dst = b""
    return TunnelInfo(kinds_of(kinds, depth), tunnel_id, outer_src, outer_dst)


# Offset of payload_off inside the record (for the chunk joiner, without a second full unpack).
_PAYLOAD_OFF_AT: Final = struct.calcsize("<" + "".join(code for name, code in RECORD_FIELDS[:12]))
_payload_off: Final = struct.Struct("<H").unpack_from


def chunk_offset(buf: Buffer, offset: int = 0) -> int:
    """`payload_off` of the record at `offset`: where its payload sits in the packet's L4 payload."""
    return int(_payload_off(buf, offset + _PAYLOAD_OFF_AT)[0])


def encode_record(pkt: Packet, payload_off: int = 0) -> bytes:
    """The record the kernel would write for `pkt` (used by tests and by --dump round trips)."""
    saddr = pkt.src.ljust(16, b"\0")
    daddr = pkt.dst.ljust(16, b"\0")
    tunnel = pkt.tunnel
    flags = pkt.flags | F_TUNNEL if tunnel is not None else pkt.flags & ~F_TUNNEL
    if tunnel is None:
        tail = (0, 0, 0, 0, b"", b"")
    else:
        outer_family = {4: 4, 16: 6}.get(len(tunnel.outer_src), 0)
        tail = (tunnel.id, pack_kinds(tunnel.kinds), tunnel.depth, outer_family, tunnel.outer_src.ljust(16, b"\0"),
                tunnel.outer_dst.ljust(16, b"\0"))
    return RECORD.pack(
        pkt.ts_ns, pkt.ifindex, pkt.wire_len, pkt.seq, pkt.ack, pkt.frag_id, pkt.missing, pkt.flow_hash,
        pkt.sport, pkt.dport, pkt.window, len(pkt.payload), payload_off, pkt.frag_off, flags, pkt.vlan,
        pkt.direction, pkt.family, pkt.l4proto, pkt.tcp_flags, saddr, daddr, *tail,
    ) + pkt.payload
