"""Builders for memcache wire messages used by the tests (binary headers, UDP frames)."""

from __future__ import annotations

import struct

GET, SET, ADD, DELETE, INCR, DECR, QUIT, NOOP, VERSION, GETK, GETKQ, STAT = (
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0B, 0x0C, 0x0D, 0x10)
GETQ, SETQ, DELETEQ, INCRQ, DECRQ, QUITQ = 0x09, 0x11, 0x14, 0x15, 0x16, 0x17


def binary(opcode: int, *, request: bool = True, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
           status: int = 0, opaque: int = 0, cas: int = 0, vbucket: int = 0) -> bytes:
    total = len(extras) + len(key) + len(value)
    header = struct.pack(">BBHBBHIIQ", 0x80 if request else 0x81, opcode, len(key), len(extras), 0,
                         vbucket if request else status, total, opaque, cas)
    return header + extras + key + value


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def udp_frame(request_id: int, seq: int, count: int, payload: bytes) -> bytes:
    return struct.pack(">HHHH", request_id, seq, count, 0) + payload
