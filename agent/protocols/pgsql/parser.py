"""PostgreSQL frontend/backend protocol v3, sans-IO: bytes of either direction in, typed messages out.

The startup phase (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest:
messages without a type byte) is recognised at the start of the client
stream; an SSL or GSS request answered 'S'/'G' leaves the connection
encrypted and it is not parsed further (after 'S' to an SSLRequest, the
session hands the connection to the TLS decoder with `take_rest`).  A connection seen mid-stream is
taken up at the first segment that starts with a plausible message.

Large results stream past: consecutive DataRow (and CopyData) messages
come out as one `DataRows` per feed, with at most `row_budget` rows decoded
(the session sets it: the rows it still wants for the response text); the
others are counted from their header and their bodies skipped without
being buffered.  Any other message keeps at most `MAX_KEPT` bytes.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import ClassVar

from agent.metrics import Counters
from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.pgsql.messages import (
    Backend,
    DataRows,
    EncryptionReply,
    ErrorNotice,
    Frontend,
    Message,
    ParameterDescription,
    RowDescription,
    Startup,
    cstr,
    error_fields,
    row_description,
)
from agent.protocols.stream import Gap
from agent.transport.types import Direction

__all__ = ["Backend", "DataRows", "EncryptionReply", "ErrorNotice", "Frontend", "Message", "ParameterDescription",
           "PgsqlParser", "RowDescription", "SideState", "Startup"]

PROTOCOL = "pgsql"

MAX_KEPT = 1 << 20  # bytes kept of one message (a longer query is truncated)
MAX_MESSAGE = 1 << 30  # PostgreSQL refuses messages over 1 GiB; a longer length is garbage
MAX_BINDS = 256  # Bind result formats waiting for their BindComplete
PLAUSIBLE_MESSAGE = 64 << 20  # a longer message does not start a trusted stream mid-connection
PROBE_MAX = 64  # bytes held while deciding whether a stream picked up mid-way starts at a boundary

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608

FRONTEND_TYPES = frozenset(b"QPBDESHCXFdcfp")
BACKEND_TYPES = frozenset(b"RKSZTDCIEN123ntsGHWdcAVv")

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class SideState(IntEnum):
    """Where one side is in its stream of messages."""

    STARTUP = 0  # the client's first messages: length-prefixed, no type byte (startup, SSL, GSS, cancel)
    MESSAGE = 1  # a type byte and a length: the next message
    BODY = 2  # a message body streaming in over several feeds (kept up to its limit)


class _Side:
    __slots__ = ("buf", "held", "hunting", "keep", "kept", "left", "length", "start_ts", "state", "typ")

    def __init__(self, direction: Direction) -> None:
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_MESSAGE)
        self.held = b""  # bytes too few to judge a message boundary yet
        self.hunting = True
        # The next client message may be a startup-phase message.
        self.state = SideState.STARTUP if direction == C2S else SideState.MESSAGE
        self.typ = -1  # type of the message whose body streams in
        self.length = 0
        self.left = 0
        self.keep = 0
        self.kept = bytearray()
        self.start_ts = 0

    def reset(self) -> None:
        self.held = b""
        self.buf.clear()
        if self.state == SideState.BODY:
            self.state = SideState.MESSAGE
        self.typ = -1
        self.kept = bytearray()
        self.left = 0


class PgsqlParser:
    """Both directions of one PostgreSQL connection."""

    # One step per side state, called with the instance (a class-level table: no bound methods per parser).
    _STEPS: ClassVar[dict[SideState, Callable[[PgsqlParser, Direction, _Side, list[Message]], bool]]]

    def __init__(self, *, max_row_length: int = 1024, counters: Counters | None = None) -> None:
        self.max_row_length = max_row_length
        self.rows_per_result = 0  # rows of each result the session wants decoded (its max_rows, or 0)
        self.row_budget = 0  # rows still to decode in the current result
        self.row_formats: tuple[int, ...] = ()  # per column: 0 text, 1 binary (from RowDescription / Bind)
        self.row_format_all = 0  # for columns past row_formats (Bind may give one format for all)
        self._bind_formats: deque[tuple[int, ...]] = deque(maxlen=MAX_BINDS)
        self._sides = (_Side(C2S), _Side(S2C))
        self.encrypted = False
        self._expect_encryption_reply = False
        self._encryption = ""  # "ssl" or "gss": what the pending encryption request asked for
        self._rows: _RowBatch | None = None
        self._pending_batches: list[_RowBatch] = []
        self.counters = counters if counters is not None else Counters(PROTOCOL)

    # -- public ----------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held for messages not yet complete, both directions."""
        return sum(side.buf.buffered + len(side.held) + len(side.kept) for side in self._sides)

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Message]:
        """Parse `data`; the messages it completed.  A ParseError carries those completed before it
        (`error.messages`)."""
        out: list[Message] = []
        if self.encrypted or not data:
            return out
        side = self._sides[int(direction)]
        if side.hunting:
            if side.held:
                data = side.held + data
            verdict = self._probe(direction, side, data)
            if verdict is None and len(data) < PROBE_MAX:
                side.held = data
                return out
            side.held = b""
            if not verdict:
                self._count("resync_skipped_bytes", len(data))
                return out
        side.buf.feed(data, ts_ns)
        try:
            self._drain(direction, side, out)
        except ParseError as exc:
            self._flush_rows(out)
            exc.messages = out
            raise
        self._flush_rows(out)
        return out

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> Gap[Message]:
        """A gap loses the side's framing: it looks for a plausible message start again."""
        self.reset(direction)
        return Gap([], False)

    def reset(self, direction: Direction) -> None:
        side = self._sides[int(direction)]
        side.reset()
        side.hunting = True

    def take_rest(self, direction: Direction) -> bytes:
        """The bytes of `direction` buffered and not parsed (after an accepted SSLRequest: the start of TLS)."""
        side = self._sides[int(direction)]
        rest = side.held + bytes(side.buf.data[side.buf.pos:])
        side.reset()
        side.held = b""
        return rest

    def in_message(self, direction: Direction) -> bool:
        side = self._sides[int(direction)]
        return side.state == SideState.BODY or side.buf.unread > 0

    # -- framing: each step consumes what it can; False when it needs more bytes ---------------------------

    def _drain(self, direction: Direction, side: _Side, out: list[Message]) -> None:
        steps = self._STEPS
        rb = side.buf
        # What the client sends before the answer to its SSLRequest may be TLS: it stays buffered.
        held_for_reply = direction == C2S and self._expect_encryption_reply
        while not self.encrypted and not held_for_reply and (rb.pos < len(rb.data) or side.state == SideState.BODY):
            if not steps[side.state](self, direction, side, out):
                break
            held_for_reply = direction == C2S and self._expect_encryption_reply

    def _body_step(self, direction: Direction, side: _Side, out: list[Message]) -> bool:
        """More of a message whose body streams in; the message once it is complete."""
        rb = side.buf
        pos = rb.pos
        take = min(side.left, len(rb.data) - pos)
        room = side.keep - len(side.kept)
        if room > 0:
            side.kept += rb.data[pos:pos + min(take, room)]
        rb.pos = pos + take
        side.left -= take
        if side.left:
            return False
        typ = side.typ
        side.typ = -1
        side.state = SideState.MESSAGE
        body = bytes(side.kept)
        side.kept = bytearray()
        if direction == S2C and typ in (0x44, 0x64):
            _finish_streamed_row(self, side, body, typ)
            return True
        self._message(direction, typ, body, side.length, side.start_ts, out)
        return True

    def _startup_step(self, direction: Direction, side: _Side, out: list[Message]) -> bool:
        """A startup-phase message (no type byte), while the client's first messages may be one."""
        rb = side.buf
        buf, pos = rb.data, rb.pos
        avail = len(buf) - pos
        if avail < 8:
            return False
        length = _I32.unpack_from(buf, pos)[0]
        if not 8 <= length <= 10000:
            side.state = SideState.MESSAGE
            return True
        if avail < length:
            return False
        self._startup(bytes(buf[pos:pos + length]), rb.ts_at(pos), out)
        rb.pos = pos + length
        return True

    def _message_step(self, direction: Direction, side: _Side, out: list[Message]) -> bool:
        """The messages at the read position, one after the other while each is whole (a data row or the
        start of a long body changes the state)."""
        rb = side.buf
        buf = rb.data
        end = len(buf)
        client = direction == C2S
        valid = FRONTEND_TYPES if client else BACKEND_TYPES
        seg_start, seg_ts = rb.last_segment()
        pos = rb.pos
        while True:
            if not client and self._expect_encryption_reply:
                rb.pos = pos
                return self._encryption_reply(rb, out)
            avail = end - pos
            if avail < 5:
                rb.pos = pos
                return False
            typ = buf[pos]
            length = _I32.unpack_from(buf, pos + 1)[0]
            if typ not in valid or length < 4 or length > MAX_MESSAGE:
                rb.clear()
                raise ParseError(PROTOCOL, direction, pos, f"invalid message: type {typ:#04x}, length {length}")
            body_len = length - 4
            msg_ts = seg_ts if pos >= seg_start else rb.ts_at(pos)
            if not client and typ in (0x44, 0x64):  # DataRow, server CopyData
                self._data_row(buf, pos, body_len, avail, side, msg_ts, copy=typ == 0x64)
                if side.state != SideState.MESSAGE:
                    rb.pos = pos + 5
                    return True
                pos += 5 + body_len
                continue
            self._flush_rows(out)
            if avail < 5 + body_len or body_len > MAX_KEPT:
                self._start_body(side, typ, body_len, msg_ts)
                rb.pos = pos + 5
                return True
            self._message(direction, typ, bytes(buf[pos + 5:pos + 5 + body_len]), body_len, msg_ts, out)
            pos += 5 + body_len
            if self.encrypted:
                rb.pos = pos
                return False

    @staticmethod
    def _start_body(side: _Side, typ: int, body_len: int, ts_ns: int) -> None:
        """A message too long to wait for whole: its body streams in, kept up to MAX_KEPT."""
        side.state = SideState.BODY
        side.typ = typ
        side.length = body_len
        side.left = body_len
        side.keep = MAX_KEPT
        side.kept = bytearray()
        side.start_ts = ts_ns

    def _encryption_reply(self, rb: ReceiveBuffer, out: list[Message]) -> bool:
        """The one-byte answer to an SSLRequest or GSSENCRequest."""
        self._expect_encryption_reply = False
        pos = rb.pos
        reply = rb.data[pos]
        if reply in b"SG":
            out.append(EncryptionReply(rb.ts_at(pos), True, reply == ord("S") and self._encryption == "ssl"))
            self.encrypted = True
            rb.pos = pos + 1  # what follows is encrypted: kept for `take_rest`
            return False
        if reply == ord("N"):
            out.append(EncryptionReply(rb.ts_at(pos), False))
            rb.pos = pos + 1
        # otherwise an old server answers with an ErrorResponse: read it as a message
        return True

    # -- data rows -----------------------------------------------------------------------------------------

    def _data_row(self, buf: bytes | bytearray, pos: int, body_len: int, avail: int, side: _Side, ts_ns: int,
                  copy: bool) -> None:
        want = self.row_budget > 0
        if avail >= 5 + body_len:
            batch = self._batch(ts_ns, copy)
            batch.count += 1
            batch.size += 5 + body_len
            if want:
                self.row_budget -= 1
                batch.rows.append(self._decode_row(bytes(buf[pos + 5:pos + 5 + body_len]), copy))
            return
        # the row continues in later segments: keep what decoding needs, skip the rest
        side.state = SideState.BODY
        side.typ = 0x64 if copy else 0x44
        side.length = body_len
        side.left = body_len
        side.keep = min(MAX_KEPT, 4 * self.max_row_length + 4096) if want else 0
        side.kept = bytearray()
        side.start_ts = ts_ns
        if want:
            self.row_budget -= 1

    def _batch(self, ts_ns: int, copy: bool) -> _RowBatch:
        batch = self._rows
        if batch is not None and batch.copy == copy:
            return batch
        if batch is not None:
            self._pending_batches.append(batch)
        fresh = self._rows = _RowBatch(ts_ns, copy)
        return fresh

    def _decode_row(self, body: bytes, copy: bool) -> tuple[bytes | None, ...]:
        if copy:
            return (body.rstrip(b"\n"),)
        if len(body) < 2:
            self._count("malformed_rows")
            return ()
        count = _I16.unpack_from(body, 0)[0]
        pos = 2
        formats = self.row_formats
        out: list[bytes | None] = []
        for index in range(max(count, 0)):
            if pos + 4 > len(body):
                self._count("malformed_rows")
                break
            length = _I32.unpack_from(body, pos)[0]
            pos += 4
            if length < 0:
                out.append(None)
                continue
            value = body[pos:pos + length]
            pos += length
            complete = len(value) == length
            fmt = formats[index] if index < len(formats) else self.row_format_all
            if fmt == 1:
                value = b"\\x" + value[:self.max_row_length].hex().encode()
            out.append(value)
            if not complete:
                break  # the row was truncated (or lies about a length)
        else:
            if pos != len(body):
                self._count("malformed_rows")
        return tuple(out)

    def _flush_rows(self, out: list[Message]) -> None:
        batches = self._pending_batches
        if self._rows is not None:
            batches.append(self._rows)
            self._rows = None
        for batch in batches:
            out.append(DataRows(batch.ts_ns, batch.size, batch.count, tuple(batch.rows), batch.copy))
        batches.clear()

    # -- startup --------------------------------------------------------------------------------------------

    def _probe(self, direction: Direction, side: _Side, data: bytes) -> bool | None:
        if direction == C2S and side.state == SideState.STARTUP:
            if len(data) < 8:
                return None
            length = _I32.unpack_from(data, 0)[0]
            code = _I32.unpack_from(data, 4)[0]
            if 8 <= length <= 10000 and code in (PROTOCOL_3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST):
                side.hunting = False
                self._sides[1].hunting = False  # a connection seen from its start
                self._sides[1].held = b""
                return True
            side.state = SideState.MESSAGE
        valid = FRONTEND_TYPES if direction == C2S else BACKEND_TYPES
        verdict = _plausible(data, valid)
        if verdict:
            side.hunting = False
            side.buf.clear()
            side.state = SideState.MESSAGE
            side.typ = -1
        return verdict

    def _startup(self, message: bytes, ts_ns: int, out: list[Message]) -> None:
        code = _I32.unpack_from(message, 4)[0]
        client = self._sides[0]
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            self._expect_encryption_reply = True
            self._encryption = "ssl" if code == SSL_REQUEST else "gss"
            out.append(Startup(ts_ns, "ssl" if code == SSL_REQUEST else "gss"))
            return
        if code == CANCEL_REQUEST:
            client.state = SideState.MESSAGE
            out.append(Startup(ts_ns, "cancel"))
            return
        client.state = SideState.MESSAGE
        params: dict[str, str] = {}
        pos = 8
        while pos < len(message) and message[pos]:
            key, pos = cstr(message, pos)
            value, pos = cstr(message, pos)
            params[key] = value
        out.append(Startup(ts_ns, "startup", params.get("user", ""), params.get("database", "")))

    # -- message bodies --------------------------------------------------------------------------------------

    def _message(self, direction: Direction, typ: int, body: bytes, body_len: int, ts_ns: int,
                 out: list[Message]) -> None:
        size = body_len + 5
        truncated = len(body) < body_len
        letter = chr(typ)
        if direction == C2S:
            msg = self._frontend(letter, body, size, ts_ns, truncated)
            if letter == "B":
                self._bind_formats.append(msg.result_formats)
            out.append(msg)
            return
        self.row_budget = self.rows_per_result
        if letter == "2" and self._bind_formats:
            formats = self._bind_formats.popleft()
            self.row_formats = () if len(formats) == 1 else formats
            self.row_format_all = formats[0] if len(formats) == 1 else 0
        if letter == "T":
            names, formats, oids = row_description(body)
            self.row_formats = formats
            self.row_format_all = 0
            out.append(RowDescription(ts_ns, size, names, formats, oids))
        elif letter in "EN":
            severity, code, message = error_fields(body)
            out.append(ErrorNotice(letter, ts_ns, size, severity, code, message))
        elif letter == "t":
            count = _I16.unpack_from(body, 0)[0] if len(body) >= 2 else 0
            oids = tuple(_U32.unpack_from(body, 2 + 4 * i)[0] for i in range(max(count, 0))
                         if 2 + 4 * i + 4 <= len(body))
            out.append(ParameterDescription(ts_ns, size, oids))
        elif letter in "CZ":
            out.append(Backend(letter, ts_ns, size, body.rstrip(b"\0").decode("utf-8", "replace")))
        else:
            out.append(Backend(letter, ts_ns, size))

    def _frontend(self, letter: str, body: bytes, size: int, ts_ns: int, truncated: bool) -> Frontend:
        if letter == "Q":
            sql, _ = cstr(body, 0)
            return Frontend("Q", ts_ns, size, sql=sql, truncated=truncated)
        if letter == "P":
            name, pos = cstr(body, 0)
            sql, pos = cstr(body, pos)
            oids: tuple[int, ...] = ()
            if pos + 2 <= len(body):
                count = _I16.unpack_from(body, pos)[0]
                pos += 2
                oids = tuple(_U32.unpack_from(body, pos + 4 * i)[0] for i in range(max(count, 0))
                             if pos + 4 * i + 4 <= len(body))
            return Frontend("P", ts_ns, size, sql=sql, name=name, param_oids=oids, truncated=truncated)
        if letter == "B":
            return _bind(body, size, ts_ns, truncated, self.max_row_length)
        if letter == "E":
            portal, _ = cstr(body, 0)
            return Frontend("E", ts_ns, size, name=portal)
        if letter in "DC" and body:
            name, _ = cstr(body, 1)
            return Frontend(letter, ts_ns, size, kind=chr(body[0]), name=name)
        return Frontend(letter, ts_ns, size)

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount


