"""Sans-IO RESP parsing (RESP2 and RESP3): the bytes of one direction in, rendered messages out.

The parser is incremental: a message that arrives in many pieces is parsed
as the pieces come, never re-read from its start, and a bulk string is
consumed as it streams by.  Only the first `max_text` bytes of a message's
rendering are kept, so a 500 MB value or an RDB snapshot costs no memory.

Rendering follows Packetbeat: a request is its arguments joined by spaces
(`SET key1 Hello`); a reply is its text, `nil` for a null, `""` for an
empty string and `[a, nil, [1, b]]` for an array.  RESP3 adds `{k: v}` for
maps, `true`/`false`, doubles and big numbers as sent, verbatim strings
without their format prefix; attributes are read and dropped.

The replication stream is recognised on the server side: after
`+FULLRESYNC` the snapshot (`$<len>` with no trailing CRLF, or the diskless
`$EOF:<mark>` form) is skipped by counting, and every later message is
marked `replicated` (the master's write stream, not replies).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.crlf import take_crlf
from agent.transport.types import Direction

PROTOCOL = "redis"

MAX_TEXT_BYTES = 1 << 20  # rendering kept per message; the rest is counted, not stored
MAX_LINE_BYTES = 1 << 20  # a type line (simple string, error, header) without CRLF
MAX_INLINE_BYTES = 64 * 1024  # Redis' own limit for inline commands
MAX_DEPTH = 64  # nested aggregates
MAX_BULK_BYTES = 512 << 20  # Redis' default proto-max-bulk-len
MAX_AGGREGATE_ITEMS = (1 << 31) - 1
MAX_ARGS_KEPT = 8  # top-level elements remembered for the plugin (method, resource, pub/sub kind)
RDB_EOF_MARK_LEN = 40

TRUNCATION_MARK = b"..."

_NORMAL, _AWAIT_RDB, _REPLICATION = 0, 1, 2

_AGGREGATES = frozenset(b"*~>%|")
_BULKS = frozenset(b"$!=")
_SCALARS = frozenset(b"+-:(,#_")
_NEWLINE = 0x0A
_LINE_REPLIES = frozenset(b"+:-")


@dataclass(frozen=True, slots=True)
class RespMessage:
    """One complete top-level message of a direction."""

    ts_ns: int  # when its first byte arrived
    size: int  # bytes on the wire, attributes included
    kind: str  # the RESP type byte ("*", "+", ">", ...), "inline" or "rdb"
    text: str  # Packetbeat's rendering (a request's command line, a reply's value)
    args: tuple[bytes, ...] = ()  # first MAX_ARGS_KEPT top-level elements of an aggregate, rendered
    nargs: int = 0  # number of top-level elements of an aggregate
    is_error: bool = False  # a top-level error reply
    truncated: bool = False  # the rendering was cut at max_text bytes
    replicated: bool = False  # part of a master's replication stream (after the snapshot)


class _Frame:
    """An aggregate being read: how many elements are still due, and those kept so far."""

    __slots__ = ("count", "items", "kind", "remaining")

    def __init__(self, kind: int, count: int, remaining: int) -> None:
        self.kind = kind
        self.count = count
        self.remaining = remaining
        self.items: list[bytes] = []


def _parse_int(raw: bytes, buf: ReceiveBuffer, at: int, what: str) -> int:
    if raw.isdigit() and len(raw) <= 19:
        return int(raw)
    if raw[:1] == b"-" and raw[1:].isdigit() and len(raw) <= 20:
        return int(raw)
    raise buf.error(f"invalid {what} {raw[:32]!r}", at)


def split_inline(line: bytes) -> list[bytes]:
    """Arguments of an inline command, with Redis' quoting rules ("..." with escapes, '...')."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while i < n:
            c = line[i]
            if quote == 0x22:  # inside "..."
                if c == 0x5C and i + 1 < n:  # backslash
                    i += 1
                    nxt = line[i]
                    if nxt == 0x78 and i + 2 < n and _is_hex(line[i + 1:i + 3]):  # \xHH
                        current.append(int(line[i + 1:i + 3], 16))
                        i += 2
                    else:
                        current += _ESCAPES.get(nxt, bytes((nxt,)))
                elif c == 0x22:
                    quote = 0
                    i += 1
                    break
                else:
                    current.append(c)
            elif quote == 0x27:  # inside '...'
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    current.append(0x27)
                    i += 1
                elif c == 0x27:
                    quote = 0
                    i += 1
                    break
                else:
                    current.append(c)
            elif c in b" \t\r\n\v\f":
                break
            elif c in b"\"'" and not current:
                quote = c
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


