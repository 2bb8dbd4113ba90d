"""Sans-IO Thrift TBinary parsing, over TSocket (unframed) or TFramed transport.

One `ThriftParser` per direction.  Bytes go in, complete `ThriftMessage`s come
out, each with its top-level fields already rendered as Packetbeat prints
them (`(1: 1, 2: "hello")`, `[1, 2, 3]`, `{"a": 1}`, lowercase hex for binary).

The parser is incremental: it keeps an explicit stack of the containers it
is inside, so a message arriving in many segments is read once, never
re-parsed from its start.  String and binary values are streamed: only the
first `string_max_size` bytes are kept, the rest is counted and skipped, so a
large blob costs no memory.  Limits: `MAX_MESSAGE_BYTES` per message,
`MAX_FRAME_BYTES` per TFramed frame (larger frames are skipped by counting,
without buffering), `MAX_DEPTH` nested containers, `MAX_NAME_BYTES` for a
method name, and Packetbeat's own `drop_after_n_struct_fields`.

Packetbeat's renderings are kept on purpose, quirks included: i16 and i32 are
printed unsigned (Go converts them through uint16/uint32), bytes unsigned,
an empty list or set prints as an empty string, and the method name is cut at
`string_max_size` like any string.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from agent.metrics import Counters
from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.stream import Gap
from agent.protocols.thrift.values import go_float, render_string
from agent.transport.types import Direction

PROTOCOL = "thrift"

MAX_MESSAGE_BYTES = 16 << 20  # a message (socket transport) or frame payload past this is malformed
MAX_FRAME_BYTES = 16 << 20  # TFramed frames over this are skipped unread (Thrift's own default maximum)
MAX_NAME_BYTES = 16 << 10  # a method name
MAX_DEPTH = 64  # nested structs and collections

# Message types
CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4

# Field types
T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15
_FIXED_SIZE = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
_READABLE = frozenset((*_FIXED_SIZE, T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST))

_VERSION_MASK = 0xFFFF0000
_VERSION_1 = 0x80010000
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


@dataclass(frozen=True, slots=True)
class ParserSettings:
    framed: bool = False
    string_max_size: int = 200
    collection_max_size: int = 15
    drop_after_n_struct_fields: int = 500
    obfuscate_strings: bool = False
    capture_reply: bool = True


@dataclass(frozen=True, slots=True)
class ThriftField:
    id: int
    type: int
    value: str  # rendered


@dataclass(frozen=True, slots=True)
class ThriftMessage:
    ts_ns: int  # when its first byte arrived
    method: str
    type: int  # CALL, REPLY, EXCEPTION or ONEWAY
    seqid: int
    fields: tuple[ThriftField, ...]  # the first max(collection_max_size, 1) top-level fields
    more_fields: bool  # there were more top-level fields than that
    size: int  # TFramed: the frame's declared length; TSocket: the message's bytes
    lost: bool = False  # cut short by a gap in the stream (fields then are empty)

    @property
    def is_request(self) -> bool:
        return self.type in (CALL, ONEWAY)


class _Struct:
    __slots__ = ("count", "fid", "ftype", "items", "more", "top")

    def __init__(self, top: bool) -> None:
        self.top = top
        self.items: list[ThriftField] | list[str] = []
        self.more = False
        self.count = 0
        self.ftype = -1
        self.fid = 0


class _Seq:
    __slots__ = ("closing", "etype", "index", "items", "opening", "remaining")

    def __init__(self, etype: int, count: int, opening: str, closing: str) -> None:
        self.etype = etype
        self.remaining = count
        self.items: list[str] = []
        self.index = 0
        self.opening = opening
        self.closing = closing


class _Map:
    __slots__ = ("index", "items", "key", "ktype", "remaining", "vtype", "want_key")

    def __init__(self, ktype: int, vtype: int, count: int) -> None:
        self.ktype = ktype
        self.vtype = vtype
        self.remaining = count
        self.items: list[str] = []
        self.index = 0
        self.key = ""
        self.want_key = True


class State(IntEnum):
    """Where the parser is in the stream of its direction."""

    FRAME = 0  # TFramed: the 4-byte frame length
    HEADER = 1  # a message header: version and type, method name, sequence id
    BODY = 2  # the message's fields, read incrementally through the container stack
    SKIP = 3  # bytes counted past unread (an oversized frame, a frame's tail)
    SUSPENDED = 4  # the direction is ignored until `resume` (capture_reply: false on TSocket)


# What reading the container on top of the stack gave, besides a value type to read next.
_NEED_MORE = -1  # the buffered bytes end inside the next item
_CLOSED = -2  # the container ended and its value went to the one below
_MESSAGE_END = -3  # the top-level struct ended: the message is complete


class ThriftParser:
    """TBinary messages of one direction, incrementally."""

    # One handler per state, called with the instance (a class-level table: no bound methods per ThriftParser).
    _STEPS: ClassVar[dict[State, Callable[[ThriftParser, list[ThriftMessage]], bool]]]

    def __init__(self, direction: Direction, settings: ParserSettings, counters: Counters | None = None) -> None:
        self.direction = direction
        self.settings = settings
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_MESSAGE_BYTES)
        self._first_state = State.FRAME if settings.framed else State.HEADER
        self._state = self._first_state
        self._frame_left = 0  # TFramed: bytes of the current frame not consumed yet
        self._frame_size = 0
        self._skip_left = 0
        self._msg_ts = 0
        self._msg_bytes = 0
        self._method = ""
        self._mtype = 0
        self._seqid = 0
        self._stack: list[_Struct | _Seq | _Map] = []
        self._cur = 0  # read position in the buffer while a body is read
        # A string value being streamed: bytes still due, bytes kept, total length.
        self._str_left = -1
        self._str_kept = bytearray()
        self._str_len = 0
        self.counters = counters if counters is not None else Counters(PROTOCOL)

    # -- public ------------------------------------------------------------------

    @property
    def oversized_frames(self) -> int:
        return self.counters["oversized_frames"]

    @property
    def skipped_bytes(self) -> int:
        return self.counters["skipped_bytes"]

    @property
    def buffered(self) -> int:
        return self.buf.buffered + len(self._str_kept)

    @property
    def idle(self) -> bool:
        """No message is in progress."""
        return self._state in (State.FRAME, State.HEADER) and not self.buf.unread and not self._frame_left

    def reset(self) -> None:
        """Forget everything buffered: the next byte fed starts a new message (or frame)."""
        self.buf.clear()
        self._state = self._first_state
        self._frame_left = 0
        self._skip_left = 0
        self._stack.clear()
        self._str_left = -1
        self._str_kept = bytearray()

    def suspend(self) -> None:
        """Ignore this direction until `resume` (capture_reply: false on the socket transport)."""
        self.counters["skipped_bytes"] += self.buf.unread
        self.reset()
        self._state = State.SUSPENDED

    def resume(self) -> None:
        if self._state == State.SUSPENDED:
            self._state = self._first_state

    def gap(self, nbytes: int, ts_ns: int) -> Gap[ThriftMessage]:
        """A gap loses the framing; the message in progress, if its header was read, comes out without
        its fields."""
        cut = None
        if self._state == State.BODY:
            size = self._frame_size if self.settings.framed else self._msg_bytes
            cut = ThriftMessage(self._msg_ts, self._method, self._mtype, self._seqid, (), False, size, lost=True)
        self.reset()
        return Gap([cut] if cut is not None else [], False)

    def feed(self, data: bytes, ts_ns: int) -> list[ThriftMessage]:
        out: list[ThriftMessage] = []
        if self._state == State.SUSPENDED:
            self.counters["skipped_bytes"] += len(data)
            return out
        rb = self.buf
        rb.feed(data, ts_ns)
        steps = self._STEPS
        while rb.unread and steps[self._state](self, out):
            pass
        return out

    # -- framing -------------------------------------------------------------------

    def _error(self, reason: str, at: int = -1) -> ParseError:
        return self.buf.error(reason, at)

    def _skip(self, out: list[ThriftMessage]) -> bool:
        take = self.buf.skip(self._skip_left)
        self._skip_left -= take
        self.counters["skipped_bytes"] += take
        if self._skip_left:
            return False
        self._state = self._first_state
        return True

    def _skip_suspended(self, out: list[ThriftMessage]) -> bool:
        """Suspended by the caller between messages: what is left is not read."""
        rb = self.buf
        self.counters["skipped_bytes"] += rb.unread
        rb.skip(rb.unread)
        return False

    def _read_frame_header(self, out: list[ThriftMessage]) -> bool:
        rb = self.buf
        buf, pos = rb.data, rb.pos
        if len(buf) - pos < 4:
            return False
        size = int.from_bytes(buf[pos:pos + 4], "big", signed=True)
        if size < 0:
            raise self._error(f"negative frame size {size}")
        self._msg_ts = rb.ts_at(pos)
        rb.pos = pos + 4
        if size > MAX_FRAME_BYTES:
            self.counters["oversized_frames"] += 1
            self._skip_left = size
            self._state = State.SKIP
            return True
        self._frame_size = size
        self._frame_left = size
        self._state = State.HEADER
        return True

    def _window_end(self) -> int:
        """Where the bytes of the current message may end in the buffer (the frame's end, TFramed)."""
        rb = self.buf
        end = len(rb.data)
        if self.settings.framed:
            end = min(end, rb.pos + self._frame_left)
        return end

    def _advance(self, new_pos: int) -> None:
        rb = self.buf
        used = new_pos - rb.pos
        rb.pos = new_pos
        self._msg_bytes += used
        if self.settings.framed:
            self._frame_left -= used
        elif self._msg_bytes > MAX_MESSAGE_BYTES:
            raise self._error(f"message larger than {MAX_MESSAGE_BYTES} bytes")

    def _read_message_header(self, out: list[ThriftMessage]) -> bool:
        rb = self.buf
        buf, pos = rb.data, rb.pos
        end = self._window_end()
        if self.settings.framed and self._frame_left == 0:
            raise self._error("empty frame")
        if end - pos < 9:
            self._check_frame_room(9)
            return False
        first = int.from_bytes(buf[pos:pos + 4], "big")
        if first & 0x80000000:
            if first & _VERSION_MASK != _VERSION_1:
                raise self._error(f"unsupported TBinary version {first & _VERSION_MASK:#010x}")
            mtype = first & 0xFF
            name_len = int.from_bytes(buf[pos + 4:pos + 8], "big", signed=True)
            name_at = pos + 8
            tail = 4
        else:
            mtype = -1  # after the name (the old unversioned form)
            name_len = first
            name_at = pos + 4
            tail = 5
        if name_len < 0 or name_len > MAX_NAME_BYTES:
            raise self._error(f"method name length {name_len} out of range")
        needed = name_at - pos + name_len + tail
        if end - pos < needed:
            self._check_frame_room(needed)
            return False
        name_end = name_at + name_len
        seq_at = name_end
        if mtype < 0:
            mtype = buf[name_end]
            seq_at = name_end + 1
        if mtype not in (CALL, REPLY, EXCEPTION, ONEWAY):
            raise self._error(f"message type {mtype} is not call, reply, exception or oneway")
        limit = self.settings.string_max_size
        raw = bytes(buf[name_at:name_end])
        self._method = raw[:limit].decode("utf-8", "replace") + ("..." if name_len > limit else "")
        self._mtype = mtype
        self._seqid = int.from_bytes(buf[seq_at:seq_at + 4], "big")
        if not self.settings.framed:
            self._msg_ts = rb.ts_at(pos)
        self._msg_bytes = 0
        self._advance(seq_at + 4)
        if mtype in (REPLY, EXCEPTION) and not self.settings.capture_reply:
            out.append(self._reply_header_only())
            return True
        self._stack = [_Struct(top=True)]
        self._state = State.BODY
        return True

    def _check_frame_room(self, needed: int) -> None:
        if self.settings.framed and self._frame_left < needed:
            raise self._error("message header longer than its frame")

    def _reply_header_only(self) -> ThriftMessage:
        """capture_reply: false: the reply is known by its header; its body is not read."""
        if self.settings.framed:
            size = self._frame_size
            self._skip_left = self._frame_left
            self._frame_left = 0
            self._state = State.SKIP if self._skip_left else State.FRAME
        else:
            size = self._msg_bytes
            self.suspend()
        return ThriftMessage(self._msg_ts, self._method, self._mtype, self._seqid, (), False, size)

    def _finish_message(self, top: _Struct) -> ThriftMessage:
        fields: tuple[ThriftField, ...] = tuple(top.items)  # type: ignore[arg-type]
        size = self._frame_size if self.settings.framed else self._msg_bytes
        msg = ThriftMessage(self._msg_ts, self._method, self._mtype, self._seqid, fields, top.more, size)
        self._stack = []
        if self.settings.framed:
            if self._frame_left:
                self._skip_left = self._frame_left
                self._frame_left = 0
                self._state = State.SKIP
            else:
                self._state = State.FRAME
        else:
            self._state = State.HEADER
        return msg

    # -- values --------------------------------------------------------------------

    def _read_body(self, out: list[ThriftMessage]) -> bool:
        """Parse as far as the buffered bytes go; the message once its last STOP is read."""
        end = self._window_end()
        self._cur = self.buf.pos
        stack = self._stack
        try:
            while True:
                if self._str_left >= 0:
                    if not self._string_bytes(end):
                        break
                    continue
                vtype = self._next_item(stack[-1], end)
                if vtype == _MESSAGE_END:
                    self._advance(self._cur)
                    out.append(self._finish_message(stack[0]))  # type: ignore[arg-type]
                    return True
                if vtype == _CLOSED:
                    continue
                if vtype == _NEED_MORE or not self._value(vtype, end):
                    break
        finally:
            if self._stack:
                self._advance(self._cur)
        if self.settings.framed and self._frame_left == 0:
            raise self._error("message longer than its frame")
        return False

    def _string_bytes(self, end: int) -> bool:
        """Stream a string value's bytes; True once the value is complete (and delivered)."""
        settings = self.settings
        pos = self._cur
        take = min(self._str_left, end - pos)
        room = settings.string_max_size - len(self._str_kept)
        if room > 0 and take:
            self._str_kept += self.buf.data[pos:pos + min(take, room)]
        self._cur = pos + take
        self._str_left -= take
        if self._str_left:
            return False
        value = render_string(bytes(self._str_kept), self._str_len > settings.string_max_size,
                              settings.obfuscate_strings)
        self._str_left = -1
        self._str_kept = bytearray()
        self._deliver(self._stack, value)
        return True

    def _next_item(self, top: _Struct | _Seq | _Map, end: int) -> int:
        """The type of the next value in the container on top of the stack, or one of the markers."""
        if isinstance(top, _Struct):
            return self._next_field(top, end)
        stack = self._stack
        if isinstance(top, _Seq):
            if top.remaining == 0:
                stack.pop()
                joined = ", ".join(top.items)
                self._deliver(stack, f"{top.opening}{joined}{top.closing}" if joined else "")
                return _CLOSED
            return top.etype
        if top.remaining == 0:
            stack.pop()
            self._deliver(stack, "{" + ", ".join(top.items) + "}")
            return _CLOSED
        return top.ktype if top.want_key else top.vtype

    def _next_field(self, top: _Struct, end: int) -> int:
        if top.ftype >= 0:
            return top.ftype
        buf, pos = self.buf.data, self._cur
        if pos >= end:
            return _NEED_MORE
        ftype = buf[pos]
        if ftype == T_STOP:
            self._cur = pos + 1
            stack = self._stack
            if len(stack) == 1:
                return _MESSAGE_END
            stack.pop()
            self._deliver(stack, _render_struct(top))
            return _CLOSED
        if end - pos < 3:
            return _NEED_MORE
        if ftype not in _READABLE:
            raise self._error(f"unknown field type {ftype}", pos)
        top.count += 1
        limit = self.settings.drop_after_n_struct_fields
        if top.count > limit:
            raise self._error(f"struct has more than {limit} fields", pos)
        top.ftype = ftype
        top.fid = (buf[pos + 1] << 8) | buf[pos + 2]
        self._cur = pos + 3
        return ftype

    def _value(self, vtype: int, end: int) -> bool:
        """Read a value of `vtype` (or the header of a string or container); False when more bytes are needed."""
        buf, pos = self.buf.data, self._cur
        size = _FIXED_SIZE.get(vtype)
        if size is not None:
            if end - pos < size:
                return False
            self._deliver(self._stack, _render_fixed(vtype, buf, pos))
            self._cur = pos + size
            return True
        if vtype == T_STRING:
            if end - pos < 4:
                return False
            length = int.from_bytes(buf[pos:pos + 4], "big", signed=True)
            if length < 0:
                raise self._error(f"negative string length {length}", pos)
            self._cur = pos + 4
            self._str_left = length
            self._str_len = length
            return True
        if len(self._stack) >= MAX_DEPTH:
            raise self._error(f"containers nested deeper than {MAX_DEPTH}", pos)
        if vtype == T_STRUCT:
            self._stack.append(_Struct(top=False))
            return True
        return self._container_header(vtype, buf, pos, end)

    def _container_header(self, vtype: int, buf: bytes | bytearray, pos: int, end: int) -> bool:
        if vtype == T_MAP:
            if end - pos < 6:
                return False
            ktype, etype = buf[pos], buf[pos + 1]
            count = int.from_bytes(buf[pos + 2:pos + 6], "big", signed=True)
            if ktype not in _READABLE or etype not in _READABLE or count < 0:
                raise self._error(f"bad map header ({ktype}, {etype}, {count})", pos)
            self._stack.append(_Map(ktype, etype, count))
            self._cur = pos + 6
            return True
        # list or set
        if end - pos < 5:
            return False
        etype = buf[pos]
        count = int.from_bytes(buf[pos + 1:pos + 5], "big", signed=True)
        if etype not in _READABLE or count < 0:
            raise self._error(f"bad list/set header ({etype}, {count})", pos)
        if vtype == T_SET:
            self._stack.append(_Seq(etype, count, "{", "}"))
        else:
            self._stack.append(_Seq(etype, count, "[", "]"))
        self._cur = pos + 5
        return True

    def _deliver(self, stack: list[_Struct | _Seq | _Map], value: str) -> None:
        top = stack[-1]
        limit = self.settings.collection_max_size
        if isinstance(top, _Struct):
            if len(top.items) < (max(limit, 1) if top.top else limit):
                if top.top:
                    top.items.append(ThriftField(top.fid, top.ftype, value))  # type: ignore[arg-type]
                else:
                    top.items.append(f"{top.fid}: {value}")  # type: ignore[arg-type]
            else:
                top.more = True
            top.ftype = -1
        elif isinstance(top, _Seq):
            if top.index < limit:
                top.items.append(value)
            elif top.index == limit:
                top.items.append("...")
            top.index += 1
            top.remaining -= 1
        elif top.want_key:
            top.key = value
            top.want_key = False
        else:
            if top.index < limit:
                top.items.append(f"{top.key}: {value}")
            elif top.index == limit:
                top.items.append("...")
            top.index += 1
            top.remaining -= 1
            top.want_key = True


def _render_struct(top: _Struct) -> str:
    items: list[str] = top.items  # type: ignore[assignment]
    if top.more:
        return "(" + ", ".join([*items, "..."]) + ")"
    return "(" + ", ".join(items) + ")"


def _render_fixed(vtype: int, buf: bytes | bytearray, pos: int) -> str:
    if vtype == T_I32:
        return str(int.from_bytes(buf[pos:pos + 4], "big"))
    if vtype == T_BOOL:
        return "false" if buf[pos] == 0 else "true"
    if vtype == T_I64:
        return str(_I64.unpack_from(buf, pos)[0])
    if vtype == T_I16:
        return str(int.from_bytes(buf[pos:pos + 2], "big"))
    if vtype == T_BYTE:
        return str(buf[pos])
    return go_float(_F64.unpack_from(buf, pos)[0])


def format_struct(fields: tuple[ThriftField, ...], more: bool, limit: int, names: dict[int, str] | None) -> str:
    """Top-level fields as `(1: v, 2: w)`, or `(name: v, ...)` with the IDL's names."""
    if len(fields) > limit:
        fields, more = fields[:limit], True
    named = names or {}
    parts = [f"{named.get(f.id, f.id)}: {f.value}" for f in fields]
    if more:
        parts.append("...")
    return "(" + ", ".join(parts) + ")"


ThriftParser._STEPS = {
    State.FRAME: ThriftParser._read_frame_header,
    State.HEADER: ThriftParser._read_message_header,
    State.BODY: ThriftParser._read_body,
    State.SKIP: ThriftParser._skip,
    State.SUSPENDED: ThriftParser._skip_suspended,
}