class _RowBatch:
    __slots__ = ("copy", "count", "rows", "size", "ts_ns")

    def __init__(self, ts_ns: int, copy: bool) -> None:
        self.ts_ns = ts_ns
        self.copy = copy
        self.count = 0
        self.size = 0
        self.rows: list[tuple[bytes | None, ...]] = []


def _finish_streamed_row(parser: PgsqlParser, side: _Side, body: bytes, typ: int) -> None:
    """A row whose body streamed over several feeds is complete: count it (rows are counted once whole)."""
    copy = typ == 0x64
    batch = parser._batch(side.start_ts, copy)
    batch.count += 1
    batch.size += 5 + side.length
    if side.keep:
        batch.rows.append(parser._decode_row(body, copy))


def _plausible(data: bytes, valid: frozenset[int]) -> bool | None:
    """A message header at the start of `data`, and at the next boundaries when they fall inside `data`."""
    pos = 0
    for _ in range(3):
        if len(data) - pos < 5:
            if pos == 0:
                return None
            return len(data) == pos or data[pos] in valid  # the next header has only begun
        typ = data[pos]
        length = _I32.unpack_from(data, pos + 1)[0]
        if typ not in valid or not 4 <= length <= PLAUSIBLE_MESSAGE:
            return False
        pos += 1 + length
        if pos >= len(data):
            return True
    return True


