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
from dataclasses import dataclass

from agent.protocols.thrift.values import go_float, render_string
from agent.transport.session import ParseError
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

# Parser states
_FRAME, _HEADER, _BODY, _SKIP, _SUSPENDED = range(5)


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


class ThriftParser:
    """TBinary messages of one direction, incrementally."""

    def __init__(self, direction: Direction, settings: ParserSettings) -> None:
        self.direction = direction
        self.settings = settings
        self._buf = b""
        self._pos = 0
        self._consumed = 0  # bytes consumed before _buf[0] (for error offsets)
        self._state = _FRAME if settings.framed else _HEADER
        self._frame_left = 0  # TFramed: bytes of the current frame not consumed yet
        self._frame_size = 0
        self._skip_left = 0
        self._msg_ts = 0
        self._start_ts = 0  # when the oldest byte not yet consumed arrived
        self._msg_bytes = 0
        self._method = ""
        self._mtype = 0
        self._seqid = 0
        self._stack: list[_Struct | _Seq | _Map] = []
        # A string value being streamed: bytes still due, bytes kept, total length.
        self._str_left = -1
        self._str_kept = bytearray()
        self._str_len = 0
        self.oversized_frames = 0
        self.skipped_bytes = 0

    # -- public ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos + len(self._str_kept)

    @property
    def idle(self) -> bool:
        """No message is in progress."""
        return self._state in (_FRAME, _HEADER) and self._pos >= len(self._buf) and not self._frame_left

    def reset(self) -> None:
        """Forget everything buffered: the next byte fed starts a new message (or frame)."""
        self._buf = b""
        self._pos = 0
        self._state = _FRAME if self.settings.framed else _HEADER
        self._frame_left = 0
        self._skip_left = 0
        self._stack.clear()
        self._str_left = -1
        self._str_kept = bytearray()

    def suspend(self) -> None:
        """Ignore this direction until `resume` (capture_reply: false on the socket transport)."""
        self.skipped_bytes += len(self._buf) - self._pos
        self.reset()
        self._state = _SUSPENDED

    def resume(self) -> None:
        if self._state == _SUSPENDED:
            self._state = _FRAME if self.settings.framed else _HEADER

    def cut_short(self) -> ThriftMessage | None:
        """A gap hit this direction: the message in progress, if its header was read, without its fields."""
        if self._state != _BODY:
            return None
        size = self._frame_size if self.settings.framed else self._msg_bytes
        return ThriftMessage(self._msg_ts, self._method, self._mtype, self._seqid, (), False, size, lost=True)

    def feed(self, data: bytes, ts_ns: int) -> list[ThriftMessage]:
        if self._state == _SUSPENDED:
            self.skipped_bytes += len(data)
            return []
        if self._pos < len(self._buf):
            self._consumed += self._pos
            self._buf = self._buf[self._pos:] + data
        else:
            self._consumed += len(self._buf)
            self._buf = data
            if self._state in (_FRAME, _HEADER) and not self._frame_left:
                self._start_ts = ts_ns
        self._pos = 0
        out: list[ThriftMessage] = []
        while self._pos < len(self._buf):
            state = self._state
            if state == _FRAME:
                if not self._read_frame_header():
                    break
            elif state == _SKIP:
                take = min(self._skip_left, len(self._buf) - self._pos)
                self._pos += take
                self._skip_left -= take
                self.skipped_bytes += take
                if self._skip_left:
                    break
                self._state = _FRAME if self.settings.framed else _HEADER
                self._start_ts = ts_ns
            elif state == _HEADER:
                msg = self._read_message_header()
                if msg is not None:
                    out.append(msg)
                    self._start_ts = ts_ns
                elif self._state == _HEADER:
                    break
            elif state == _BODY:
                msg = self._read_body()
                if msg is None:
                    break
                out.append(msg)
                self._start_ts = ts_ns
            else:  # suspended by the caller between messages
                self.skipped_bytes += len(self._buf) - self._pos
                self._pos = len(self._buf)
                break
        return out

    # -- framing -------------------------------------------------------------------

    def _error(self, reason: str) -> ParseError:
        return ParseError(PROTOCOL, self.direction, self._consumed + self._pos, reason)

    def _read_frame_header(self) -> bool:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return False
        size = int.from_bytes(buf[pos:pos + 4], "big", signed=True)
        if size < 0:
            raise self._error(f"negative frame size {size}")
        self._pos = pos + 4
        self._msg_ts = self._start_ts
        if size > MAX_FRAME_BYTES:
            self.oversized_frames += 1
            self._skip_left = size
            self._state = _SKIP
            return True
        self._frame_size = size
        self._frame_left = size
        self._state = _HEADER
        return True

    def _window_end(self) -> int:
        """Where the bytes of the current message may end in _buf (the frame's end, TFramed)."""
        end = len(self._buf)
        if self.settings.framed:
            end = min(end, self._pos + self._frame_left)
        return end

    def _advance(self, new_pos: int) -> None:
        used = new_pos - self._pos
        self._pos = new_pos
        self._msg_bytes += used
        if self.settings.framed:
            self._frame_left -= used
        elif self._msg_bytes > MAX_MESSAGE_BYTES:
            raise self._error(f"message larger than {MAX_MESSAGE_BYTES} bytes")

    def _read_message_header(self) -> ThriftMessage | None:
        buf, pos = self._buf, self._pos
        end = self._window_end()
        if self.settings.framed and self._frame_left == 0:
            raise self._error("empty frame")
        if end - pos < 9:
            self._check_frame_room(9)
            return None
        first = int.from_bytes(buf[pos:pos + 4], "big")
        if first & 0x80000000:
            if first & _VERSION_MASK != _VERSION_1:
                raise self._error(f"unsupported TBinary version {first & _VERSION_MASK:#010x}")
            mtype = first & 0xFF
            name_len = int.from_bytes(buf[pos + 4:pos + 8], "big", signed=True)
            name_at = pos + 8
            tail = 4
        else:
            name_len = first
            name_at = pos + 4
            tail = 5
        if name_len < 0 or name_len > MAX_NAME_BYTES:
            raise self._error(f"method name length {name_len} out of range")
        needed = name_at - pos + name_len + tail
        if end - pos < needed:
            self._check_frame_room(needed)
            return None
        name_end = name_at + name_len
        if tail == 5:
            mtype = buf[name_end]
            seq_at = name_end + 1
        else:
            seq_at = name_end
        if mtype not in (CALL, REPLY, EXCEPTION, ONEWAY):
            raise self._error(f"message type {mtype} is not call, reply, exception or oneway")
        limit = self.settings.string_max_size
        raw = bytes(buf[name_at:name_end])
        method = raw[:limit].decode("utf-8", "replace") + ("..." if name_len > limit else "")
        self._method = method
        self._mtype = mtype
        self._seqid = int.from_bytes(buf[seq_at:seq_at + 4], "big")
        if not self.settings.framed:
            self._msg_ts = self._start_ts
        self._msg_bytes = 0
        self._advance(seq_at + 4)
        if mtype in (REPLY, EXCEPTION) and not self.settings.capture_reply:
            return self._reply_header_only()
        self._stack = [_Struct(top=True)]
        self._state = _BODY
        return None

    def _check_frame_room(self, needed: int) -> None:
        if self.settings.framed and self._frame_left < needed:
            raise self._error("message header longer than its frame")

    def _reply_header_only(self) -> ThriftMessage:
        """capture_reply: false: the reply is known by its header; its body is not read."""
        if self.settings.framed:
            size = self._frame_size
            self._skip_left = self._frame_left
            self._frame_left = 0
            self._state = _SKIP if self._skip_left else _FRAME
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
                self._state = _SKIP
            else:
                self._state = _FRAME
        else:
            self._state = _HEADER
        return msg

    # -- values --------------------------------------------------------------------

    def _read_body(self) -> ThriftMessage | None:
        """Parse as far as the buffered bytes go; the message once its last STOP is read."""
        buf = self._buf
        end = self._window_end()
        pos = self._pos
        stack = self._stack
        settings = self.settings
        try:
            while True:
                if self._str_left >= 0:
                    take = min(self._str_left, end - pos)
                    room = settings.string_max_size - len(self._str_kept)
                    if room > 0 and take:
                        self._str_kept += buf[pos:pos + min(take, room)]
                    pos += take
                    self._str_left -= take
                    if self._str_left:
                        break
                    value = render_string(bytes(self._str_kept), self._str_len > settings.string_max_size,
                                          settings.obfuscate_strings)
                    self._str_left = -1
                    self._str_kept = bytearray()
                    self._deliver(stack, value)
                    continue
                top = stack[-1]
                kind = type(top)
                if kind is _Struct:
                    assert isinstance(top, _Struct)
                    if top.ftype < 0:
                        if pos >= end:
                            break
                        ftype = buf[pos]
                        if ftype == T_STOP:
                            pos += 1
                            stack.pop()
                            if not stack:
                                self._advance(pos)
                                return self._finish_message(top)
                            self._deliver(stack, _render_struct(top))
                            continue
                        if end - pos < 3:
                            break
                        if ftype not in _READABLE:
                            raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                             f"unknown field type {ftype}")
                        top.count += 1
                        if top.count > settings.drop_after_n_struct_fields:
                            raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                             f"struct has more than {settings.drop_after_n_struct_fields} fields")
                        top.ftype = ftype
                        top.fid = (buf[pos + 1] << 8) | buf[pos + 2]
                        pos += 3
                    vtype = top.ftype
                elif kind is _Seq:
                    assert isinstance(top, _Seq)
                    if top.remaining == 0:
                        stack.pop()
                        joined = ", ".join(top.items)
                        self._deliver(stack, f"{top.opening}{joined}{top.closing}" if joined else "")
                        continue
                    vtype = top.etype
                else:
                    assert isinstance(top, _Map)
                    if top.remaining == 0:
                        stack.pop()
                        self._deliver(stack, "{" + ", ".join(top.items) + "}")
                        continue
                    vtype = top.ktype if top.want_key else top.vtype
                size = _FIXED_SIZE.get(vtype)
                if size is not None:
                    if end - pos < size:
                        break
                    self._deliver(stack, _render_fixed(vtype, buf, pos))
                    pos += size
                    continue
                if vtype == T_STRING:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(buf[pos:pos + 4], "big", signed=True)
                    if length < 0:
                        raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                         f"negative string length {length}")
                    pos += 4
                    self._str_left = length
                    self._str_len = length
                    continue
                if len(stack) >= MAX_DEPTH:
                    raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                     f"containers nested deeper than {MAX_DEPTH}")
                if vtype == T_STRUCT:
                    stack.append(_Struct(top=False))
                    continue
                if vtype == T_MAP:
                    if end - pos < 6:
                        break
                    ktype, etype = buf[pos], buf[pos + 1]
                    count = int.from_bytes(buf[pos + 2:pos + 6], "big", signed=True)
                    if ktype not in _READABLE or etype not in _READABLE or count < 0:
                        raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                         f"bad map header ({ktype}, {etype}, {count})")
                    stack.append(_Map(ktype, etype, count))
                    pos += 6
                    continue
                # list or set
                if end - pos < 5:
                    break
                etype = buf[pos]
                count = int.from_bytes(buf[pos + 1:pos + 5], "big", signed=True)
                if etype not in _READABLE or count < 0:
                    raise ParseError(PROTOCOL, self.direction, self._consumed + pos,
                                     f"bad list/set header ({etype}, {count})")
                if vtype == T_SET:
                    stack.append(_Seq(etype, count, "{", "}"))
                else:
                    stack.append(_Seq(etype, count, "[", "]"))
                pos += 5
        finally:
            if self._stack:
                self._advance(pos)
        if self.settings.framed and self._frame_left == 0:
            raise self._error("message longer than its frame")
        return None

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


def _render_fixed(vtype: int, buf: bytes, pos: int) -> str:
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
