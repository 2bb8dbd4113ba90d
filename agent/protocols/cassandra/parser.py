"""Sans-IO CQL native protocol (v1-v4) framing: the bytes of one direction in, frames out.

A frame is an 8-byte (v1, v2) or 9-byte (v3, v4) header - version and
direction bit, flags, stream id, opcode, body length - then the body.
Bodies are buffered up to `MAX_FRAME_BYTES` (CQL allows 256 MB; Cassandra's
own default limit is 16 MB); a longer body, or the body of an ignored
opcode, is skipped by counting, without buffering, and the frame still comes
out (without body fields), so request/response pairing stays aligned.

Compressed bodies (`compressor: snappy`) are decompressed with cramjam,
after checking the declared size against `MAX_DECOMPRESSED_BYTES`.  A gap
inside a body loses only that frame's body: it comes out with the note
"Packet loss while capturing the request/response" and the stream stays in
sync.  After a gap elsewhere, the parser only accepts a header that checks
out (version, opcode, flags, length) and drops the segment otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.protocols.cassandra.body import (
    FLAG_COMPRESS,
    FLAG_CUSTOM_PAYLOAD,
    FLAG_TRACING,
    FLAG_WARNING,
    OP_NAMES,
    BodyError,
    Reader,
    decode_request,
    decode_response,
    header_flags_text,
    op_text,
)
from agent.protocols.segments import PendingFrame
from agent.transport.session import ParseError
from agent.transport.types import Direction

PROTOCOL = "cassandra"

MAX_FRAME_BYTES = 16 << 20  # bodies buffered and decoded up to this; longer ones are skipped
MAX_DECOMPRESSED_BYTES = 16 << 20
MAX_QUERY_CHARS = 1 << 20  # of a query string put in the event; the rest is cut, with TRUNCATED_QUERY_NOTE
_MAX_OPCODE = max(OP_NAMES)
_KNOWN_FLAGS = 0x1F

REQUEST_LOSS_NOTE = "Packet loss while capturing the request"
RESPONSE_LOSS_NOTE = "Packet loss while capturing the response"
OVERSIZED_NOTE = f"Frame body larger than {MAX_FRAME_BYTES} bytes was not decoded"
NO_COMPRESSOR_NOTE = "Compressed frame body not decoded: no compressor configured"
BAD_BODY_NOTE = "Failed to decode the frame body"
TRUNCATED_QUERY_NOTE = "The query was truncated"

_HEADER, _BODY, _SKIP = range(3)


@dataclass(frozen=True, slots=True)
class ParserSettings:
    compressor: str = ""  # "" or "snappy"
    ignored_ops: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class CqlFrame:
    ts_ns: int  # when its first byte arrived
    version: int  # 1-4
    is_response: bool
    flags: int
    stream: int
    opcode: int
    length: int  # the body length in the header (compressed size)
    data: dict[str, Any]  # decoded body (Packetbeat's cassandra.request / cassandra.response content)
    notes: tuple[str, ...] = ()
    ignored: bool = False

    @property
    def size(self) -> int:
        return (9 if self.version >= 3 else 8) + self.length

    @property
    def op(self) -> str:
        return op_text(self.opcode)

    def headers(self) -> dict[str, Any]:
        return {"version": str(self.version), "flags": header_flags_text(self.flags), "stream": self.stream,
                "op": self.op, "length": self.length}


def snappy_decompress(data: bytes) -> bytes:
    """A raw (block) snappy body, refusing a declared size over MAX_DECOMPRESSED_BYTES."""
    size = 0
    shift = 0
    for i, byte in enumerate(data[:5]):
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if i == 4:
            raise BodyError("bad snappy length")
    if size > MAX_DECOMPRESSED_BYTES:
        raise BodyError(f"snappy body decompresses to {size} bytes, over {MAX_DECOMPRESSED_BYTES}")
    import cramjam  # imported here: only compressed captures need it

    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise BodyError(f"snappy: {exc}") from None


class CqlParser:
    """The frames of one direction."""

    def __init__(self, direction: Direction, settings: ParserSettings) -> None:
        self.direction = direction
        self.settings = settings
        self._buf = b""
        self._pos = 0
        self._consumed = 0
        self._state = _HEADER
        self._start_ts = 0
        # The current frame's header: (version byte, flags, stream, opcode, body length, arrival time).
        self._header: tuple[int, int, int, int, int, int] | None = None
        self._left = 0
        self._note = ""  # why the body being skipped is not decoded
        # A body being buffered arrives in many segments: they are collected and joined once, when complete.
        self._pending = PendingFrame()
        self.resync = False
        self.counters: dict[str, int] = {}

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos + self._pending.held

    @property
    def idle(self) -> bool:
        return self._state == _HEADER and self._pos >= len(self._buf)

    def reset(self) -> None:
        self._pending.clear()
        self._buf = b""
        self._pos = 0
        self._state = _HEADER
        self._header = None
        self.resync = True

    def gap(self, nbytes: int) -> CqlFrame | None:
        """`nbytes` were lost: inside the current body they cost only that body, else the parser resyncs."""
        self._join_chunks()
        if self._state in (_BODY, _SKIP) and self._header is not None:
            buffered = len(self._buf) - self._pos
            if self._state == _SKIP:
                buffered = 0
            remaining = self._left - buffered
            if 0 < nbytes <= remaining:
                self._pos = len(self._buf)
                self._left = remaining - nbytes
                self._state = _SKIP
                self._note = REQUEST_LOSS_NOTE if self.direction is Direction.TO_SERVER else RESPONSE_LOSS_NOTE
                if not self._left:
                    return self._finish_skipped()
                return None
        self.reset()
        return None

    def _join_chunks(self) -> None:
        if self._pending:
            self._consumed += self._pos
            self._buf = self._buf[self._pos:] + self._pending.take()
            self._pos = 0

    def feed(self, data: bytes, ts_ns: int) -> list[CqlFrame]:
        if self._pending:
            joined = self._pending.add(data)
            if joined is None:
                return []
            data = joined
        if self._pos < len(self._buf):
            self._consumed += self._pos
            self._buf = self._buf[self._pos:] + data
        else:
            self._consumed += len(self._buf)
            self._buf = data
            if self._state == _HEADER:
                self._start_ts = ts_ns
        self._pos = 0
        out: list[CqlFrame] = []
        buf = self._buf
        while self._pos < len(buf):
            state = self._state
            if state == _HEADER:
                if not self._read_header():
                    break
                if self._state == _HEADER:  # an empty body: the frame is complete
                    out.append(self._frame(b""))
                    self._start_ts = ts_ns
            elif state == _BODY:
                if len(buf) - self._pos < self._left:
                    self._pending.need = self._left - (len(buf) - self._pos)
                    break
                body = buf[self._pos:self._pos + self._left]
                self._pos += self._left
                self._state = _HEADER
                out.append(self._frame(body))
                self._start_ts = ts_ns
            else:
                take = min(self._left, len(buf) - self._pos)
                self._pos += take
                self._left -= take
                if self._left:
                    break
                out.append(self._finish_skipped())
                self._start_ts = ts_ns
        return out

    # -- frames --------------------------------------------------------------------

    def _error(self, reason: str) -> ParseError:
        return ParseError(PROTOCOL, self.direction, self._consumed + self._pos, reason)

    def _read_header(self) -> bool:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        first = buf[pos]
        version = first & 0x7F
        size = 9 if version >= 3 else 8
        if avail < size:
            if not 1 <= version <= 4:
                self._bad_header(f"unsupported protocol version byte {first:#04x}")
            return False
        flags = buf[pos + 1]
        if size == 9:
            stream = (buf[pos + 2] << 8) | buf[pos + 3]
            at = pos + 4
        else:
            stream = buf[pos + 2]
            at = pos + 3
        op = buf[at]
        length = int.from_bytes(buf[at + 1:at + 5], "big")
        problem = ""
        if not 1 <= version <= 4:
            problem = f"unsupported protocol version byte {first:#04x}"
        elif op > _MAX_OPCODE or op == 0x04:
            problem = f"unknown opcode {op:#04x}"
        elif length > 0x7FFFFFFF:
            problem = f"negative body length {length - (1 << 32)}"
        elif self.resync and (flags & ~_KNOWN_FLAGS or length > MAX_FRAME_BYTES):
            problem = "not a frame header"
        if problem:
            self._bad_header(problem)
            return False
        self.resync = False
        self._pos = pos + size
        self._header = (first, flags, stream, op, length, self._start_ts)
        self._left = length
        if length == 0:
            self._state = _HEADER
        elif op in self.settings.ignored_ops:
            self._note = ""
            self._state = _SKIP
        elif length > MAX_FRAME_BYTES:
            self._count("oversized_frames")
            self._note = OVERSIZED_NOTE
            self._state = _SKIP
        else:
            self._state = _BODY
        return True

    def _bad_header(self, problem: str) -> None:
        if self.resync:
            self._count("resync_dropped_bytes", len(self._buf) - self._pos)
            self._pos = len(self._buf)
            return
        raise self._error(problem)

    def _finish_skipped(self) -> CqlFrame:
        self._state = _HEADER
        notes = (self._note,) if self._note else ()
        self._note = ""
        return self._make({}, notes)

    def _make(self, data: dict[str, Any], notes: tuple[str, ...]) -> CqlFrame:
        assert self._header is not None
        first, flags, stream, op, length, ts = self._header
        return CqlFrame(ts, first & 0x7F, bool(first & 0x80), flags, stream, op, length, data, notes,
                        op in self.settings.ignored_ops)

    def _frame(self, body: bytes) -> CqlFrame:
        assert self._header is not None
        first, flags, _, op, _, _ = self._header
        if op in self.settings.ignored_ops:
            return self._make({}, ())
        try:
            data = self._decode(first & 0x7F, bool(first & 0x80), flags, op, body)
        except BodyError:
            self._count("body_errors")
            return self._make({}, (BAD_BODY_NOTE,))
        if data is None:
            return self._make({}, (NO_COMPRESSOR_NOTE,))
        query = data.get("query")
        if query is not None and len(query) > MAX_QUERY_CHARS:  # as MySQL truncates its queries
            data["query"] = query[:MAX_QUERY_CHARS]
            return self._make(data, (TRUNCATED_QUERY_NOTE,))
        return self._make(data, ())

    def _decode(self, version: int, response: bool, flags: int, op: int, body: bytes) -> dict[str, Any] | None:
        if flags & FLAG_COMPRESS and body:
            if self.settings.compressor != "snappy":
                self._count("undecoded_compressed")
                return None
            body = snappy_decompress(body)
        reader = Reader(body)
        data: dict[str, Any] = {}
        if response and flags & FLAG_TRACING:
            reader.take(16)  # the tracing session id
        if version >= 4 and flags & FLAG_WARNING and response:
            data["warnings"] = reader.string_list()
        if version >= 4 and flags & FLAG_CUSTOM_PAYLOAD:
            reader.bytes_map()
        if response:
            decode_response(op, version, reader, data)
        else:
            data.update(decode_request(op, reader))
        return data
