"""Sans-IO MongoDB wire protocol parsing: framing, opcodes, OP_COMPRESSED; BSON through pymongo's `bson`.

Framing errors (a length below the 16-byte header or above MongoDB's
48 MB message limit) raise `ParseError`.  A well-framed message whose
content is bad (a truncated document, a section size that does not fit,
an undecodable compressed body) still comes out, with what could be read
and a note, so its reply can pair with it.  Messages above
MAX_DECODE_BYTES are counted past, not buffered: only the header is read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson
import cramjam
import zstandard
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.cursor import Cursor
from agent.protocols.errors import ShortRead
from agent.protocols.stream import Gap, in_sync, lost_sync
from agent.transport.types import Direction

PROTOCOL = "mongodb"

HEADER_SIZE = 16
MAX_MESSAGE_BYTES = 48_000_000  # MongoDB's maxMessageSizeBytes
MAX_DECODE_BYTES = 16 * 1024 * 1024 + 64 * 1024  # a 16 MiB document plus its message overhead
MIN_DOCUMENT_BYTES = 5

OP_REPLY = 1
OP_MSG_LEGACY = 1000
OP_UPDATE = 2001
OP_INSERT = 2002
OP_RESERVED = 2003
OP_QUERY = 2004
OP_GET_MORE = 2005
OP_DELETE = 2006
OP_KILL_CURSORS = 2007
OP_COMPRESSED = 2012
OP_MSG = 2013

OPCODE_NAMES = {
    OP_REPLY: "OP_REPLY", OP_MSG_LEGACY: "OP_MSG", OP_UPDATE: "OP_UPDATE", OP_INSERT: "OP_INSERT",
    OP_RESERVED: "RESERVED", OP_QUERY: "OP_QUERY", OP_GET_MORE: "OP_GET_MORE", OP_DELETE: "OP_DELETE",
    OP_KILL_CURSORS: "OP_KILL_CURSORS", OP_COMPRESSED: "OP_COMPRESSED", OP_MSG: "OP_MSG",
}

MSG_CHECKSUM_PRESENT = 1 << 0
MSG_MORE_TO_COME = 1 << 1

COMPRESSOR_NOOP, COMPRESSOR_SNAPPY, COMPRESSOR_ZLIB, COMPRESSOR_ZSTD = 0, 1, 2, 3

NOTE_TOO_LARGE = "MongoDB message too large to decode"
NOTE_REQUEST_LOSS = "Packet loss while capturing the request"
NOTE_RESPONSE_LOSS = "Packet loss while capturing the response"

CODEC: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                                                   unicode_decode_error_handler="replace")

_HEADER = struct.Struct("<iiii")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")


class BadContent(Exception):
    """The message is framed correctly but its content cannot be read."""


@dataclass(frozen=True, slots=True)
class Section:
    """An OP_MSG kind-1 section: a named sequence of documents (kept raw until rendered)."""

    identifier: str
    documents: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MongoMessage:
    ts_ns: int
    size: int  # messageLength
    request_id: int
    response_to: int
    opcode: int  # the operation (inside OP_COMPRESSED: the original opcode)
    compressed: bool = False
    known: bool = True  # False: an opcode MongoDB does not define (skipped)
    flags: int = 0
    body: dict[str, Any] | None = None  # OP_QUERY query, OP_MSG body, first OP_REPLY document
    return_fields: dict[str, Any] | None = None
    sections: tuple[Section, ...] = ()
    documents: tuple[bytes, ...] = ()  # raw documents: OP_REPLY results, OP_INSERT documents
    full_collection_name: str | None = None
    number_to_skip: int | None = None
    number_to_return: int | None = None
    number_returned: int | None = None
    starting_from: int | None = None
    cursor_id: int | None = None
    cursor_ids: tuple[int, ...] = ()
    selector: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    text: str | None = None  # legacy OP_MSG (1000) message
    notes: tuple[str, ...] = field(default=())

    @property
    def more_to_come(self) -> bool:
        return self.opcode == OP_MSG and bool(self.flags & MSG_MORE_TO_COME)


def decode_document(raw: bytes) -> dict[str, Any]:
    try:
        doc = bson.decode(raw, codec_options=CODEC)
    except (BSONError, ValueError, TypeError, OverflowError, KeyError, IndexError) as exc:
        raise BadContent(f"invalid BSON document: {exc}") from None
    return doc


def _document_length(r: Cursor, what: str) -> int:
    if r.end - r.pos < 4:
        raise BadContent(f"{what}: message ends early")
    (length,) = _I32.unpack_from(r.data, r.pos)
    if length < MIN_DOCUMENT_BYTES:
        raise BadContent(f"{what}: document length {length} is too small")
    if length > r.end - r.pos:
        raise BadContent(f"{what}: document length {length} is out of bounds")
    return int(length)


def skip_document(r: Cursor, what: str) -> None:
    if r.end - r.pos < 4:
        raise BadContent(f"{what}: message ends early")
    (length,) = _I32.unpack_from(r.data, r.pos)
    if length < MIN_DOCUMENT_BYTES or length > r.end - r.pos:
        raise BadContent(f"{what}: document length {length} is out of bounds")
    r.pos += length


def raw_document(r: Cursor, what: str) -> bytes:
    return r.take(_document_length(r, what), what)


def document(r: Cursor, what: str) -> dict[str, Any]:
    return decode_document(raw_document(r, what))


def cstring(r: Cursor, what: str) -> str:
    return r.cstring(what).decode("utf-8", "replace")


def decompress(compressor: int, data: bytes, size: int) -> bytes:
    """An OP_COMPRESSED body, never more than `size` bytes (its declared uncompressed size)."""
    if compressor == COMPRESSOR_NOOP:
        out = data
    elif compressor == COMPRESSOR_ZLIB:
        try:
            d = zlib.decompressobj()
            out = d.decompress(data, size + 1)
        except zlib.error as exc:
            raise BadContent(f"zlib: {exc}") from None
    elif compressor == COMPRESSOR_ZSTD:
        try:
            # A stream read bounded by the declared size: one-shot decompress() trusts the frame's own
            # content size (or takes 0 as "no limit") and allocates it, whatever it claims.
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                out = reader.read(size + 1)
        except zstandard.ZstdError as exc:
            raise BadContent(f"zstd: {exc}") from None
    elif compressor == COMPRESSOR_SNAPPY:
        try:
            if cramjam.snappy.decompress_raw_len(data) != size:
                raise BadContent("snappy: uncompressed size differs from the declared one")
            out = bytes(cramjam.snappy.decompress_raw(data))
        except cramjam.DecompressionError as exc:
            raise BadContent(f"snappy: {exc}") from None
    else:
        raise BadContent(f"unknown compressor id {compressor}")
    if len(out) != size:
        raise BadContent(f"uncompressed {len(out)} bytes, {size} declared")
    return out


def _reply(r: Cursor, want_documents: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"flags": r.i32le("responseFlags"), "cursor_id": r.i64le("cursorID"),
                           "starting_from": r.i32le("startingFrom")}
    number = r.i32le("numberReturned")
    if number < 0 or number * MIN_DOCUMENT_BYTES > r.remaining():
        raise BadContent(f"numberReturned {number} does not fit the message")
    out["number_returned"] = number
    docs = []
    for i in range(number):
        if i and not want_documents:
            skip_document(r, "reply document")
            continue
        raw = raw_document(r, "reply document")
        if i == 0:
            out["body"] = decode_document(raw)
        if want_documents:
            docs.append(raw)
    out["documents"] = tuple(docs)
    return out


def _msg(r: Cursor, want_documents: bool) -> dict[str, Any]:
    flags = r.i32le("flagBits")
    out: dict[str, Any] = {"flags": flags}
    if flags & MSG_CHECKSUM_PRESENT:
        if r.remaining() < 4:
            raise BadContent("checksum missing")
        r.end -= 4
    sections = []
    while r.remaining() > 0:
        kind = r.u8("section kind")
        if kind == 0:
            out["body"] = document(r, "body section")
        elif kind == 1:
            sections.append(_document_sequence(r))
        else:
            raise BadContent(f"unknown section kind {kind}")
    out["sections"] = tuple(sections)
    return out


def _document_sequence(r: Cursor) -> Section:
    start = r.pos
    size = r.i32le("section size")
    if size < 5 or size > r.end - start:
        raise BadContent(f"document sequence size {size} does not fit the message")
    seq = Cursor(r.data, r.pos, start + size, PROTOCOL)
    identifier = cstring(seq, "sequence identifier")
    docs = []
    while seq.remaining() > 0:
        docs.append(raw_document(seq, "sequence document"))
    r.pos = start + size
    return Section(identifier, tuple(docs))


def _query(r: Cursor, want_documents: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"flags": r.i32le("flags"), "full_collection_name": cstring(r, "fullCollectionName"),
                           "number_to_skip": r.i32le("numberToSkip"), "number_to_return": r.i32le("numberToReturn"),
                           "body": document(r, "query")}
    if r.remaining() > 0:
        out["return_fields"] = document(r, "returnFieldsSelector")
    return out


def _get_more(r: Cursor, want_documents: bool) -> dict[str, Any]:
    r.i32le("ZERO")
    return {"full_collection_name": cstring(r, "fullCollectionName"), "number_to_return": r.i32le("numberToReturn"),
            "cursor_id": r.i64le("cursorID")}


def _insert(r: Cursor, want_documents: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"flags": r.i32le("flags"), "full_collection_name": cstring(r, "fullCollectionName")}
    docs = []
    while r.remaining() > 0:
        docs.append(raw_document(r, "insert document"))
    out["documents"] = tuple(docs)
    return out


def _update(r: Cursor, want_documents: bool) -> dict[str, Any]:
    r.i32le("ZERO")
    return {"full_collection_name": cstring(r, "fullCollectionName"), "flags": r.i32le("flags"),
            "selector": document(r, "selector"), "update": document(r, "update")}


def _delete(r: Cursor, want_documents: bool) -> dict[str, Any]:
    r.i32le("ZERO")
    return {"full_collection_name": cstring(r, "fullCollectionName"), "flags": r.i32le("flags"),
            "selector": document(r, "selector")}


def _kill_cursors(r: Cursor, want_documents: bool) -> dict[str, Any]:
    r.i32le("ZERO")
    count = r.i32le("numberOfCursorIDs")
    if count < 0 or count * 8 > r.remaining():
        raise BadContent(f"numberOfCursorIDs {count} does not fit the message")
    return {"cursor_ids": tuple(r.i64le("cursorID") for _ in range(count))}


def _legacy_msg(r: Cursor, want_documents: bool) -> dict[str, Any]:
    return {"text": cstring(r, "message")}


# How each opcode's body is read (the fields of MongoMessage it fills).
_BODIES: dict[int, Callable[[Cursor, bool], dict[str, Any]]] = {
    OP_REPLY: _reply,
    OP_MSG: _msg,
    OP_QUERY: _query,
    OP_GET_MORE: _get_more,
    OP_INSERT: _insert,
    OP_UPDATE: _update,
    OP_DELETE: _delete,
    OP_KILL_CURSORS: _kill_cursors,
    OP_MSG_LEGACY: _legacy_msg,
}


def decode_body(opcode: int, body: bytes, want_documents: bool, start: int = 0) -> dict[str, Any]:
    """The fields of one message body (at `start`, after the header); BadContent or ShortRead when it cannot
    be read."""
    read = _BODIES.get(opcode)
    if read is None:
        return {}
    return read(Cursor(body, start, -1, PROTOCOL), want_documents)


def opcode_name(opcode: int, compressed: bool = False) -> str:
    """Packetbeat's name of an opcode; `(value=N)` for one MongoDB does not define."""
    name = OPCODE_NAMES.get(opcode) if is_known(opcode) else None
    if name is None:
        return f"(value={opcode})"
    return f"{name} (OP_COMPRESSED)" if compressed else name


