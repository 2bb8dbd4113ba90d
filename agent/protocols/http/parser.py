"""Sans-IO HTTP/1.x framing, one parser per TCP direction.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes, NamedTuple messages built
with `tuple.__new__`); an edit is used natively only after set-up rebuilds
(`scripts/accel.py build`).

Bytes go in with `feed`, which returns the complete `HttpMessage`s they make
(h11's model underneath: `receive` appends, `next_message` returns each
complete message, or None when more bytes are needed) and raises `ParseError`
on input that is not HTTP.  Its bytes sit in the shared receive buffer.
After a `ParseError`, a gap in a header block, or a connection picked up
mid-stream, `resync` skips to the next line that starts a message.

Framing follows RFC 9112 and Packetbeat's HTTP parser:

- a request body is delimited by Content-Length or chunked coding, else empty;
- a response to HEAD, a 1xx, 204 or 304 response never has a body; a 2xx
  answer to CONNECT starts a tunnel; otherwise chunked, then Content-Length,
  else the body runs to the end of the connection (HTTP/1.0 style);
- chunk extensions are ignored, trailer fields are consumed;
- a gap inside a body keeps the message (with Packetbeat's packet-loss note),
  a gap anywhere else drops the partial message and resynchronises;
- a bare LF ends a start line, header line, chunk line or trailer line as
  well as CRLF does (RFC 9112 section 2.2 lets a recipient accept it; real
  servers and clients send it): the message gets the note NOTE_BARE_LF.
  CRLF heads take the fast path; a head with a bare LF is re-read line by line.

Memory is bounded: a header block (or trailer block) longer than
`header_limit`, a chunk-size line longer than `MAX_CHUNK_LINE`, or a start
line that never ends is a `ParseError`; body bytes beyond `max_message_size`
are counted, not stored.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from agent.metrics import Counters
from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.http import head as heads
from agent.protocols.http.head import EMPTY_HEAD, Head
from agent.protocols.http.messages import (
    HEADER_LIMIT,
    MAX_PENDING_METHODS,
    NOTE_BARE_LF,
    NOTE_LOSS_REQUEST,
    NOTE_LOSS_RESPONSE,
    HttpMessage,
    ParserConfig,
)
from agent.protocols.stream import Gap
from agent.transport.types import Direction

PROTOCOL: Final = "http"

# Parser states
_HEAD: Final = 0  # waiting for (the rest of) a start line and header block
_BODY_LENGTH: Final = 1  # Content-Length body
_BODY_CLOSE: Final = 2  # body until the connection closes
_CHUNK_SIZE: Final = 3  # chunk-size line
_CHUNK_DATA: Final = 4
_CHUNK_CRLF: Final = 5  # the CRLF after chunk data
_TRAILERS: Final = 6  # after the last chunk: trailer fields, then an empty line
_RESYNC: Final = 7  # lost: looking for the start of the next message

_COUNT_ONLY_STATES: Final = (_BODY_LENGTH, _CHUNK_DATA)  # body bytes that may be counted without buffering
_BODY_STATES: Final = frozenset({_BODY_LENGTH, _BODY_CLOSE, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS})

_new_message: Final = tuple.__new__
_NO_MESSAGES: list[HttpMessage] = []  # what feed returns when nothing completed (shared: never appended to)


class HttpStreamParser:
    """Framing state of one direction of one connection."""

    __slots__ = ("_at_line_start", "_body", "_body_bytes", "_counters", "_detached", "_direction", "_head",
                 "_head_scan", "_header_limit", "_may_switch", "_methods", "_notes", "_remaining", "_save", "_send",
                 "_size", "_start_checked", "_state", "_store_cap", "_stored", "_truncated", "buf", "config",
                 "paused")

    def __init__(self, direction: Direction, config: ParserConfig, counters: Counters,
                 methods: deque[bytes] | None = None) -> None:
        self.config = config
        self._header_limit = config.header_limit
        self._direction = direction
        self._counters = counters
        # Methods of requests whose response head is still to come: HEAD and CONNECT change response framing.
        self._methods: deque[bytes] = methods if methods is not None else deque()
        self.buf = ReceiveBuffer(PROTOCOL, direction, HEADER_LIMIT)
        self._state = _HEAD
        self._head_scan = 0  # stream offset where to resume looking for the end of the header block
        self._start_checked = False  # the start line of the head being buffered was found valid
        self._at_line_start = True
        self._head = EMPTY_HEAD
        self._remaining = 0  # body or chunk bytes still expected
        self._size = 0
        self._body_bytes = 0
        self._body: list[bytes] = []
        self._stored = 0
        self._store_cap = 0
        self._send = False
        self._save = False
        self._truncated = False
        self._notes: list[str] = []
        self._detached = False  # handed out early by take_in_progress
        self._may_switch = False  # the message just completed may switch protocols (101, 2xx to CONNECT)
        self.paused = False  # feed stopped after such a message; feed(b"") goes on

    # -- input -----------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> list[HttpMessage]:
        """The messages `data` completes, in order (`receive` then `next_message` until None).

        Parsing pauses after a response that may switch protocols (101, a 2xx
        to CONNECT): what follows it may not be HTTP.  The session decides;
        `feed(b"", ts)` goes on with the bytes already buffered.  A ParseError
        carries the messages completed before it (`error.messages`).
        """
        if data and not self.receive(data, ts_ns):
            return _NO_MESSAGES
        self.paused = False
        out: list[HttpMessage] = []
        try:
            while True:
                msg = self.next_message()
                if msg is None:
                    return out
                out.append(msg)
                if self._may_switch:
                    self._may_switch = False
                    self.paused = True
                    return out
        except ParseError as exc:
            exc.messages = out
            raise

    def receive(self, data: bytes, ts_ns: int) -> bool:
        """Append the next in-order bytes of this direction; False when they cannot complete anything.

        Body bytes that are neither stored nor the end of the body are only
        counted (the common case of a large body): no buffering, no parsing.
        """
        if not data:
            return False
        rb = self.buf
        if rb.pos >= len(rb.data):
            n = len(data)
            if n < self._remaining and not self._save and self._state in _COUNT_ONLY_STATES:
                self._remaining -= n
                self._size += n
                self._body_bytes += n
                rb.skip_unbuffered(n)
                return False
        rb.feed(data, ts_ns)
        return True

    @property
    def buffered(self) -> int:
        return self.buf.unread

    @property
    def state_name(self) -> str:
        return ("head", "body", "body-until-close", "chunk-size", "chunk-data", "chunk-crlf", "trailers",
                "resync")[self._state]

    @property
    def in_message(self) -> bool:
        """A message has started (bytes of it are buffered or its head is parsed)."""
        return self._state in _BODY_STATES or (self._state == _HEAD and self.buf.unread > 0)

    # -- output ----------------------------------------------------------------

    def next_message(self) -> HttpMessage | None:
        """The next complete message, or None when more bytes are needed."""
        while self.buf.pos < len(self.buf.data):  # every state needs bytes to make progress
            state = self._state
            if state == _HEAD:
                if not self._parse_head():
                    return None
                if not self._head_only():
                    continue
            elif state == _BODY_LENGTH:
                if not self._eat_length():
                    return None
            elif state == _BODY_CLOSE:
                self._take(len(self.buf.data) - self.buf.pos)  # the body runs to the end of the connection
                return None
            elif state == _TRAILERS:
                if not self._trailers():
                    return None
            elif not (self._resync_scan() if state == _RESYNC else self._chunk_step(state)):
                return None
            else:
                continue  # chunk framing, or the next message start found
            msg = self._complete()
            if msg is not None:
                return msg
        return None

    def _head_only(self) -> bool:
        """After a head: True when its message is already whole (no body, or a body here that is not kept)."""
        state = self._state
        if state == _HEAD:
            return True
        if state == _BODY_LENGTH and not self._save and len(self.buf.data) - self.buf.pos >= self._remaining:
            length = self._remaining  # the common case: the whole body is here and counted in one step
            self.buf.pos += length
            self._size += length
            self._body_bytes += length
            self._remaining = 0
            return True
        return False

    def gap(self, nbytes: int, ts_ns: int) -> Gap[HttpMessage]:
        """`nbytes` of this direction were lost: the message the gap completed, if any, and whether the framing
        survived (the hole fell inside a body of known length)."""
        msg, synced = self._gap(nbytes)
        return Gap([msg] if msg is not None else [], synced)

    def _gap(self, nbytes: int) -> tuple[HttpMessage | None, bool]:
        state = self._state
        if state in (_HEAD, _RESYNC):
            if state == _HEAD and self.buf.pos < len(self.buf.data):
                self._counters.inc("gaps_in_headers")
            self._lose_sync()
            return None, False
        self._counters.inc("gaps_in_body")
        self._add_loss_note()
        if state == _BODY_CLOSE:
            self._size += nbytes
            self._body_bytes += nbytes
            return None, True
        if state in (_BODY_LENGTH, _CHUNK_DATA) and nbytes <= self._remaining:
            self._remaining -= nbytes
            self._size += nbytes
            self._body_bytes += nbytes
            if self._remaining == 0:
                if state == _BODY_LENGTH:
                    return self._complete(), True
                self._state = _CHUNK_CRLF
            return None, True
        over = nbytes
        if state in (_BODY_LENGTH, _CHUNK_DATA):
            over -= self._remaining
            self._size += self._remaining
            self._body_bytes += self._remaining
            self._remaining = 0
        # Unconsumed framing bytes before the gap (a partial chunk line) go with the message.
        self._size += self.buffered
        self._discard_buffer()
        msg = self._complete()
        if over or state != _BODY_LENGTH:
            # The gap ran past where this message ended (or its framing is lost): find the next one.
            self._lose_sync()
            return msg, False
        return msg, True

    def close(self) -> HttpMessage | None:
        """The direction ended (FIN, or the connection is being forgotten): what was in progress."""
        state = self._state
        msg = None
        if state in _BODY_STATES:
            if state in (_CHUNK_SIZE, _CHUNK_CRLF, _TRAILERS):
                self._size += self.buffered
            msg = self._complete()
            if state != _BODY_CLOSE:
                self._counters.inc("incomplete_at_close")
        elif state == _HEAD and self.buf.pos < len(self.buf.data):
            self._counters.inc("incomplete_at_close")
        self._discard_buffer()
        self._state = _HEAD
        self._at_line_start = True
        return msg

    def take_in_progress(self) -> HttpMessage | None:
        """A request whose head is parsed but whose body is not complete, handed out early.

        A server may answer before the request body is complete (413, 417,
        401...).  The message is returned as it is now and the rest of its body
        is still framed, but not emitted again.
        """
        if self._state not in _BODY_STATES or self._detached or not self._head.is_request:
            return None
        msg = self._build()
        self._detached = True
        return msg

    def resync(self) -> None:
        """After a ParseError: drop the partial message and look for the next message start."""
        self._counters.inc("resyncs")
        if self.buf.pos < len(self.buf.data):
            self.buf.pos += 1  # the byte the failed message started at is not a message start
            self._counters.inc("resync_skipped_bytes")
        self._at_line_start = False
        self._start_checked = False
        self._reset_message()
        self._state = _RESYNC

    def take_unread(self) -> bytes:
        """The bytes buffered and not consumed, handed out; nothing is parsed any more (HTTP/2, a tunnel, TLS)."""
        rest = bytes(self.buf.data[self.buf.pos:])
        self.discard()
        return rest

    def peek(self, n: int) -> bytes:
        """Up to `n` unconsumed bytes, left in place."""
        return bytes(self.buf.data[self.buf.pos:self.buf.pos + n])

    @property
    def at_stream_start(self) -> bool:
        """Nothing of this direction has been consumed yet."""
        return self.buf.offset == 0

    def discard(self) -> None:
        """Forget buffered bytes and any message in progress (the connection became a tunnel)."""
        self._discard_buffer()
        self._reset_message()
        self._state = _HEAD

    # -- head --------------------------------------------------------------------

    def _parse_head(self) -> bool:
        buf = self.buf.data
        pos = self.buf.pos
        end = len(buf)
        # Empty lines between messages are tolerated (RFC 9112 section 2.2).
        while pos < end and buf[pos] in (13, 10):
            if buf[pos] == 13 and pos + 1 < end and buf[pos + 1] != 10:
                break
            pos += 1
        rb = self.buf
        if pos != rb.pos:
            rb.pos = pos
            self._head_scan = rb.base + pos
        if pos >= end:
            return False
        scan = max(self._head_scan - rb.base, pos)
        stop = buf.find(b"\r\n\r\n", scan)
        if stop < 0:
            stop = heads.lenient_head_end(buf, max(pos, scan - 3)) - 4  # a head with bare LF line ends
        if stop < 0:
            if not self._start_checked:  # the start line is checked before a whole header block is buffered
                start_problem, self._start_checked = heads.check_partial_start(buf, pos)
                if start_problem:
                    if start_problem == heads.START_LINE_TOO_LONG:
                        self._counters.inc("start_line_overflow")
                    self._fail(pos, start_problem)
            if end - pos > self._header_limit:
                self._counters.inc("header_block_overflow")
                self._fail(pos, f"header block longer than {self._header_limit} bytes")
            self._head_scan = rb.base + max(pos, end - 3)
            return False
        self._read_head(pos, stop)
        return True

    def _read_head(self, pos: int, stop: int) -> None:
        """The head in data[pos:stop + 4] (its final CRLF CRLF included): parsed, consumed, its body framed next."""
        rb = self.buf
        held = rb.data[pos:stop + 4]
        raw = held if isinstance(held, bytes) else bytes(held)  # bytes() of bytes is a costly call for nothing
        if len(raw) > self._header_limit:
            self._counters.inc("header_block_overflow")
            self._fail(pos, f"header block longer than {self._header_limit} bytes")
        head = Head()
        line_end = raw.find(b"\r\n")
        start_line = raw[:line_end]
        problem = heads.parse_start_line(start_line, head)
        if problem is None and line_end < len(raw) - 4:
            # Never a slice whose start passes its end (bare LFs ending the head): mypyc's bytes slice fails on one.
            problem = heads.parse_header_block(raw[line_end + 2:max(line_end + 2, len(raw) - 4)], head)
        if problem == heads.BARE_LF or 10 in start_line:  # the head may even end before this CRLF CRLF
            raw, head, problem = heads.lenient_head(raw)
            stop = pos + len(raw) - 4
            self._notes.append(NOTE_BARE_LF)
        if problem:
            self._fail(pos, problem)
        head.raw = raw
        head.ts_ns = rb.ts_at(pos)
        rb.pos = stop + 4
        self._head_scan = rb.base + stop + 4
        self._start_checked = False
        self._at_line_start = True
        self._start_body(head)

    def _start_body(self, head: Head) -> None:
        # The message state was reset when the previous message completed (or sync was lost).
        self._head = head
        self._size = len(head.raw)
        config = self.config
        if head.is_request:
            self._push_method(head.method)
            if head.method == b"CONNECT":
                self._may_switch = True  # the client's next bytes may be the tunnel's: feed pauses after it
            includes = config.include_request_body_for
        else:
            includes = config.include_response_body_for
            status = head.status
            if 100 <= status < 200 and status != 101:
                return  # interim response: no body, and the final response is still to come
            method = self._methods.popleft() if self._methods else b""
            has_body, switches = heads.response_framing(status, method)
            self._may_switch = self._may_switch or switches
            if not has_body:
                return
        content_type = head.content_type
        self._send = send = any(content_type.find(include) >= 0 for include in includes)  # no `in`: url.unescape
        self._save = send or (head.content_length > 0 and heads.is_urlencoded(content_type))
        self._store_cap = max(0, config.max_message_size - len(head.raw))
        if head.chunked:
            self._state = _CHUNK_SIZE
        elif head.has_length:
            if head.content_length > 0:
                self._remaining = head.content_length
                self._state = _BODY_LENGTH
        elif not head.is_request:
            self._state = _BODY_CLOSE

    def _push_method(self, method: bytes) -> None:
        methods = self._methods
        if len(methods) >= MAX_PENDING_METHODS:
            methods.popleft()
            self._counters.inc("pending_methods_overflow")
        methods.append(method)

    # -- bodies ------------------------------------------------------------------

    def _store(self, data: bytes | bytearray) -> None:
        room = self._store_cap - self._stored
        if room <= 0:
            self._truncated = True
            return
        if len(data) > room:
            data = data[:room]
            self._truncated = True
        self._body.append(bytes(data))
        self._stored += len(data)

    def _take(self, limit: int) -> int:
        """Consume up to `limit` buffered body bytes; returns how many."""
        pos = self.buf.pos
        take = min(limit, len(self.buf.data) - pos)
        if take:
            if self._save:
                self._store(self.buf.data[pos:pos + take])
            self.buf.pos = pos + take
            self._size += take
            self._body_bytes += take
        return take

    def _eat_length(self) -> bool:
        self._remaining -= self._take(self._remaining)
        return self._remaining == 0

    def _chunk_step(self, state: int) -> bool:
        if state == _CHUNK_SIZE:
            return self._chunk_size()
        return self._chunk_data() if state == _CHUNK_DATA else self._chunk_crlf()

    def _chunk_size(self) -> bool:
        rb = self.buf
        pos = rb.pos
        size, after, problem = heads.read_chunk_size(rb.data, pos)
        if problem:
            if problem == heads.CHUNK_LINE_TOO_LONG:
                self._counters.inc("chunk_line_overflow")
            self._fail(pos, problem)
        if size < 0:
            return False
        if rb.data[after - 2] != 13:
            self._bare_lf()
        self._size += after - pos
        rb.pos = after
        if size == 0:
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
        return True

    def _chunk_data(self) -> bool:
        self._remaining -= self._take(self._remaining)
        if self._remaining:
            return False
        self._state = _CHUNK_CRLF
        return True

    def _chunk_crlf(self) -> bool:
        rb = self.buf
        pos = rb.pos
        after = heads.chunk_data_end(rb.data, pos)
        if after == heads.CHUNK_DATA_UNTERMINATED:
            self._fail(pos, "chunk data not followed by CRLF")
        if after < 0:
            return False
        if after == pos + 1:
            self._bare_lf()
        rb.pos = after
        self._size += after - pos
        self._state = _CHUNK_SIZE
        return True

    def _trailers(self) -> bool:
        rb = self.buf
        pos = rb.pos
        end, bare_lf, problem = heads.trailer_section_end(rb.data, pos, self._header_limit)
        if problem:
            if problem != heads.MALFORMED_TRAILERS:
                self._counters.inc("header_block_overflow")
            self._fail(pos, problem)
        if end < 0:
            return False
        if bare_lf:
            self._bare_lf()
        self._size += end - pos
        rb.pos = end
        return True

    # -- resynchronisation ---------------------------------------------------------

    def _resync_scan(self) -> bool:
        """Skip to a line that starts a message; False when more bytes are needed."""
        at, found, self._at_line_start = heads.find_start_line(self.buf.data, self.buf.pos, self._at_line_start)
        self._skip_to(at)
        if found:
            self._state = _HEAD
            self._head_scan = self.buf.base + at
            self._start_checked = True
        return found

    def _skip_to(self, pos: int) -> None:
        skipped = pos - self.buf.pos
        if skipped > 0:
            self._counters.inc("resync_skipped_bytes", skipped)
        self.buf.pos = pos

    def _lose_sync(self) -> None:
        self._discard_buffer()
        self._reset_message()
        self._state = _RESYNC
        self._at_line_start = True  # the first byte after a gap may start a message
        if self._direction != Direction.TO_SERVER:
            # Responses were lost with the gap: the methods queue can no longer be trusted.
            self._methods.clear()

    # -- helpers -------------------------------------------------------------------

    def _fail(self, pos: int, reason: str) -> None:
        rb = self.buf
        rb.pos = pos
        raise rb.error(reason)

    def _discard_buffer(self) -> None:
        self.buf.clear()
        self._start_checked = False

    def _reset_message(self) -> None:
        self._head = EMPTY_HEAD
        self._remaining = 0
        self._size = 0
        self._body_bytes = 0
        self._body = []
        self._stored = 0
        self._store_cap = 0
        self._send = False
        self._save = False
        self._truncated = False
        self._notes = []
        self._detached = False

    def _bare_lf(self) -> None:
        if NOTE_BARE_LF not in self._notes:
            self._notes.append(NOTE_BARE_LF)

    def _add_loss_note(self) -> None:
        note = NOTE_LOSS_REQUEST if self._head.is_request else NOTE_LOSS_RESPONSE
        if note not in self._notes:
            self._notes.append(note)

    def _build(self) -> HttpMessage:
        head = self._head
        content_length = head.content_length if head.has_length and not head.chunked else self._body_bytes
        body = b"".join(self._body) if self._body else b""
        return _new_message(HttpMessage, (  # HttpMessage(...) without its Python-level __new__
            head.is_request, head.ts_ns, head.version, head.method, head.uri, head.status, head.phrase, head.headers,
            head.raw, head.content_type, content_length, head.encodings, body, self._body_bytes, self._size,
            self._send, self._save, self._truncated, tuple(self._notes), self._direction,
        ))

    def _complete(self) -> HttpMessage | None:
        """The message in progress is done: build it (unless handed out already) and reset."""
        msg = None if self._detached else self._build()
        if self._truncated:
            self._counters.inc("bodies_truncated")
        self._reset_message()
        self._state = _HEAD
        return msg

