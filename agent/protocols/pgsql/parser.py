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
from dataclasses import dataclass

from agent.transport.session import ParseError
from agent.transport.types import Direction

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


# -- messages -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Startup:
    ts_ns: int
    kind: str  # "startup", "ssl", "gss", "cancel"
    user: str = ""
    database: str = ""


@dataclass(frozen=True, slots=True)
class EncryptionReply:
    ts_ns: int
    accepted: bool
    tls: bool = False  # an SSLRequest accepted: TLS follows (a GSSENCRequest accepted: GSSAPI encryption)


@dataclass(frozen=True, slots=True)
class Frontend:
    """A client message: type (one letter) and its fields, as far as pktbeat uses them."""

    type: str
    ts_ns: int
    size: int
    sql: str = ""  # Query, Parse
    name: str = ""  # Parse: statement; Bind/Execute: portal; Describe/Close: the object
    statement: str = ""  # Bind: the statement
    kind: str = ""  # Describe/Close: "S" or "P"
    param_oids: tuple[int, ...] = ()  # Parse
    param_formats: tuple[int, ...] = ()  # Bind
    params: tuple[bytes | None, ...] = ()  # Bind values (kept prefix)
    result_formats: tuple[int, ...] = ()  # Bind
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class RowDescription:
    ts_ns: int
    size: int
    names: tuple[str, ...]
    formats: tuple[int, ...]
    type_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DataRows:
    """Consecutive DataRow (copy=False) or server CopyData (copy=True) messages."""

    ts_ns: int
    size: int
    count: int
    rows: tuple[tuple[bytes | None, ...], ...]
    copy: bool = False
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class Backend:
    """Any other server message: CommandComplete (text = tag), ReadyForQuery (text = status), ..."""

    type: str
    ts_ns: int
    size: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class ErrorNotice:
    """ErrorResponse (type "E") or NoticeResponse (type "N")."""

    type: str
    ts_ns: int
    size: int
    severity: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    ts_ns: int
    size: int
    oids: tuple[int, ...]


Message = (Startup | EncryptionReply | Frontend | RowDescription | DataRows | Backend | ErrorNotice
           | ParameterDescription)


# -- per-direction framing ----------------------------------------------------------------------------


class _Side:
    __slots__ = (
        "buf",
        "held",
        "hunting",
        "keep",
        "kept",
        "left",
        "length",
        "prev_ts",
        "skip_type",
        "start_ts",
        "typ",
        "untyped",
    )

    def __init__(self, untyped: bool) -> None:
        self.buf = bytearray()
        self.held = b""  # bytes too few to judge a message boundary yet
        self.hunting = True
        self.untyped = untyped  # the next client message may be a startup-phase message
        self.typ = -1  # type of the message in progress (-1: none)
        self.length = 0
        self.left = 0
        self.keep = 0
        self.kept = bytearray()
        self.skip_type = -1
        self.start_ts = 0
        self.prev_ts = 0

    def reset(self) -> None:
        self.held = b""
        self.buf.clear()
        self.typ = -1
        self.kept = bytearray()
        self.left = 0


