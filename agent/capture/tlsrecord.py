"""Decoding of the plaintext records of bpf/tls.h (TLS plaintext from OpenSSL uprobes).

A plaintext record arrives in a worker's ring among packet and socket
records; like a socket record its first u64 has bit 63 set, and its low 32
bits are "TLSP" (`is_plaintext_record`).  tests/capture/test_tls_layout.py
checks every format here against the C header by compiling it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from agent.capture.record import BPF_DIR, Buffer, checked_addresses

TLS_HEADER_FILE = BPF_DIR / "tls.h"
TLS_PROGRAM_FILE = BPF_DIR / "tls.bpf.c"

TLS_VERSION = 1
TLS_MAGIC = 0x544C5350  # "TLSP"
TLS_MARKER = (1 << 63) | (TLS_VERSION << 32) | TLS_MAGIC
CHUNK = 16384  # PB_TLS_CHUNK
MAX_CHUNKS = 16  # PB_TLS_MAX_CHUNKS

SENT, RECEIVED = 0, 1  # from the local socket's point of view
ROLE_UNKNOWN, ROLE_CLIENT, ROLE_SERVER = 0, 1, 2
F_LAST_CHUNK, F_CLOSE = 0x01, 0x02

TLS_RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("marker", "Q"),
    ("ts_ns", "Q"),
    ("ssl", "Q"),
    ("offset", "Q"),
    ("tgid", "I"),
    ("netns", "I"),
    ("len", "I"),
    ("missing", "I"),
    ("lport", "H"),
    ("rport", "H"),
    ("family", "B"),
    ("direction", "B"),
    ("role", "B"),
    ("flags", "B"),
    ("laddr", "16s"),
    ("raddr", "16s"),
)
_RECORD = struct.Struct("<" + "".join(code for _, code in TLS_RECORD_FIELDS))
TLS_RECORD_SIZE = _RECORD.size

TLS_EXEC = struct.Struct("<II")

# Names of enum pb_tls_counter, in order.
TLS_COUNTER_NAMES: tuple[str, ...] = (
    "calls",
    "failed",
    "no_socket",
    "other_port",
    "other_side",
    "records",
    "bytes",
    "ring_full",
    "read_failed",
    "truncated",
    "calls_lost",
    "conns_failed",
    "closed",
    "execs",
    "execs_lost",
)
TLS_COUNTERS = struct.Struct("<" + "Q" * len(TLS_COUNTER_NAMES))

_magic = struct.Struct("<I")


class TlsRecordError(ValueError):
    """A plaintext record that does not fit the layout."""


class PlaintextRecord(NamedTuple):
    """Plaintext one SSL call read or wrote (or a piece of it), as the local socket sees its connection."""

    ts_ns: int  # boot-time ns
    tgid: int
    ssl: int  # the SSL object's address: with tgid, which library stream this is
    netns: int
    family: int
    laddr: bytes  # 4 or 16 bytes
    lport: int
    raddr: bytes
    rport: int
    direction: int  # SENT or RECEIVED
    role: int  # ROLE_CLIENT or ROLE_SERVER: which end the local process is
    offset: int  # of data[0] in this direction's plaintext
    data: bytes
    missing: int  # bytes of the call after `data` that no record carries
    flags: int  # F_*

    @property
    def closed(self) -> bool:
        return bool(self.flags & F_CLOSE)


def is_plaintext_record(buf: Buffer, offset: int) -> bool:
    """True when the bit-63 record at `offset` is a plaintext record, not a socket record."""
    return bool(_magic.unpack_from(buf, offset)[0] == TLS_MAGIC)


def decode_plaintext_record(buf: Buffer, offset: int = 0, length: int | None = None, ts_offset: int = 0
                            ) -> PlaintextRecord:
    """The record at `offset`; `ts_offset` turns its boot-time stamp into wall-clock time."""
    end = len(buf) if length is None else offset + length
    if end - offset < TLS_RECORD_SIZE:
        raise TlsRecordError(f"plaintext record of {end - offset} bytes, expected at least {TLS_RECORD_SIZE}")
    (marker, ts_ns, ssl, stream_offset, tgid, netns, size, missing, lport, rport, family, direction, role, flags,
     laddr, raddr) = _RECORD.unpack_from(buf, offset)
    laddr, raddr = checked_addresses("plaintext", marker, TLS_MARKER, family, laddr, raddr, TlsRecordError)
    if direction not in (SENT, RECEIVED) or role not in (ROLE_CLIENT, ROLE_SERVER):
        raise TlsRecordError(f"plaintext record with direction {direction}, role {role}")
    start = offset + TLS_RECORD_SIZE
    if size > CHUNK or start + size > end:
        raise TlsRecordError(f"plaintext record announces {size} bytes, carries {end - start}")
    data = bytes(buf[start:start + size])
    return PlaintextRecord(ts_ns + ts_offset, tgid, ssl, netns, family, laddr, lport, raddr, rport, direction, role,
                           stream_offset, data, missing, flags)


def encode_plaintext_record(rec: PlaintextRecord) -> bytes:
    """The record the kernel would write (tests)."""
    return _RECORD.pack(TLS_MARKER, rec.ts_ns, rec.ssl, rec.offset, rec.tgid, rec.netns, len(rec.data), rec.missing,
                        rec.lport, rec.rport, rec.family, rec.direction, rec.role, rec.flags,
                        rec.laddr.ljust(16, b"\0"), rec.raddr.ljust(16, b"\0")) + rec.data
