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

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from agent.metrics import Counters
from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.cassandra.body import (
    FLAG_COMPRESS,
    FLAG_CUSTOM_PAYLOAD,
    FLAG_TRACING,
    FLAG_WARNING,
    OP_NAMES,
    BodyError,
    bytes_map,
    decode_request,
    decode_response,
    header_flags_text,
    op_text,
    string_list,
)
from agent.protocols.cursor import Cursor
from agent.protocols.errors import ShortRead
from agent.protocols.stream import Gap, in_sync, lost_sync
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


class State(IntEnum):
    """Where the parser is in the frame stream of its direction."""

    HEADER = 0  # the 8- or 9-byte frame header
    BODY = 1  # a body buffered whole, then decoded
    SKIP = 2  # a body counted past unread (ignored opcode, oversized, cut by a gap)


class CqlParser:
    """The frames of one direction."""

    # One handler per state, called with the instance (a class-level table: no bound methods per CqlParser).
    _STEPS: ClassVar[dict[State, Callable[[CqlParser, list[CqlFrame]], bool]]]

    def __init__(self, direction: Direction, settings: ParserSettings, counters: Counters | None = None) -> None:
        self.direction = direction
        self.settings = settings
        # A body being buffered arrives in many segments: the buffer holds them and joins them once complete.
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_FRAME_BYTES)
        self._state = State.HEADER
        # The current frame's header: (version byte, flags, stream, opcode, body length, arrival time).
        self._header: tuple[int, int, int, int, int, int] | None = None
        self._left = 0
        self._note = ""  # why the body being skipped is not decoded
        self.resync = False
        self.counters = counters if counters is not None else Counters(PROTOCOL)

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    @property
    def buffered(self) -> int:
        return self.buf.buffered

    @property
    def idle(self) -> bool:
        return self._state == State.HEADER and not self.buf.unread

    def reset(self) -> None:
        self.buf.clear()
        self._state = State.HEADER
        self._header = None
        self.resync = True

    def gap(self, nbytes: int, ts_ns: int) -> Gap[CqlFrame]:
        """`nbytes` were lost: inside the current body they cost only that body, else the parser resyncs."""
        rb = self.buf
        rb.release()
        if self._state in (State.BODY, State.SKIP) and self._header is not None:
            buffered = rb.unread if self._state == State.BODY else 0
            remaining = self._left - buffered
            if 0 < nbytes <= remaining:
                rb.skip(rb.unread)
                rb.skip_unbuffered(nbytes)
                self._left = remaining - nbytes
                self._state = State.SKIP
                self._note = REQUEST_LOSS_NOTE if self.direction is Direction.TO_SERVER else RESPONSE_LOSS_NOTE
                if not self._left:
                    return in_sync(self._finish_skipped())
                return in_sync()
        self.reset()
        return lost_sync()

    def feed(self, data: bytes, ts_ns: int) -> list[CqlFrame]:
        """The frames `data` completes (a body waited for whole comes out with the segment that ends it)."""
        rb = self.buf
        out: list[CqlFrame] = []
        if not rb.feed(data, ts_ns):
            return out
        steps = self._STEPS
        while rb.unread and steps[self._state](self, out):
            pass
        return out

    # -- states: each consumes what it can; False when it needs more bytes ------------------

    def _read_body(self, out: list[CqlFrame]) -> bool:
        rb = self.buf
        body = rb.take(self._left)
        if body is None:
            rb.wait_for(self._left)
            return False
        self._state = State.HEADER
        out.append(self._frame(body))
        return True

    def _skip_body(self, out: list[CqlFrame]) -> bool:
        self._left -= self.buf.skip(self._left)
        if self._left:
            return False
        out.append(self._finish_skipped())
        return True

    def _read_header(self, out: list[CqlFrame]) -> bool:
        rb = self.buf
        buf, pos = rb.data, rb.pos
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
        problem = self._header_problem(first, flags, op, length)
        if problem:
            self._bad_header(problem)
            return False
        self.resync = False
        self._header = (first, flags, stream, op, length, rb.ts_at(pos))
        rb.pos = pos + size
        self._left = length
        self._state = self._body_state(op, length)
        if self._state == State.HEADER:  # an empty body: the frame is complete
            out.append(self._frame(b""))
        return True

    def _header_problem(self, first: int, flags: int, op: int, length: int) -> str:
        """Why a frame header is not one ("" when it checks out)."""
        if not 1 <= first & 0x7F <= 4:
            return f"unsupported protocol version byte {first:#04x}"
        if op > _MAX_OPCODE or op == 0x04:
            return f"unknown opcode {op:#04x}"
        if length > 0x7FFFFFFF:
            return f"negative body length {length - (1 << 32)}"
        if self.resync and (flags & ~_KNOWN_FLAGS or length > MAX_FRAME_BYTES):
            return "not a frame header"
        return ""

    def _body_state(self, op: int, length: int) -> State:
        if length == 0:
            return State.HEADER
        if op in self.settings.ignored_ops:
            self._note = ""
            return State.SKIP
        if length > MAX_FRAME_BYTES:
            self._count("oversized_frames")
            self._note = OVERSIZED_NOTE
            return State.SKIP
        return State.BODY

    def _bad_header(self, problem: str) -> None:
        rb = self.buf
        if self.resync:
            self._count("resync_dropped_bytes", rb.unread)
            rb.skip(rb.unread)
            return
        raise rb.error(problem)

    def _finish_skipped(self) -> CqlFrame:
        self._state = State.HEADER
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
        except (BodyError, ShortRead):
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
        reader = Cursor(body, protocol=PROTOCOL, direction=self.direction)
        data: dict[str, Any] = {}
        if response and flags & FLAG_TRACING:
            reader.skip(16)  # the tracing session id
        if version >= 4 and flags & FLAG_WARNING and response:
            data["warnings"] = string_list(reader)
        if version >= 4 and flags & FLAG_CUSTOM_PAYLOAD:
            bytes_map(reader)
        if response:
            decode_response(op, version, reader, data)
        else:
            data.update(decode_request(op, reader))
        return data


CqlParser._STEPS = {
    State.HEADER: CqlParser._read_header,
    State.BODY: CqlParser._read_body,
    State.SKIP: CqlParser._skip_body,
}
