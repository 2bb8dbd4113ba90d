"""Synthetic pcaps for output tests: N ICMP echo request/reply pairs = N pktbeat events."""

from __future__ import annotations

import struct
from pathlib import Path

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet, microseconds
_ETH_IPV4 = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ip(src: bytes, dst: bytes, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, 1, 0, src, dst)
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + payload


def _icmp(kind: int, ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"pktbeat-output-test"
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def icmp_pairs(path: Path, count: int, *, start_s: int = 1_700_000_000) -> Path:
    """`count` echo request/reply pairs between 10.1.x.y hosts, 1 ms apart; each is one event."""
    client, server = bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2])
    out = bytearray(_PCAP_HEADER)
    for i in range(count):
        ident, seq = (i >> 16) & 0xFFFF, i & 0xFFFF
        usec = i * 1000
        for kind, src, dst, delta in ((8, client, server, 0), (0, server, client, 200)):
            frame = _ETH_IPV4 + _ip(src, dst, _icmp(kind, ident, seq), i)
            ts = usec + delta
            out += struct.pack("<IIII", start_s + ts // 1_000_000, ts % 1_000_000, len(frame), len(frame))
            out += frame
    path.write_bytes(bytes(out))
    return path
