"""CQL native protocol frames as bytes, for the cassandra tests."""

from __future__ import annotations

import struct

ERROR, STARTUP, READY, AUTHENTICATE, OPTIONS, SUPPORTED, QUERY, RESULT = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08
PREPARE, EXECUTE, REGISTER, EVENT, BATCH, AUTH_CHALLENGE, AUTH_RESPONSE, AUTH_SUCCESS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D,
                                                                                          0x0E, 0x0F, 0x10)


def frame(op: int, body: bytes = b"", *, stream: int = 0, flags: int = 0, version: int = 4,
          response: bool = False) -> bytes:
    first = version | (0x80 if response else 0)
    if version >= 3:
        head = struct.pack(">BBhB", first, flags, stream, op)
    else:
        head = struct.pack(">BBbB", first, flags, stream, op)
    return head + struct.pack(">I", len(body)) + body


def request(op: int, body: bytes = b"", *, stream: int = 0, flags: int = 0, version: int = 4) -> bytes:
    return frame(op, body, stream=stream, flags=flags, version=version, response=False)


def response(op: int, body: bytes = b"", *, stream: int = 0, flags: int = 0, version: int = 4) -> bytes:
    return frame(op, body, stream=stream, flags=flags, version=version, response=True)


def string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def long_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">i", len(raw)) + raw


def string_list(items: list[str]) -> bytes:
    return struct.pack(">H", len(items)) + b"".join(string(i) for i in items)


def i32(value: int) -> bytes:
    return struct.pack(">i", value)


def short(value: int) -> bytes:
    return struct.pack(">H", value)


def query(text: str, consistency: int = 1) -> bytes:
    return long_string(text) + short(consistency) + b"\x00"


def rows_result(keyspace: str, table: str, columns: list[tuple[str, int]], rows: int) -> bytes:
    """A ROWS result with a global table spec, column specs and `rows` rows of empty cells."""
    spec = b"".join(string(name) + short(kind) for name, kind in columns)
    cells = (i32(-1) * len(columns)) * rows
    return i32(2) + i32(1) + i32(len(columns)) + string(keyspace) + string(table) + spec + i32(rows) + cells
