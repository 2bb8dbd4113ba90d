"""A pure-Python reader of a BPF ring buffer, mapped into this process.

A worker process inherits the ring's map fd from the parent (which loaded
the program with BCC) and maps it itself, as libbpf does:

- offset 0, one page, read-write: the consumer position (u64), ours to move;
- offset one page, read-only: the producer position page, followed by the
  data area mapped twice in a row, so a record that wraps around the end
  is still contiguous in our mapping.

Each record starts with an 8-byte header: u32 length (bit 31 "busy": still
being written; bit 30 "discard": skip it) and u32 page offset; records are
8-byte aligned.  Reading a record costs one `unpack_from` of the header plus
the record decoder: no ctypes callback per record, which measured faster
than BCC's `ring_buffer_poll`.

Socket records (process attribution, bpf/sockets.h) and TLS plaintext
records (bpf/tls.h) share the rings with packet records; bit 63 of their
first u64 marks them, and the low 32 bits tell the two kinds apart.  `read`
sets socket records aside, undecoded, in `sockets`, for the caller to take
before it handles the packets read with them; plaintext records go to
`plaintext` with their place among the packets (how many packets of the
batch came before), so the caller can keep the ring's order.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final

from agent.capture.packet import Packet
from agent.capture.record import RecordError, decode_record
from agent.capture.tlsrecord import TLS_MAGIC

BUSY_BIT: Final = 1 << 31
DISCARD_BIT: Final = 1 << 30
HEADER_SIZE: Final = 8
SOCKET_FLAG_AT: Final = HEADER_SIZE + 7  # the top byte of a record's first (little-endian) u64

_u32: Final = struct.Struct("<I")


class RingReader:
    """Reads records of one ring buffer; not thread-safe (one reader per ring)."""

    def __init__(self, fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.fd = fd
        self.size = size
        self._mask = size - 1
        self._data_at = page  # the data area starts one page into the producer mapping
        self._consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # The positions as native u64 views: one 8-byte load or store each, as the kernel's are.  struct's
        # "<Q" goes byte by byte, so a read could mix two producer positions and a write be seen half done.
        self._consumer_pos = memoryview(self._consumer)[:8].cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")
        self.records = 0
        self.bytes = 0
        self.discarded = 0
        self.bad_records = 0
        self.sockets: list[bytes] = []  # socket records set aside by `read`; the caller empties it
        self.plaintext: list[tuple[int, bytes]] = []  # (packets before it in the batch, record); likewise

    def fileno(self) -> int:
        """Poll this fd (EPOLLIN) to sleep until the kernel forces a wake-up."""
        return self.fd

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._consumer.close()
        self._producer.close()

    def pending_bytes(self) -> int:
        """Bytes written by the kernel and not consumed yet."""
        return int(self._producer_pos[0] - self._consumer_pos[0])

    def read(self, limit: int, ts_offset: int = 0) -> list[Packet]:
        """Decode up to `limit` records; the space they used is handed back to the kernel."""
        out: list[Packet] = []
        data = self._producer
        mask = self._mask
        base = self._data_at
        # Typed: compiled, the positions and headers are machine integers, not Python objects.
        cons: int = self._consumer_pos[0]
        prod: int = self._producer_pos[0]
        start = cons
        unpack_len = _u32.unpack_from
        sockets = self.sockets
        while cons < prod and len(out) < limit:
            at = base + (cons & mask)
            header: int = unpack_len(data, at)[0]
            if header & BUSY_BIT:
                break  # the kernel is still writing it
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            if header & DISCARD_BIT:
                self.discarded += 1
            elif data[at + SOCKET_FLAG_AT] & 0x80:
                raw = data[at + HEADER_SIZE:at + HEADER_SIZE + length]
                if length >= 4 and unpack_len(data, at + HEADER_SIZE)[0] == TLS_MAGIC:
                    self.plaintext.append((len(out), raw))
                else:
                    sockets.append(raw)
            else:
                try:
                    out.append(decode_record(data, at + HEADER_SIZE, length, ts_offset))
                except (RecordError, struct.error):
                    self.bad_records += 1
            cons += (length + HEADER_SIZE + 7) & ~7
            if cons >= prod:
                prod = self._producer_pos[0]
        if cons != start:
            self._consumer_pos[0] = cons
            self.records += len(out)
            self.bytes += cons - start
        return out

    def raw(self, limit: int) -> list[bytes]:
        """Copy up to `limit` raw records (tests and tools)."""
        out: list[bytes] = []
        data = self._producer
        cons = self._consumer_pos[0]
        prod = self._producer_pos[0]
        while cons < prod and len(out) < limit:
            at = self._data_at + (cons & self._mask)
            header = _u32.unpack_from(data, at)[0]
            if header & BUSY_BIT:
                break
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            if not header & DISCARD_BIT:
                out.append(bytes(data[at + HEADER_SIZE:at + HEADER_SIZE + length]))
            cons += (length + HEADER_SIZE + 7) & ~7
        self._consumer_pos[0] = cons
        return out


def ring_size_bytes(buffer_size_mb: int, minimum_pages: int = 1024) -> int:
    """`buffer_size_mb` rounded up to a power of two, at least `minimum_pages` pages."""
    wanted = max(buffer_size_mb * 1024 * 1024, minimum_pages * mmap.PAGESIZE)
    size = 1
    while size < wanted:
        size <<= 1
    return size


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
