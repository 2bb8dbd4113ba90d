"""`--dump FILE`: live-captured packets written as a pcap that `-I FILE` replays identically.

Records carry no link header, so the file is LINKTYPE_RAW (101) with an IPv4
or IPv6 header and a TCP/UDP header rebuilt from the record (ICMP messages
and IP fragments are carried whole).  Bytes cut at snaplen are accounted
for in the IP length and the pcap original length, so replay sees the same
truncation (a TCP gap) as the live path.  Timestamps have nanosecond
precision.

Several worker processes append to one file: the parent writes the file
header, each worker buffers whole pcap records and appends them with one
O_APPEND write, which the kernel never interleaves with another.
"""

from __future__ import annotations

import os
import struct

from agent.capture.packet import (
    F_FRAGMENT,
    F_MORE_FRAGS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Packet,
)

LINKTYPE_RAW = 101
PCAP_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144
FLUSH_BYTES = 256 * 1024

_file_header = struct.Struct("<IHHiIII")
_record_header = struct.Struct("<IIII")
_ipv4 = struct.Struct("!BBHHHBBH4s4s")
_ipv6 = struct.Struct("!IHBB16s16s")
_tcp = struct.Struct("!HHIIHHHH")
_udp = struct.Struct("!HHHH")
_frag6 = struct.Struct("!BBHI")


def file_header() -> bytes:
    return _file_header.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_ip_frame(pkt: Packet) -> tuple[bytes, int]:
    """The packet as raw IP bytes, and its original length (with the bytes snaplen cut)."""
    proto = pkt.l4proto
    fragment = bool(pkt.flags & F_FRAGMENT)
    if fragment or proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) or proto not in (IPPROTO_TCP, IPPROTO_UDP):
        l4 = b""
    elif proto == IPPROTO_TCP:
        l4 = _tcp.pack(pkt.sport, pkt.dport, pkt.seq, pkt.ack, (5 << 12) | pkt.tcp_flags, pkt.window, 0, 0)
    else:
        l4 = _udp.pack(pkt.sport, pkt.dport, min(0xFFFF, 8 + len(pkt.payload) + pkt.missing), 0)
    body = len(l4) + len(pkt.payload) + pkt.missing
    if pkt.family == 4:
        frag = 0
        if fragment:
            frag = (pkt.frag_off // 8) | (0x2000 if pkt.flags & F_MORE_FRAGS else 0)
        total = min(0xFFFF, 20 + body)
        header = _ipv4.pack(0x45, 0, total, pkt.frag_id & 0xFFFF, frag, 64, proto, 0, pkt.src, pkt.dst)
        header = header[:10] + _checksum(header).to_bytes(2, "big") + header[12:]
    elif fragment:
        ext = _frag6.pack(proto, 0, (pkt.frag_off & 0xFFF8) | (1 if pkt.flags & F_MORE_FRAGS else 0),
                          pkt.frag_id)
        header = _ipv6.pack(6 << 28, min(0xFFFF, body + len(ext)), 44, 64, pkt.src, pkt.dst) + ext
    else:
        header = _ipv6.pack(6 << 28, min(0xFFFF, body), proto, 64, pkt.src, pkt.dst)
    frame = header + l4 + pkt.payload
    return frame, len(frame) + pkt.missing


def pcap_record(pkt: Packet) -> bytes:
    frame, orig = raw_ip_frame(pkt)
    sec, nsec = divmod(pkt.ts_ns, 1_000_000_000)
    return _record_header.pack(sec, nsec, len(frame), orig) + frame


def create(path: str) -> None:
    """Create (truncate) the dump file with its pcap header; raises OSError."""
    with open(path, "wb") as f:
        f.write(file_header())


class DumpWriter:
    """One process's appender: buffers whole records, appends them with single writes."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._buf: list[bytes] = []
        self._size = 0
        self.packets = 0
        self.errors = 0

    def write(self, pkt: Packet) -> None:
        rec = pcap_record(pkt)
        self._buf.append(rec)
        self._size += len(rec)
        self.packets += 1
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            os.write(self.fd, data)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        self.flush()
        os.close(self.fd)