def _bind(body: bytes, size: int, ts_ns: int, truncated: bool, max_value: int) -> Frontend:
    portal, pos = cstr(body, 0)
    statement, pos = cstr(body, pos)
    formats: list[int] = []
    params: list[bytes | None] = []
    result_formats: list[int] = []
    try:
        count = _I16.unpack_from(body, pos)[0]
        pos += 2
        for _ in range(max(count, 0)):
            formats.append(_I16.unpack_from(body, pos)[0])
            pos += 2
        count = _I16.unpack_from(body, pos)[0]
        pos += 2
        for _ in range(max(count, 0)):
            length = _I32.unpack_from(body, pos)[0]
            pos += 4
            if length < 0:
                params.append(None)
                continue
            params.append(body[pos:pos + min(length, max_value)])
            pos += length
        count = _I16.unpack_from(body, pos)[0]
        pos += 2
        for _ in range(max(count, 0)):
            result_formats.append(_I16.unpack_from(body, pos)[0])
            pos += 2
    except struct.error:
        truncated = True
    return Frontend("B", ts_ns, size, name=portal, statement=statement, param_formats=tuple(formats),
                    params=tuple(params), result_formats=tuple(result_formats), truncated=truncated)


PgsqlParser._STEPS = {
    SideState.STARTUP: PgsqlParser._startup_step,
    SideState.MESSAGE: PgsqlParser._message_step,
    SideState.BODY: PgsqlParser._body_step,
}