def is_known(opcode: int) -> bool:
    return opcode in OPCODE_NAMES and opcode != OP_RESERVED


class MongoParser:
    """Incremental framing for one direction; complete messages are decoded with `decode_body`."""

    def __init__(self, direction: Direction, *, want_documents: bool = False) -> None:
        self.direction = direction
        self.want_documents = want_documents
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_DECODE_BYTES)
        self._skip_left = 0  # bytes of a message being counted past
        self._skipped: MongoMessage | None = None  # what will be emitted once the skip is over
        self.strict = False  # after a resync: an unknown opcode is a framing error, not a message

    @property
    def buffered(self) -> int:
        return self.buf.buffered

    @property
    def idle(self) -> bool:
        return not self.buf.unread and not self.buf.waiting and not self._skip_left

    def reset(self) -> None:
        self.buf.clear()
        self._skip_left = 0
        self._skipped = None
        self.strict = True

    def feed(self, data: bytes, ts_ns: int) -> list[MongoMessage]:
        out: list[MongoMessage] = []
        rb = self.buf
        if self._skip_left:
            data, self._skip_left = rb.skip_front(data, self._skip_left)
            if self._skip_left:
                return out
        if self._skipped is not None:
            out.append(self._skipped)
            self._skipped = None
        if not data or not rb.feed(data, ts_ns):
            return out
        buf = rb.data
        while len(buf) - rb.pos >= HEADER_SIZE and self._message(buf, out):
            pass
        return out

    def _message(self, buf: bytes | bytearray, out: list[MongoMessage]) -> bool:
        """The message at the read position, if whole (or counted past); False when more bytes are needed."""
        rb = self.buf
        pos = rb.pos
        length, request_id, response_to, opcode = _HEADER.unpack_from(buf, pos)
        if length < HEADER_SIZE or length > MAX_MESSAGE_BYTES:
            raise rb.error(f"message length {length} out of range", pos)
        known = is_known(opcode)
        if not known and self.strict:
            raise rb.error(f"unknown opcode {opcode} while resynchronising", pos)
        available = len(buf) - pos
        if length > MAX_DECODE_BYTES or not known:
            notes = (NOTE_TOO_LARGE,) if known else ()
            msg = MongoMessage(rb.ts_at(pos), length, request_id, response_to, opcode, known=known, notes=notes)
            if available >= length:
                out.append(msg)
                rb.pos = pos + length
                return True
            self._skip_left = length - available
            self._skipped = msg
            rb.skip(available)
            return False
        if available < length:
            rb.wait_for(length)
            return False
        out.append(self._decode(bytes(buf[pos:pos + length]), rb.ts_at(pos), length, request_id, response_to,
                                opcode))
        self.strict = False
        rb.pos = pos + length
        return True

    def gap(self, nbytes: int, ts_ns: int) -> Gap[MongoMessage]:
        """Count past a hole when the current message's length covers it (the message is then noted)."""
        rb = self.buf
        rb.release()
        if self._skip_left:
            if nbytes > self._skip_left:
                return lost_sync()
            self._skip_left -= nbytes
            rb.skip_unbuffered(nbytes)
            self._mark_lossy()
            return in_sync(*self._skip_done())
        if rb.unread < HEADER_SIZE:
            return lost_sync()
        pos = rb.pos
        length, request_id, response_to, opcode = _HEADER.unpack_from(rb.data, pos)
        left = length - rb.unread
        if nbytes > left:
            return lost_sync()
        self._skipped = MongoMessage(rb.ts_at(pos), length, request_id, response_to, opcode,
                                     known=is_known(opcode))
        self._mark_lossy()
        self._skip_left = left - nbytes
        rb.skip(rb.unread)
        rb.skip_unbuffered(nbytes)
        return in_sync(*self._skip_done())

    def _skip_done(self) -> list[MongoMessage]:
        """The message counted past, once the skip is over."""
        skipped = self._skipped
        if self._skip_left or skipped is None:
            return []
        self._skipped = None
        return [skipped]

    def _mark_lossy(self) -> None:
        msg = self._skipped
        if msg is None:
            return
        note = NOTE_REQUEST_LOSS if self.direction is Direction.TO_SERVER else NOTE_RESPONSE_LOSS
        if note not in msg.notes:
            self._skipped = MongoMessage(msg.ts_ns, msg.size, msg.request_id, msg.response_to, msg.opcode,
                                         known=msg.known, notes=(*msg.notes, note))

    def _decode(self, view: bytes, ts_ns: int, length: int, request_id: int, response_to: int,
                opcode: int) -> MongoMessage:
        body = view
        start = HEADER_SIZE
        compressed = False
        try:
            if opcode == OP_COMPRESSED:
                r = Cursor(view, HEADER_SIZE, -1, PROTOCOL)
                original = r.i32le("originalOpcode")
                size = r.i32le("uncompressedSize")
                compressor = r.u8("compressorId")
                compressed = True
                if not is_known(original) or original == OP_COMPRESSED:
                    raise BadContent(f"compressed message with opcode {original}")
                opcode = original
                if size < 0 or size > MAX_DECODE_BYTES:
                    raise BadContent(f"uncompressed size {size} out of range")
                body = decompress(compressor, r.rest(), size)
                start = 0
            fields = decode_body(opcode, body, self.want_documents, start)
        except (BadContent, ShortRead) as exc:
            reason = exc.reason if isinstance(exc, ShortRead) else str(exc)
            return MongoMessage(ts_ns, length, request_id, response_to, opcode, compressed=compressed,
                                notes=(f"MongoDB message could not be decoded: {reason}",))
        return MongoMessage(ts_ns, length, request_id, response_to, opcode, compressed=compressed, **fields)