def _cstr(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end == -1:
        return data[pos:].decode("utf-8", "replace"), len(data)
    return data[pos:end].decode("utf-8", "replace"), end + 1


class PgsqlParser:
    """Both directions of one PostgreSQL connection."""

    def __init__(self, *, max_row_length: int = 1024) -> None:
        self.max_row_length = max_row_length
        self.rows_per_result = 0  # rows of each result the session wants decoded (its max_rows, or 0)
        self.row_budget = 0  # rows still to decode in the current result
        self.row_formats: tuple[int, ...] = ()  # per column: 0 text, 1 binary (from RowDescription / Bind)
        self.row_format_all = 0  # for columns past row_formats (Bind may give one format for all)
        self._bind_formats: deque[tuple[int, ...]] = deque(maxlen=MAX_BINDS)
        self._sides = (_Side(untyped=True), _Side(untyped=False))
        self.encrypted = False
        self._expect_encryption_reply = False
        self._encryption = ""  # "ssl" or "gss": what the pending encryption request asked for
        self._rows: _RowBatch | None = None
        self._pending_batches: list[_RowBatch] = []
        self.counters: dict[str, int] = {}

    # -- public ----------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held for messages not yet complete, both directions."""
        return sum(len(side.buf) + len(side.held) + len(side.kept) for side in self._sides)

    def feed(self, direction: Direction, data: bytes, ts_ns: int, out: list[Message]) -> None:
        if self.encrypted or not data:
            return
        side = self._sides[int(direction)]
        if side.hunting:
            if side.held:
                data = side.held + data
            verdict = self._probe(direction, side, data)
            if verdict is None and len(data) < PROBE_MAX:
                side.held = data
                return
            side.held = b""
            if not verdict:
                self._count("resync_skipped_bytes", len(data))
                return
        buf = side.buf
        if not buf and side.typ == -1:
            side.prev_ts = ts_ns
        boundary = len(buf)
        buf += data
        try:
            self._drain(direction, side, ts_ns, boundary, out)
        finally:
            self._flush_rows(out)

    def gap(self, direction: Direction, nbytes: int) -> None:
        side = self._sides[int(direction)]
        side.reset()
        side.hunting = True

    def recover(self, direction: Direction) -> None:
        side = self._sides[int(direction)]
        side.reset()
        side.hunting = True

    def take_rest(self, direction: Direction) -> bytes:
        """The bytes of `direction` buffered and not parsed (after an accepted SSLRequest: the start of TLS)."""
        side = self._sides[int(direction)]
        rest = side.held + bytes(side.buf)
        side.reset()
        side.held = b""
        return rest

    def in_message(self, direction: Direction) -> bool:
        side = self._sides[int(direction)]
        return side.typ != -1 or bool(side.buf)

    # -- framing ----------------------------------------------------------------------------------------

    def _drain(self, direction: Direction, side: _Side, ts_ns: int, boundary: int, out: list[Message]) -> None:
        buf = side.buf
        pos = 0
        end = len(buf)
        client = direction == C2S
        valid = FRONTEND_TYPES if client else BACKEND_TYPES
        while True:
            if side.typ != -1:  # a message whose body is still streaming in
                take = min(side.left, end - pos)
                room = side.keep - len(side.kept)
                if room > 0:
                    side.kept += buf[pos:pos + min(take, room)]
                pos += take
                side.left -= take
                if side.left:
                    break
                typ = side.typ
                side.typ = -1
                body = bytes(side.kept)
                side.kept = bytearray()
                if not client and typ in (0x44, 0x64):
                    _finish_streamed_row(self, side, body, typ)
                    continue
                self._message(direction, typ, body, side.length, side.start_ts, out)
                if self.encrypted:
                    break
                continue
            avail = end - pos
            if not avail:
                break
            msg_ts = side.prev_ts if pos < boundary else ts_ns
            if client and self._expect_encryption_reply:
                break  # what the client sends before the answer to its SSLRequest may be TLS: held
            if client and side.untyped:
                if avail < 8:
                    break
                length = _I32.unpack_from(buf, pos)[0]
                if not 8 <= length <= 10000:
                    side.untyped = False
                    continue
                if avail < length:
                    break
                self._startup(bytes(buf[pos:pos + length]), msg_ts, out)
                pos += length
                continue
            if not client and self._expect_encryption_reply:
                self._expect_encryption_reply = False
                reply = buf[pos]
                if reply in b"SG":
                    out.append(EncryptionReply(msg_ts, True, reply == ord("S") and self._encryption == "ssl"))
                    self.encrypted = True
                    pos += 1  # what follows is encrypted: kept for `take_rest`
                    break
                if reply == ord("N"):
                    out.append(EncryptionReply(msg_ts, False))
                    pos += 1
                    continue
                # an old server answers with an ErrorResponse: read it as a message
            if avail < 5:
                break
            typ = buf[pos]
            length = _I32.unpack_from(buf, pos + 1)[0]
            if typ not in valid or length < 4 or length > MAX_MESSAGE:
                side.buf = bytearray()
                side.typ = -1
                raise ParseError(PROTOCOL, direction, pos, f"invalid message: type {typ:#04x}, length {length}")
            body_len = length - 4
            if typ == 0x44 and not client:  # DataRow
                self._data_row(buf, pos, body_len, avail, side, msg_ts, copy=False)
                if side.typ == -1:
                    pos += 5 + body_len
                    continue
                pos += 5
                continue
            if typ == 0x64 and not client:  # server CopyData
                self._data_row(buf, pos, body_len, avail, side, msg_ts, copy=True)
                if side.typ == -1:
                    pos += 5 + body_len
                    continue
                pos += 5
                continue
            self._flush_rows(out)
            if avail >= 5 + body_len and body_len <= MAX_KEPT:
                body = bytes(buf[pos + 5:pos + 5 + body_len])
                pos += 5 + body_len
                self._message(direction, typ, body, body_len, msg_ts, out)
                if self.encrypted:
                    break
                continue
            side.typ = typ
            side.length = body_len
            side.left = body_len
            side.keep = MAX_KEPT
            side.kept = bytearray()
            side.start_ts = msg_ts
            pos += 5
        if pos >= len(buf):
            side.buf = bytearray()
        else:
            if pos >= boundary:
                side.prev_ts = ts_ns
            del buf[:pos]

    # -- data rows -----------------------------------------------------------------------------------------

    def _data_row(self, buf: bytearray, pos: int, body_len: int, avail: int, side: _Side, ts_ns: int,
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
        if direction == C2S and side.untyped:
            if len(data) < 8:
                return None
            length = _I32.unpack_from(data, 0)[0]
            code = _I32.unpack_from(data, 4)[0]
            if 8 <= length <= 10000 and code in (PROTOCOL_3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST):
                side.hunting = False
                self._sides[1].hunting = False  # a connection seen from its start
                self._sides[1].held = b""
                return True
            side.untyped = False
        valid = FRONTEND_TYPES if direction == C2S else BACKEND_TYPES
        verdict = _plausible(data, valid)
        if verdict:
            side.hunting = False
            side.buf.clear()
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
            client.untyped = False
            out.append(Startup(ts_ns, "cancel"))
            return
        client.untyped = False
        params: dict[str, str] = {}
        pos = 8
        while pos < len(message) and message[pos]:
            key, pos = _cstr(message, pos)
            value, pos = _cstr(message, pos)
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
            names, formats, oids = _row_description(body)
            self.row_formats = formats
            self.row_format_all = 0
            out.append(RowDescription(ts_ns, size, names, formats, oids))
        elif letter in "EN":
            severity, code, message = _error_fields(body)
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
            sql, _ = _cstr(body, 0)
            return Frontend("Q", ts_ns, size, sql=sql, truncated=truncated)
        if letter == "P":
            name, pos = _cstr(body, 0)
            sql, pos = _cstr(body, pos)
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
            portal, _ = _cstr(body, 0)
            return Frontend("E", ts_ns, size, name=portal)
        if letter in "DC" and body:
            name, _ = _cstr(body, 1)
            return Frontend(letter, ts_ns, size, kind=chr(body[0]), name=name)
        return Frontend(letter, ts_ns, size)

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


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


def _row_description(body: bytes) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    if len(body) < 2:
        return (), (), ()
    count = _I16.unpack_from(body, 0)[0]
    pos = 2
    names: list[str] = []
    formats: list[int] = []
    oids: list[int] = []
    for _ in range(max(count, 0)):
        name, pos = _cstr(body, pos)
        if pos + 18 > len(body):
            break
        oids.append(_U32.unpack_from(body, pos + 6)[0])
        formats.append(_I16.unpack_from(body, pos + 16)[0])
        names.append(name)
        pos += 18
    return tuple(names), tuple(formats), tuple(oids)


def _error_fields(body: bytes) -> tuple[str, str, str]:
    severity = code = message = ""
    pos = 0
    while pos < len(body) and body[pos]:
        field = body[pos]
        value, pos = _cstr(body, pos + 1)
        if field == 0x53:  # S
            severity = value
        elif field == 0x43:  # C
            code = value
        elif field == 0x4D:  # M
            message = value
    return severity, code, message


def _bind(body: bytes, size: int, ts_ns: int, truncated: bool, max_value: int) -> Frontend:
    portal, pos = _cstr(body, 0)
    statement, pos = _cstr(body, pos)
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
