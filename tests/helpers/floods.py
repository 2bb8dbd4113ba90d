"""Hostile TCP traffic written as pcap files: SYN floods, slow unfinished headers, one huge CQL query.

Used by the memory fault tests (scaled down) and by bench/tcp_flood_bench.py
(at the sizes of issue 15).  Frames are Ethernet/IPv4/TCP with zero checksums
(nothing in pktbeat checks them); timestamps advance by a fixed step so a
whole file stays inside one transaction_timeout unless told otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

SYN, ACK, PSH = 0x02, 0x10, 0x08
MSS = 1448
SERVER = bytes([10, 9, 0, 1])
_ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"


class PcapWriter:
    """A classic microsecond pcap, Ethernet link type, written in large blocks."""

    def __init__(self, path: Path, start_us: int = 1_700_000_000_000_000) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close()/__exit__
        self.handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.ts_us = start_us
        self.packets = 0
        self._block: list[bytes] = []

    def tcp(self, src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, flags: int,
            payload: bytes = b"", step_us: int = 5) -> None:
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                          65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), self.packets & 0xFFFF, 0x4000, 64, 6, 0,
                         src, dst)
        frame = _ETH + ip + tcp
        self.ts_us += step_us
        size = len(frame) + len(payload)
        self._block.append(struct.pack("<IIII", self.ts_us // 1_000_000, self.ts_us % 1_000_000, size, size))
        self._block.append(frame)
        if payload:
            self._block.append(payload)
        self.packets += 1
        if len(self._block) > 3000:
            self.flush()

    def flush(self) -> None:
        self.handle.write(b"".join(self._block))
        self._block = []

    def close(self) -> None:
        self.flush()
        self.handle.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_addresses(count: int, first_octet: int = 10) -> Iterator[tuple[bytes, int]]:
    """`count` distinct (address, port) pairs, as a spoofing flooder would use."""
    for i in range(count):
        yield bytes([first_octet, 1 + (i >> 16) % 250, (i >> 8) & 0xFF, 1 + i % 250]), 1024 + i % 60000


def syn_flood(w: PcapWriter, count: int, dport: int = 80, step_us: int = 5) -> None:
    """`count` SYNs from distinct spoofed clients, none ever answered."""
    for i, (src, sport) in enumerate(client_addresses(count, 11)):
        w.tcp(src, sport, SERVER, dport, 1000 + i * 7919, 0, SYN, step_us=step_us)


def slow_headers(w: PcapWriter, connections: int, header_bytes: int, dport: int = 80,
                 step_us: int = 5) -> None:
    """`connections` HTTP requests whose header block never ends, sent round robin, `header_bytes` each.

    Each connection opens with a full handshake, then sends a request line and
    header lines of MSS-sized segments, never the blank line that ends them.
    """
    clients = list(client_addresses(connections, 12))
    seqs = []
    for i, (src, sport) in enumerate(clients):
        cseq, sseq = 5000 + i * 104729, 9000 + i * 7
        w.tcp(src, sport, SERVER, dport, cseq, 0, SYN, step_us=step_us)
        w.tcp(SERVER, dport, src, sport, sseq, cseq + 1, SYN | ACK, step_us=step_us)
        w.tcp(src, sport, SERVER, dport, cseq + 1, sseq + 1, ACK, step_us=step_us)
        seqs.append((cseq + 1, sseq + 1))
    line = b"X-Filler: " + b"a" * (MSS - 12) + b"\r\n"
    first = b"GET / HTTP/1.1\r\nHost: victim\r\n" + line[:MSS - 31]
    sent = 0
    while sent < header_bytes:
        chunk = first if sent == 0 else line
        for i, (src, sport) in enumerate(clients):
            cseq, sseq = seqs[i]
            w.tcp(src, sport, SERVER, dport, cseq, sseq, ACK | PSH, chunk, step_us=step_us)
            seqs[i] = (cseq + len(chunk), sseq)
        sent += len(chunk)


def cql_query_frame(query: bytes, stream: int = 1) -> bytes:
    """A CQL v4 QUERY request (consistency ONE, no flags) carrying `query`."""
    body = struct.pack("!I", len(query)) + query + struct.pack("!HB", 0x0001, 0)
    return struct.pack("!BBhBI", 0x04, 0, stream, 0x07, len(body)) + body


def cql_void_result(stream: int = 1) -> bytes:
    """A CQL v4 RESULT (kind Void) response."""
    body = struct.pack("!i", 1)
    return struct.pack("!BBhBI", 0x84, 0, stream, 0x08, len(body)) + body


def one_exchange(w: PcapWriter, request: bytes, response: bytes, dport: int, client: bytes = bytes([10, 3, 0, 1]),
                 sport: int = 40000) -> None:
    """A handshake, `request` and then `response` in MSS segments, and FIN teardown."""
    cseq, sseq = 100, 900
    w.tcp(client, sport, SERVER, dport, cseq, 0, SYN)
    w.tcp(SERVER, dport, client, sport, sseq, cseq + 1, SYN | ACK)
    cseq += 1
    sseq += 1
    for off in range(0, len(request), MSS):
        part = request[off:off + MSS]
        w.tcp(client, sport, SERVER, dport, cseq, sseq, ACK | PSH, part, step_us=1)
        cseq += len(part)
    for off in range(0, len(response), MSS):
        part = response[off:off + MSS]
        w.tcp(SERVER, dport, client, sport, sseq, cseq, ACK | PSH, part, step_us=1)
        sseq += len(part)
    w.tcp(client, sport, SERVER, dport, cseq, sseq, ACK | 0x01)
    w.tcp(SERVER, dport, client, sport, sseq, cseq + 1, ACK | 0x01)
