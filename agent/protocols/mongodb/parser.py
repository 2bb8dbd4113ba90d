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
from dataclasses import dataclass, field
from typing import Any

import bson
import cramjam
import zstandard
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError

from agent.transport.session import ParseError
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


class _Reader:
    """A cursor over one message body; every short read raises BadContent."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def i32(self, what: str) -> int:
        if self.end - self.pos < 4:
            raise BadContent(f"{what}: message ends early")
        (value,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def i64(self, what: str) -> int:
        if self.end - self.pos < 8:
            raise BadContent(f"{what}: message ends early")
        (value,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def byte(self, what: str) -> int:
        if self.pos >= self.end:
            raise BadContent(f"{what}: message ends early")
        value = self.data[self.pos]
        self.pos += 1
        return int(value)

    def cstring(self, what: str) -> str:
        data = bytes(self.data[self.pos:self.end])
        idx = data.find(b"\x00")
        if idx < 0:
            raise BadContent(f"{what}: unterminated string")
        self.pos += idx + 1
        return data[:idx].decode("utf-8", "replace")

    def skip_document(self, what: str) -> None:
        if self.end - self.pos < 4:
            raise BadContent(f"{what}: message ends early")
        (length,) = _I32.unpack_from(self.data, self.pos)
        if length < MIN_DOCUMENT_BYTES or length > self.end - self.pos:
            raise BadContent(f"{what}: document length {length} is out of bounds")
        self.pos += length

    def raw_document(self, what: str) -> bytes:
        if self.end - self.pos < 4:
            raise BadContent(f"{what}: message ends early")
        (length,) = _I32.unpack_from(self.data, self.pos)
        if length < MIN_DOCUMENT_BYTES:
            raise BadContent(f"{what}: document length {length} is too small")
        if length > self.end - self.pos:
            raise BadContent(f"{what}: document length {length} is out of bounds")
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        return raw

    def document(self, what: str) -> dict[str, Any]:
        return decode_document(self.raw_document(what))


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


def decode_body(opcode: int, body: bytes | memoryview, want_documents: bool) -> dict[str, Any]:
    """The fields of one message body (after the header); BadContent when it cannot be read."""
    r = _Reader(body)
    out: dict[str, Any] = {}
    if opcode == OP_REPLY:
        out["flags"] = r.i32("responseFlags")
        out["cursor_id"] = r.i64("cursorID")
        out["starting_from"] = r.i32("startingFrom")
        number = r.i32("numberReturned")
        if number < 0 or number * MIN_DOCUMENT_BYTES > r.remaining:
            raise BadContent(f"numberReturned {number} does not fit the message")
        out["number_returned"] = number
        docs = []
        for i in range(number):
            if i and not want_documents:
                r.skip_document("reply document")
                continue
            raw = r.raw_document("reply document")
            if i == 0:
                out["body"] = decode_document(raw)
            if want_documents:
                docs.append(raw)
        out["documents"] = tuple(docs)
    elif opcode == OP_MSG:
        flags = r.i32("flagBits")
        out["flags"] = flags
        if flags & MSG_CHECKSUM_PRESENT:
            if r.remaining < 4:
                raise BadContent("checksum missing")
            r.end -= 4
        sections = []
        while r.remaining > 0:
            kind = r.byte("section kind")
            if kind == 0:
                out["body"] = r.document("body section")
            elif kind == 1:
                start = r.pos
                size = r.i32("section size")
                if size < 5 or size > r.end - start:
                    raise BadContent(f"document sequence size {size} does not fit the message")
                seq = _Reader(r.data, r.pos, start + size)
                identifier = seq.cstring("sequence identifier")
                docs = []
                while seq.remaining > 0:
                    docs.append(seq.raw_document("sequence document"))
                sections.append(Section(identifier, tuple(docs)))
                r.pos = start + size
            else:
                raise BadContent(f"unknown section kind {kind}")
        out["sections"] = tuple(sections)
    elif opcode == OP_QUERY:
        out["flags"] = r.i32("flags")
        out["full_collection_name"] = r.cstring("fullCollectionName")
        out["number_to_skip"] = r.i32("numberToSkip")
        out["number_to_return"] = r.i32("numberToReturn")
        out["body"] = r.document("query")
        if r.remaining > 0:
            out["return_fields"] = r.document("returnFieldsSelector")
    elif opcode == OP_GET_MORE:
        r.i32("ZERO")
        out["full_collection_name"] = r.cstring("fullCollectionName")
        out["number_to_return"] = r.i32("numberToReturn")
        out["cursor_id"] = r.i64("cursorID")
    elif opcode == OP_INSERT:
        out["flags"] = r.i32("flags")
        out["full_collection_name"] = r.cstring("fullCollectionName")
        docs = []
        while r.remaining > 0:
            docs.append(r.raw_document("insert document"))
        out["documents"] = tuple(docs)
    elif opcode == OP_UPDATE:
        r.i32("ZERO")
        out["full_collection_name"] = r.cstring("fullCollectionName")
        out["flags"] = r.i32("flags")
        out["selector"] = r.document("selector")
        out["update"] = r.document("update")
    elif opcode == OP_DELETE:
        r.i32("ZERO")
        out["full_collection_name"] = r.cstring("fullCollectionName")
        out["flags"] = r.i32("flags")
        out["selector"] = r.document("selector")
    elif opcode == OP_KILL_CURSORS:
        r.i32("ZERO")
        count = r.i32("numberOfCursorIDs")
        if count < 0 or count * 8 > r.remaining:
            raise BadContent(f"numberOfCursorIDs {count} does not fit the message")
        out["cursor_ids"] = tuple(r.i64("cursorID") for _ in range(count))
    elif opcode == OP_MSG_LEGACY:
        out["text"] = r.cstring("message")
    return out


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
        self._buf = bytearray()
        self._base = 0
        self._ts = 0
        self._skip_left = 0  # bytes of a message being counted past
        self._skipped: MongoMessage | None = None  # what will be emitted once the skip is over
        self.strict = False  # after a resync: an unknown opcode is a framing error, not a message

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def idle(self) -> bool:
        return not self._buf and not self._skip_left

    def reset(self) -> None:
        self._base += len(self._buf)
        self._buf = bytearray()
        self._skip_left = 0
        self._skipped = None
        self.strict = True

    def _error(self, reason: str, at: int = 0) -> ParseError:
        return ParseError(PROTOCOL, self.direction, self._base + at, reason)

    def feed(self, data: bytes, ts_ns: int) -> list[MongoMessage]:
        out: list[MongoMessage] = []
        if self._skip_left:
            take = min(self._skip_left, len(data))
            self._skip_left -= take
            self._base += take
            data = data[take:]
            if self._skip_left:
                return out
        if self._skipped is not None:
            out.append(self._skipped)
            self._skipped = None
        if not data:
            return out
        if not self._buf:
            self._ts = ts_ns
        buf = self._buf
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= HEADER_SIZE:
                length, request_id, response_to, opcode = _HEADER.unpack_from(buf, pos)
                if length < HEADER_SIZE or length > MAX_MESSAGE_BYTES:
                    raise self._error(f"message length {length} out of range", pos)
                known = is_known(opcode)
                if not known and self.strict:
                    raise self._error(f"unknown opcode {opcode} while resynchronising", pos)
                if length > MAX_DECODE_BYTES or not known:
                    notes = (NOTE_TOO_LARGE,) if known else ()
                    msg = MongoMessage(self._ts, length, request_id, response_to, opcode, known=known, notes=notes)
                    available = len(buf) - pos
                    if available >= length:
                        out.append(msg)
                        pos += length
                        self._ts = ts_ns
                        continue
                    self._skip_left = length - available
                    self._skipped = msg
                    self._base += len(buf)
                    buf.clear()
                    pos = 0
                    break
                if len(buf) - pos < length:
                    break
                out.append(self._decode(bytes(buf[pos:pos + length]), self._ts, length, request_id,
                                        response_to, opcode))
                self.strict = False
                pos += length
                self._ts = ts_ns
        finally:
            if pos:
                del buf[:pos]
                self._base += pos
        return out

    def gap(self, nbytes: int) -> bool:
        """Count past a hole when the current message's length covers it (the message is then noted)."""
        buf = self._buf
        if self._skip_left:
            if nbytes > self._skip_left:
                return False
            self._skip_left -= nbytes
            self._base += nbytes
            self._mark_lossy()
            return True
        if len(buf) < HEADER_SIZE:
            return False
        length, request_id, response_to, opcode = _HEADER.unpack_from(buf)
        left = length - len(buf)
        if nbytes > left:
            return False
        self._skipped = MongoMessage(self._ts, length, request_id, response_to, opcode, known=is_known(opcode))
        self._mark_lossy()
        self._skip_left = left - nbytes
        self._base += len(buf) + nbytes
        buf.clear()
        return True

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
        body: bytes | memoryview = memoryview(view)[HEADER_SIZE:]
        compressed = False
        try:
            if opcode == OP_COMPRESSED:
                r = _Reader(body)
                original = r.i32("originalOpcode")
                size = r.i32("uncompressedSize")
                compressor = r.byte("compressorId")
                compressed = True
                if not is_known(original) or original == OP_COMPRESSED:
                    raise BadContent(f"compressed message with opcode {original}")
                opcode = original
                if size < 0 or size > MAX_DECODE_BYTES:
                    raise BadContent(f"uncompressed size {size} out of range")
                body = decompress(compressor, bytes(body[r.pos:]), size)
            fields = decode_body(opcode, body, self.want_documents)
        except BadContent as exc:
            return MongoMessage(ts_ns, length, request_id, response_to, opcode, compressed=compressed,
                                notes=(f"MongoDB message could not be decoded: {exc}",))
        return MongoMessage(ts_ns, length, request_id, response_to, opcode, compressed=compressed, **fields)