def _flat_items(buf: bytes | bytearray, i: int, n: int, simple: bool, items: list[bytes], max_text: int) -> int:
    """The `n` bulk (or, with `simple`, +/: line) elements of a flat array at `i`, appended to `items`;
    where the array ends, or -1 when it is not whole here, not flat or longer than `max_text`."""
    end = len(buf)
    total = 0
    for _ in range(n):
        if i >= end:
            return -1
        c = buf[i]
        nl = buf.find(b"\r\n", i)
        if nl < 0:
            return -1
        if c == 0x24:  # $
            raw = buf[i + 1:nl]
            if raw == b"-1":
                items.append(b"nil")
                i = nl + 2
                continue
            if not raw.isdigit():
                return -1
            start = nl + 2
            stop = start + int(raw)
            if stop + 2 > end or buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                return -1
            item = bytes(buf[start:stop])
            i = stop + 2
        elif c in b"+:" and simple:
            item = bytes(buf[i + 1:nl])
            i = nl + 2
        else:
            return -1
        total += len(item) + 2
        items.append(item)
    return i if total <= max_text else -1


_ESCAPES = {0x6E: b"\n", 0x72: b"\r", 0x74: b"\t", 0x62: b"\b", 0x61: b"\a"}


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


class RespParser:
    """Incremental parser for one direction of a Redis connection.

    `requests=True` parses what a client sends (arrays of bulk strings or
    inline commands); `requests=False` parses what a server sends.
    """

    def __init__(self, direction: Direction, *, max_text: int = MAX_TEXT_BYTES) -> None:
        self.direction = direction
        self.requests = direction is Direction.TO_SERVER
        self.max_text = max_text
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_BULK_BYTES)
        self._mode = _NORMAL
        self._new_message()

    # -- state -------------------------------------------------------------

    def _new_message(self) -> None:
        self._start = -1  # stream offset where the current message began; -1 between messages
        self._ts = 0
        self._stack: list[_Frame] = []
        self._kept = 0
        self._truncated = False
        self._is_error = False
        self._kind = ""
        self._bulk_left = -1  # >= 0 while inside a bulk body
        self._bulk_crlf = True
        self._bulk_type = 0
        self._bulk_parts: list[bytes] = []
        self._eof_mark = b""  # diskless snapshot: the 40-byte end mark
        self._top_items: list[bytes] = []
        self._top_count = 0

    def reset(self) -> None:
        """Forget everything buffered (after a parse error or a gap: RESP has no framing to skip a hole)."""
        self.buf.clear()
        self._mode = _NORMAL
        self._new_message()

    @property
    def idle(self) -> bool:
        """No partial message is buffered."""
        return self._start < 0 and not self.buf.unread

    @property
    def buffered(self) -> int:
        return self.buf.unread

    @property
    def replicating(self) -> bool:
        return self._mode != _NORMAL

    def expect_snapshot(self) -> None:
        """The next bulk string is an RDB snapshot (the reply to SYNC)."""
        if self._mode == _NORMAL:
            self._mode = _AWAIT_RDB

    # -- feeding -------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> list[RespMessage]:
        """Parse what `data` completes; partial input stays buffered (bounded)."""
        rb = self.buf
        if data:
            rb.feed(data, ts_ns)
        out: list[RespMessage] = []
        buf = rb.data
        fast = self._fast
        while True:
            if self._start < 0:
                pos = rb.pos
                if not self.requests:
                    # A master sends bare newlines as keep-alives while it prepares a snapshot.
                    while pos < len(buf) and buf[pos] == _NEWLINE:
                        pos += 1
                    rb.pos = pos
                if pos >= len(buf):
                    break
                if self._mode != _AWAIT_RDB and fast(buf, pos, ts_ns, out):
                    continue
                self._start = rb.base + pos
                self._ts = ts_ns
            if self._bulk_left >= 0 or self._eof_mark:
                if not self._read_bulk(out):
                    break
                continue
            if self.requests and not self._stack and buf[rb.pos] != 0x2A:
                if not self._read_inline(out):
                    break
                continue
            if not self._read_line(out):
                break
        return out

    def _fast(self, buf: bytes | bytearray, pos: int, ts_ns: int, out: list[RespMessage]) -> bool:
        """The common case in one go: a whole scalar, bulk or flat array already buffered.

        Anything else (split, nested, big, odd) goes to the incremental path,
        which gives the same result; this only saves the per-element state.
        """
        t = buf[pos]
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return False
        if t == 0x2A:  # *
            return self._fast_array(buf, pos, nl, ts_ns, out)
        if self.requests:
            return False
        if t in _LINE_REPLIES:  # + : -
            if t == 0x2B and self._mode == _NORMAL and buf.startswith((b"+FULLRESYNC", b"+CONTINUE"), pos):
                return False
            text = bytes(buf[pos + 1:nl])
            if len(text) > self.max_text:
                return False
            return self._fast_done(out, ts_ns, pos, nl + 2, chr(t), text, (), 0, t == 0x2D)
        if t == 0x24:  # $
            raw = buf[pos + 1:nl]
            if raw == b"-1":
                return self._fast_done(out, ts_ns, pos, nl + 2, "$", b"nil", (), 0, False)
            if not raw.isdigit() or len(raw) > 9:
                return False
            start = nl + 2
            stop = start + int(raw)
            if stop - start > self.max_text or stop + 2 > len(buf) or buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                return False
            return self._fast_done(out, ts_ns, pos, stop + 2, "$", bytes(buf[start:stop]), (), 0, False)
        return False

    def _fast_array(self, buf: bytes | bytearray, pos: int, nl: int, ts_ns: int, out: list[RespMessage]) -> bool:
        raw = buf[pos + 1:nl]
        if not raw.isdigit() or len(raw) > 4:
            return False
        n = int(raw)
        if n == 0 and self.requests:
            return False
        items: list[bytes] = []
        end = _flat_items(buf, nl + 2, n, not self.requests, items, self.max_text)
        if end < 0:
            return False
        text = b" ".join(items) if self.requests else b"[" + b", ".join(items) + b"]"
        return self._fast_done(out, ts_ns, pos, end, "*", text, tuple(items[:MAX_ARGS_KEPT]), n, False)

    def _fast_done(self, out: list[RespMessage], ts_ns: int, pos: int, end: int, kind: str, text: bytes,
                   args: tuple[bytes, ...], n: int, is_error: bool) -> bool:
        self.buf.pos = end
        out.append(RespMessage(ts_ns, end - pos, kind, text.decode("utf-8", "replace"), args, n, is_error, False,
                               self._mode == _REPLICATION))
        return True

    def _read_inline(self, out: list[RespMessage]) -> bool:
        line = self.buf.line(MAX_INLINE_BYTES)
        if line is None:
            return False
        args = split_inline(line.rstrip(b"\r"))
        if not args:  # Redis ignores an empty inline command (no reply)
            self._new_message()
            return True
        self._kind = "inline"
        text = b" ".join(args)
        if len(text) > self.max_text:
            text = text[:self.max_text]
            self._truncated = True
        self._top_items = args[:MAX_ARGS_KEPT]
        self._top_count = len(args)
        self._complete(out, text)
        return True

    def _read_line(self, out: list[RespMessage]) -> bool:
        rb = self.buf
        pos = rb.pos
        line = rb.crlf_line(MAX_LINE_BYTES)
        if line is None:
            return False
        t = line[0] if line else 0x0D
        body = line[1:]
        if not self._stack:
            self._kind = chr(t)
        if t in _SCALARS:
            self._scalar(t, body, pos, out)
        elif t in _BULKS:
            if self._mode == _AWAIT_RDB and not self._stack and t == 0x24:
                return self._start_snapshot(body, pos)
            self._bulk_header(t, body, pos, out)
        elif t in _AGGREGATES:
            self._aggregate_header(t, body, pos, out)
        else:
            raise rb.error(f"unexpected RESP type byte {bytes((t,))!r}", pos)
        return True

    def _scalar(self, t: int, body: bytes, pos: int, out: list[RespMessage]) -> None:
        if t == 0x2D:  # -error
            if not self._stack:
                self._is_error = True
        elif t == 0x23:  # #t / #f
            if body not in (b"t", b"f"):
                raise self.buf.error(f"invalid boolean {body[:8]!r}", pos)
            body = b"true" if body == b"t" else b"false"
        elif t == 0x5F:  # _ null
            body = b"nil"
        self._value(out, self._keep(body))

    def _bulk_header(self, t: int, body: bytes, pos: int, out: list[RespMessage]) -> None:
        rb = self.buf
        n = _parse_int(body, rb, pos, "bulk length")
        if n == -1 and t == 0x24:
            self._value(out, b"nil")
            return
        if n < 0 or n > MAX_BULK_BYTES:
            raise rb.error(f"bulk length {n} out of range", pos)
        self._bulk_left = n
        self._bulk_type = t
        self._bulk_crlf = True
        self._bulk_parts = []

    def _aggregate_header(self, t: int, body: bytes, pos: int, out: list[RespMessage]) -> None:
        rb = self.buf
        depth = len(self._stack)
        n = _parse_int(body, rb, pos, "aggregate length")
        if n == -1 and t in b"*%":
            if depth == 0 and self.requests:
                self._new_message()  # a null multibulk from a client is ignored by Redis
                return
            self._value(out, b"nil")
            return
        if n < 0 or n > MAX_AGGREGATE_ITEMS:
            raise rb.error(f"aggregate length {n} out of range", pos)
        if depth >= MAX_DEPTH:
            raise rb.error(f"aggregates nested deeper than {MAX_DEPTH}", pos)
        if n == 0:
            if depth == 0 and self.requests:
                self._new_message()  # Redis ignores an empty multibulk
                return
            if t == 0x7C:  # an empty attribute: nothing to attach
                return
            self._stack.append(_Frame(t, 0, 0))
            self._value(out, None)
            return
        paired = t in b"%|"
        self._stack.append(_Frame(t, n, 2 * n if paired else n))

    def _start_snapshot(self, body: bytes, pos: int) -> bool:
        self._kind = "rdb"
        if body.startswith(b"EOF:"):
            mark = body[4:]
            if len(mark) != RDB_EOF_MARK_LEN:
                raise self.buf.error("invalid diskless snapshot mark", pos)
            self._eof_mark = mark
            return True
        n = _parse_int(body, self.buf, pos, "snapshot length")
        if n < 0:
            raise self.buf.error(f"snapshot length {n} out of range", pos)
        self._bulk_left = n
        self._bulk_type = 0x24
        self._bulk_crlf = False
        self._bulk_parts = []
        return True

    def _read_bulk(self, out: list[RespMessage]) -> bool:
        rb = self.buf
        buf = rb.data
        if self._eof_mark:
            idx = buf.find(self._eof_mark, rb.pos)
            if idx < 0:
                # Keep only what could be the start of the mark.
                rb.pos = max(rb.pos, len(buf) - RDB_EOF_MARK_LEN + 1)
                return False
            rb.pos = idx + RDB_EOF_MARK_LEN
            self._eof_mark = b""
            self._mode = _REPLICATION
            self._complete(out, b"")
            return True
        left = self._bulk_left
        if left:
            pos = rb.pos
            take = min(left, len(buf) - pos)
            if self._bulk_crlf:
                room = self.max_text - self._kept
                keep = min(take, room) if room > 0 else 0
                if keep:
                    self._bulk_parts.append(bytes(buf[pos:pos + keep]))
                    self._kept += keep
                if keep < take:
                    self._truncated = True
            rb.pos = pos + take
            left -= take
            self._bulk_left = left
            if left:
                return False
        if self._bulk_crlf and not take_crlf(rb, "bulk string"):
            return False
        self._bulk_left = -1
        if not self._bulk_crlf:  # the snapshot after +FULLRESYNC / SYNC
            self._mode = _REPLICATION
            self._complete(out, b"")
            return True
        value = b"".join(self._bulk_parts)
        self._bulk_parts = []
        t = self._bulk_type
        if t == 0x3D and value[3:4] == b":":  # =txt:... verbatim string
            value = value[4:]
        elif t == 0x21 and not self._stack:  # !blob error
            self._is_error = True
        self._value(out, value)
        return True

    def _keep(self, value: bytes) -> bytes:
        room = self.max_text - self._kept
        if len(value) > room:
            self._truncated = True
            value = value[:max(room, 0)]
        self._kept += len(value)
        return value

    def _value(self, out: list[RespMessage], value: bytes | None) -> None:
        """A complete element (None: the aggregate on top of the stack is already complete)."""
        stack = self._stack
        while True:
            if value is not None:
                if not stack:
                    self._complete(out, value)
                    return
                frame = stack[-1]
                if self._kept < self.max_text:
                    frame.items.append(value)
                    self._kept += 2  # the separator
                else:
                    self._truncated = True
                frame.remaining -= 1
                if frame.remaining > 0:
                    return
            frame = stack.pop()
            if frame.kind == 0x7C:  # attribute: metadata for the next value, not an element
                return
            value = self._render(frame, top=not stack)

    def _render(self, frame: _Frame, top: bool) -> bytes:
        items = frame.items
        if top:
            self._top_items = items[:MAX_ARGS_KEPT]
            self._top_count = frame.count
            if self.requests:
                return b" ".join(items)
        if frame.kind == 0x25:  # %map
            pairs = [items[i] + b": " + items[i + 1] for i in range(0, len(items) - 1, 2)]
            return b"{" + b", ".join(pairs) + b"}"
        return b"[" + b", ".join(items) + b"]"

    def _complete(self, out: list[RespMessage], text: bytes) -> None:
        end = self.buf.offset
        truncated = self._truncated
        if len(text) > self.max_text:
            text = text[:self.max_text]
            truncated = True
        if truncated:
            text += TRUNCATION_MARK
        kind = self._kind
        replicated = self._mode == _REPLICATION and kind != "rdb"
        msg = RespMessage(self._ts, end - self._start, kind, text.decode("utf-8", "replace"),
                          tuple(self._top_items), self._top_count, self._is_error, truncated, replicated)
        out.append(msg)
        if not self.requests and kind == "+" and self._mode == _NORMAL:
            if text.startswith(b"FULLRESYNC"):
                self._mode = _AWAIT_RDB
            elif text.startswith(b"CONTINUE"):
                self._mode = _REPLICATION
        self._new_message()
