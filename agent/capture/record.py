"""Decoding of `struct pb_record` (bpf/record.h) into Packet objects.

This is the live hot path: one `struct.unpack_from` per record, no dpkt.
"""

from __future__ import annotations

import struct
from pathlib import Path

from agent.capture.packet import Packet

RECORD_VERSION = 1

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
)
RECORD_FORMAT = "<" + "".join(code for _, code in RECORD_FIELDS)
RECORD = struct.Struct(RECORD_FORMAT)
RECORD_SIZE = RECORD.size

# Names of the per-CPU counters, in the order of enum pb_counter.
COUNTER_NAMES: tuple[str, ...] = (
    "seen",
    "not_ip",
    "malformed",
    "other_l4",
    "flow_updated",
    "flow_full",
    "matched",
    "no_payload",
    "emitted",
    "ring_full",
    "truncated",
    "fragment",
    "skipped_direction",
    "load_failed",
    "wakeups",
)

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"


class RecordError(ValueError):
    """A ring-buffer record that does not fit the layout (a bug, or a mismatched program)."""


_unpack = RECORD.unpack_from


def decode_record(buf: bytes | memoryview, offset: int = 0, length: int | None = None) -> Packet:
    """Turn one record at `offset` of `buf` into a Packet.

    `length` is the record's size as the ring buffer reports it; the payload
    must fit inside it.
    """
    (ts_ns, ifindex, wire_len, seq, ack, frag_id, missing, flow_hash, sport, dport, window,
     payload_len, _payload_off, frag_off, flags, vlan, direction, family, l4proto, tcp_flags,
     saddr, daddr) = _unpack(buf, offset)
    start = offset + RECORD_SIZE
    end = start + payload_len
    limit = len(buf) if length is None else offset + length
    if end > limit:
        raise RecordError(f"record payload of {payload_len} bytes overruns its {limit - offset}-byte record")
    if family == 4:
        src = saddr[:4]
        dst = daddr[:4]
    else:
        src = saddr
        dst = daddr
    return Packet(
        ts_ns, family, l4proto, src, dst, sport, dport, bytes(buf[start:end]),
        seq=seq, ack=ack, tcp_flags=tcp_flags, window=window, wire_len=wire_len, flags=flags,
        missing=missing, frag_id=frag_id, frag_off=frag_off, ifindex=ifindex, direction=direction,
        flow_hash=flow_hash, vlan=vlan,
    )


def encode_record(pkt: Packet, payload_off: int = 0) -> bytes:
    """The record the kernel would write for `pkt` (used by tests and by --dump round trips)."""
    saddr = pkt.src.ljust(16, b"\0")
    daddr = pkt.dst.ljust(16, b"\0")
    return RECORD.pack(
        pkt.ts_ns, pkt.ifindex, pkt.wire_len, pkt.seq, pkt.ack, pkt.frag_id, pkt.missing, pkt.flow_hash,
        pkt.sport, pkt.dport, pkt.window, len(pkt.payload), payload_off, pkt.frag_off, pkt.flags, pkt.vlan,
        pkt.direction, pkt.family, pkt.l4proto, pkt.tcp_flags, saddr, daddr,
    ) + pkt.payload
