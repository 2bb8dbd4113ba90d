"""Builders for MongoDB wire messages (with pymongo's `bson` for the documents)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import bson
import cramjam
import zstandard

from tests.helpers.replay import CORPUS

GOTESTDATA = CORPUS / "gotestdata"

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS, OP_COMPRESSED, OP_MSG = (
    1, 2001, 2002, 2004, 2005, 2006, 2007, 2012, 2013)


def i32(v: int) -> bytes:
    return struct.pack("<i", v)


def i64(v: int) -> bytes:
    return struct.pack("<q", v)


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def doc(d: dict[str, Any]) -> bytes:
    return bson.encode(d)


def message(opcode: int, body: bytes, request_id: int = 1, response_to: int = 0) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, opcode) + body


def op_msg(body: dict[str, Any], *, request_id: int = 1, response_to: int = 0, flags: int = 0,
           sequences: tuple[tuple[str, list[dict[str, Any]]], ...] = (), checksum: bool = False) -> bytes:
    payload = i32(flags | (1 if checksum else 0)) + b"\x00" + doc(body)
    for identifier, docs in sequences:
        inner = cstr(identifier) + b"".join(doc(d) for d in docs)
        payload += b"\x01" + i32(4 + len(inner)) + inner
    if checksum:
        payload += b"\xde\xad\xbe\xef"  # not verified
    return message(OP_MSG, payload, request_id, response_to)


def op_query(collection: str, query: dict[str, Any], *, skip: int = 0, limit: int = 0, request_id: int = 1,
             fields: dict[str, Any] | None = None) -> bytes:
    body = i32(0) + cstr(collection) + i32(skip) + i32(limit) + doc(query)
    if fields is not None:
        body += doc(fields)
    return message(OP_QUERY, body, request_id)


def op_reply(docs: list[dict[str, Any]], *, response_to: int = 1, request_id: int = 100, cursor_id: int = 0,
             flags: int = 0, starting_from: int = 0) -> bytes:
    body = i32(flags) + i64(cursor_id) + i32(starting_from) + i32(len(docs)) + b"".join(doc(d) for d in docs)
    return message(OP_REPLY, body, request_id, response_to)


def compressed(original: bytes, compressor: int, *, declared: int | None = None) -> bytes:
    """`original` (a whole message) wrapped in OP_COMPRESSED."""
    _length, request_id, response_to, opcode = struct.unpack_from("<iiii", original)
    body = original[16:]
    packed = {0: lambda b: b, 1: lambda b: bytes(cramjam.snappy.compress_raw(b)), 2: zlib.compress,
              3: lambda b: zstandard.ZstdCompressor().compress(b)}[compressor](body)
    size = len(body) if declared is None else declared
    return message(OP_COMPRESSED, i32(opcode) + i32(size) + bytes([compressor]) + packed, request_id, response_to)


def fixture(name: str) -> bytes:
    return (GOTESTDATA / f"mongodb_{name}.bin").read_bytes()
