"""Sans-IO HTTP/1.x framing, one parser per TCP direction.

Bytes go in with `feed`; `next_message` returns each complete `HttpMessage`
(or None when more bytes are needed) and raises `ParseError` on input that
is not HTTP.  After a `ParseError`, a gap in a header block, or a connection
picked up mid-stream, `resync` skips to the next line that starts a message.

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
from dataclasses import dataclass
from typing import NamedTuple

from agent.metrics import Counters
from agent.transport.session import ParseError
from agent.transport.types import Direction

PROTOCOL = "http"

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
HEADER_LIMIT = 1024 * 1024  # a header (or trailer) block longer than this is not HTTP we can follow
MAX_START_LINE = 64 * 1024  # request line or status line without its CRLF
MAX_CHUNK_LINE = 4096  # chunk size plus extensions
MAX_PENDING_METHODS = 1024  # requests whose response head has not been seen yet
_PROBE_LEN = 24  # bytes enough to tell a start line from garbage
_MAX_MARKS = 64  # segment timestamps remembered for bytes still buffered

NOTE_LOSS_REQUEST = "Packet loss while capturing the request"
NOTE_LOSS_RESPONSE = "Packet loss while capturing the response"
NOTE_BARE_LF = "Lines ended by a bare LF (accepted, RFC 9112 section 2.2)"
BARE_LF = "a line ended by a bare LF"  # parse_header_block's answer when a CRLF line holds an LF

PARSER_COUNTERS = (
    "parse_errors",
    "resyncs",
    "resync_skipped_bytes",
    "gaps_in_headers",
    "gaps_in_body",
    "header_block_overflow",
    "start_line_overflow",
    "chunk_line_overflow",
    "bodies_truncated",
    "incomplete_at_close",
    "pending_methods_overflow",
)

# Parser states
_HEAD = 0  # waiting for (the rest of) a start line and header block
_BODY_LENGTH = 1  # Content-Length body
_BODY_CLOSE = 2  # body until the connection closes
_CHUNK_SIZE = 3  # chunk-size line
_CHUNK_DATA = 4
_CHUNK_CRLF = 5  # the CRLF after chunk data
_TRAILERS = 6  # after the last chunk: trailer fields, then an empty line
_RESYNC = 7  # lost: looking for the start of the next message

_COUNT_ONLY_STATES = (_BODY_LENGTH, _CHUNK_DATA)  # body bytes that may be counted without buffering
_FOLD_START = (b" ", b"\t")
_BODY_STATES = frozenset({_BODY_LENGTH, _BODY_CLOSE, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS})

# RFC 9110 token characters; a method must be made of them.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# `x.translate(None, CHARS)` deletes those characters: empty means x is made of nothing else.
_TOKEN_CHARS = bytes(sorted(_TOKEN))
_HEX_CHARS = b"0123456789abcdefABCDEF"
_DIGIT_CHARS = b"0123456789"
_MAX_METHOD = 32

# Header names seen before, lower-cased and decoded once (bounded).
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class ParserConfig:
    """What framing needs from the protocol settings."""

    include_request_body_for: tuple[bytes, ...] = ()
    include_response_body_for: tuple[bytes, ...] = ()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @property
    def header_limit(self) -> int:
        return min(HEADER_LIMIT, self.max_message_size)


class HttpMessage(NamedTuple):
    """One complete (or, at a gap or close, as complete as it got) request or response.

    Immutable like the other wire messages; a NamedTuple rather than a frozen
    dataclass because it is built for every message and a frozen dataclass
    costs ten times as much to construct.
    """

    is_request: bool
    ts_ns: int  # time of the segment holding the first byte
    version: str  # "1.1"
    method: bytes  # requests
    uri: bytes  # requests, as sent
    status_code: int  # responses
    status_phrase: bytes  # responses, as sent
    headers: dict[str, bytes]  # lower-case name -> value; repeated fields joined with ", "
    raw_headers: bytes  # start line and header block, final CRLF included
    content_type: bytes
    content_length: int  # Packetbeat's notion: the declared length, else the body bytes framed
    encodings: tuple[str, ...]  # content codings then transfer codings, in the order applied
    body: bytes  # stored body (when kept), at most max_message_size - len(raw_headers)
    body_bytes: int  # body bytes on the wire after de-chunking, lost bytes included
    size: int  # bytes on the wire: headers, chunk framing, body (lost bytes included)
    send_body: bool  # Content-Type matched include_*body_for
    save_body: bool  # body kept: send_body, or a urlencoded form to read parameters from
    body_truncated: bool
    notes: tuple[str, ...]
    direction: Direction


_new_message = tuple.__new__


class _Head:
    """A parsed start line and header block, while the body is being framed."""

    __slots__ = ("chunked", "content_length", "content_type", "encodings", "has_length",
                 "headers", "is_request", "method", "phrase", "raw", "status", "ts_ns", "uri", "version")

    def __init__(self) -> None:
        self.is_request = False
        self.ts_ns = 0
        self.version = ""
        self.method = b""
        self.uri = b""
        self.status = 0
        self.phrase = b""
        self.headers: dict[str, bytes] = {}
        self.raw = b""
        self.content_type = b""
        self.content_length = 0
        self.has_length = False
        self.chunked = False
        self.encodings: tuple[str, ...] = ()


def _header_name(raw: bytes) -> str:
    name = _NAME_CACHE.get(raw)
    if name is None:
        name = raw.rstrip(b" \t").lower().decode("latin-1")
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = name
    return name


def _codings(value: bytes) -> list[str]:
    return [part.strip(b" \t").lower().decode("latin-1") for part in value.split(b",")]


def _leading_int(value: bytes) -> int | None:
    """Packetbeat reads Content-Length as its leading digits (none at all reads as 0); None if absurdly long."""
    end = 0
    limit = min(len(value), 19)
    while end < limit and 48 <= value[end] <= 57:
        end += 1
    if end > 18:
        return None
    return int(value[:end]) if end else 0


_KNOWN_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}


def _version_text(token: bytes) -> str | None:
    """'1.1' from b'1.1'; None when the token is not DIGIT.DIGIT."""
    known = _KNOWN_VERSIONS.get(token)
    if known is not None:
        return known
    if len(token) == 3 and token[1] == 46 and 48 <= token[0] <= 57 and 48 <= token[2] <= 57:
        return token.decode("ascii")
    return None


def plausible_start(prefix: bytes) -> bool:
    """Could a start line begin with `prefix` (its first bytes, maybe cut short)?"""
    n = min(len(prefix), 5)
    if prefix[:n] == b"HTTP/"[:n]:
        return True
    space = prefix.find(b" ")
    method = prefix if space < 0 else prefix[:space]
    return 0 < len(method) <= _MAX_METHOD and not method.translate(None, _TOKEN_CHARS)


def parse_start_line(line: bytes, head: _Head) -> str | None:
    """Fill `head` from a request line or status line; returns why it is not one, else None."""
    if line[:5] == b"HTTP/":
        space = line.find(b" ", 5)
        version = _version_text(line[5:space] if space > 0 else line[5:])
        if version is None or space < 0:
            return "malformed status line"
        rest = line[space + 1:]
        space = rest.find(b" ")
        code, phrase = (rest, b"") if space < 0 else (rest[:space], rest[space + 1:])
        if not code or len(code) > 3 or code.translate(None, _DIGIT_CHARS):
            return "malformed status code"
        head.is_request = False
        head.version = version
        head.status = int(code)
        head.phrase = phrase
        return None
    first = line.find(b" ")
    last = line.rfind(b" ")
    if first <= 0 or last == first:
        return "malformed request line"
    method = line[:first]
    if len(method) > _MAX_METHOD or method.translate(None, _TOKEN_CHARS):
        return "malformed request method"
    proto = line[last + 1:]
    if proto[:5] != b"HTTP/":
        return "malformed request line"
    version = _version_text(proto[5:])
    if version is None:
        return "malformed HTTP version"
    head.is_request = True
    head.version = version
    head.method = method
    head.uri = line[first + 1:last]
    return None


def lenient_head_end(buf: bytes | bytearray, start: int) -> int:
    """Where the first empty line after `start` ends, lines ended by LF or CRLF; -1 when none yet."""
    lf_lf = buf.find(b"\n\n", start)
    lf_crlf = buf.find(b"\n\r\n", start, lf_lf + 2 if lf_lf >= 0 else len(buf))
    if lf_crlf >= 0:
        return lf_crlf + 3
    return lf_lf + 2 if lf_lf >= 0 else -1


def crlf_lines(raw: bytes) -> bytes:
    """`raw` with every line ended by CRLF (bare LF or CRLF before).

    A header line with no colon after a bare LF is the rest of a field value the LF cut:
    it is joined with a space (RFC 9110 section 5.5: an LF in a value is replaced by SP).
    """
    lines: list[bytes] = []
    for line in raw.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(lines) > 1 and line and lines[-1] and b":" not in line:
            lines[-1] += b" " + line
        else:
            lines.append(line)
    return b"\r\n".join(lines)


def _line_end(buf: bytes | bytearray, start: int, stop: int) -> tuple[int, int]:
    """(end of the line's text, start of the next line) of the line at `start`, LF or CRLF; (-1, -1) if none."""
    newline = buf.find(b"\n", start, stop)
    if newline < 0:
        return -1, -1
    return (newline - 1 if newline > start and buf[newline - 1] == 13 else newline), newline + 1


def _lenient_head(raw: bytes) -> tuple[bytes, _Head, str | None]:
    """The head at the start of `raw` read with LF or CRLF line ends: (its bytes, it, why it is not one)."""
    raw = raw[:lenient_head_end(raw, 0)]
    text = crlf_lines(raw)
    head = _Head()
    line_end = text.find(b"\r\n")
    problem = parse_start_line(text[:line_end], head)
    if problem is None and line_end < len(text) - 4:
        problem = parse_header_block(text[line_end + 2:-4], head)
    return raw, head, problem


def parse_header_block(block: bytes, head: _Head) -> str | None:
    """Fill `head` from the lines after the start line (`block` excludes the final CRLF CRLF).

    Returns why it is not a header block, BARE_LF when a line holds a bare LF, else None.
    """
    headers = head.headers
    names = _NAME_CACHE
    last_name = ""
    content_type = b""
    for line in block.split(b"\r\n"):
        if 10 in line:  # an int: bytes.__contains__ tries a bytes needle as an int first, raising inside
            return BARE_LF
        raw_name, colon, value = line.partition(b":")
        if line[:1] in _FOLD_START:  # obsolete line folding: joins the previous field with one space
            if not last_name:
                return "folded line without a header field"
            headers[last_name] = headers[last_name] + b" " + line.strip(b" \t")
            continue
        if not colon or not raw_name:
            return "header line without a colon" if line else "empty header line"
        name = names.get(raw_name)
        if name is None:
            name = _header_name(raw_name)
        value = value.strip(b" \t")
        if name in headers:
            headers[name] = headers[name] + b", " + value
        else:
            headers[name] = value
        if name == "content-type":
            content_type = value
        last_name = name
    head.content_type = content_type
    length = headers.get("content-length")
    if length is not None:
        if length.isdigit() and len(length) <= 18:  # the usual single, plain value
            declared: int | None = int(length)
        else:
            declared = _leading_int(length.rsplit(b",", 1)[-1].strip(b" \t"))
        if declared is None:
            return "Content-Length too large"
        head.has_length = True
        head.content_length = declared
    content_coding = headers.get("content-encoding")
    transfer = headers.get("transfer-encoding")
    if content_coding or transfer:
        codings: list[str] = [c for c in _codings(content_coding) if c] if content_coding else []
        if transfer:
            transfer_codings = [c for c in _codings(transfer) if c]
            if transfer_codings and transfer_codings[-1] == "chunked":
                head.chunked = True
                transfer_codings.pop()
            codings.extend(transfer_codings)
        head.encodings = tuple(codings)
    return None


class HttpStreamParser:
    """Framing state of one direction of one connection."""

    __slots__ = ("_at_line_start", "_base", "_body", "_body_bytes", "_buf", "_counters", "_detached",
                 "_direction", "_head", "_head_scan", "_header_limit", "_marks", "_methods", "_notes", "_pos",
                 "_remaining",
                 "_save", "_send", "_size", "_start_checked", "_state", "_store_cap", "_stored", "_truncated",
                 "config")

    def __init__(self, direction: Direction, config: ParserConfig, counters: Counters,
                 methods: deque[bytes] | None = None) -> None:
        self.config = config
        self._header_limit = config.header_limit
        self._direction = direction
        self._counters = counters
        # Methods of requests whose response head is still to come: HEAD and CONNECT change response framing.
        self._methods: deque[bytes] = methods if methods is not None else deque()
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._base = 0  # absolute stream offset of _buf[0]
        self._marks: deque[tuple[int, int]] = deque()  # (absolute end offset, ts) of each fed segment
        self._state = _HEAD
        self._head_scan = 0  # where to resume looking for the end of the header block
        self._start_checked = False  # the start line of the head being buffered was found valid
        self._at_line_start = True
        self._head = _EMPTY_HEAD
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

    # -- input -----------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> bool:
        """Append the next in-order bytes of this direction; False when they cannot complete anything.

        Body bytes that are neither stored nor the end of the body are only
        counted (the common case of a large body): no buffering, no parsing.
        """
        if not data:
            return False
        buf = self._buf
        n = len(data)
        if self._pos >= len(buf):
            state = self._state
            if n < self._remaining and not self._save and state in _COUNT_ONLY_STATES:
                self._remaining -= n
                self._size += n
                self._body_bytes += n
                self._base += len(buf) + n
                self._buf = b""
                self._pos = 0
                return False
            self._base += len(buf)
            self._buf = data
            self._pos = 0
            self._head_scan = 0
            marks = self._marks
            marks.clear()
            marks.append((self._base + n, ts_ns))
            return True
        if not isinstance(buf, bytearray):
            self._base += self._pos
            self._head_scan = max(0, self._head_scan - self._pos)
            buf = bytearray(buf[self._pos:])
            self._pos = 0
        elif self._pos > 65536:
            del buf[:self._pos]
            self._base += self._pos
            self._head_scan = max(0, self._head_scan - self._pos)
            self._pos = 0
        buf += data
        self._buf = buf
        marks = self._marks
        consumed = self._base + self._pos
        while len(marks) > 1 and marks[0][0] <= consumed:
            marks.popleft()
        if marks and marks[-1][1] == ts_ns:
            marks.pop()  # same time as the previous segment: one mark covers both
        elif len(marks) >= _MAX_MARKS:
            marks.popleft()  # bounded: the oldest buffered bytes take the next segment's time
        marks.append((self._base + len(buf), ts_ns))
        return True

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def state_name(self) -> str:
        return ("head", "body", "body-until-close", "chunk-size", "chunk-data", "chunk-crlf", "trailers",
                "resync")[self._state]

    @property
    def in_message(self) -> bool:
        """A message has started (bytes of it are buffered or its head is parsed)."""
        return self._state in _BODY_STATES or (self._state == _HEAD and self._pos < len(self._buf))

    # -- output ----------------------------------------------------------------

    def next_message(self) -> HttpMessage | None:
        """The next complete message, or None when more bytes are needed."""
        while True:
            if self._pos >= len(self._buf):
                return None  # every state needs bytes to make progress
            state = self._state
            if state == _HEAD:
                if not self._parse_head():
                    return None
                state = self._state
                if state == _HEAD:  # a message without a body
                    msg = self._complete()
                elif state == _BODY_LENGTH and not self._save and len(self._buf) - self._pos >= self._remaining:
                    # The whole body is here and is not kept: counted in one step (the common case).
                    length = self._remaining
                    self._pos += length
                    self._size += length
                    self._body_bytes += length
                    self._remaining = 0
                    msg = self._complete()
                else:
                    continue
            elif state == _BODY_LENGTH:
                if not self._eat_length():
                    return None
                msg = self._complete()
            elif state == _BODY_CLOSE:
                self._eat_until_close()
                return None
            elif state == _CHUNK_SIZE:
                if not self._chunk_size():
                    return None
                continue
            elif state == _CHUNK_DATA:
                if not self._chunk_data():
                    return None
                continue
            elif state == _CHUNK_CRLF:
                if not self._chunk_crlf():
                    return None
                continue
            elif state == _TRAILERS:
                if not self._trailers():
                    return None
                msg = self._complete()
            else:
                if not self._resync_scan():
                    return None
                continue
            if msg is not None:
                return msg

    def gap(self, nbytes: int) -> HttpMessage | None:
        """`nbytes` of this direction were lost; returns a message the gap completed, if any."""
        state = self._state
        if state in (_HEAD, _RESYNC):
            if state == _HEAD and self._pos < len(self._buf):
                self._counters.inc("gaps_in_headers")
            self._lose_sync()
            return None
        self._counters.inc("gaps_in_body")
        self._add_loss_note()
        if state == _BODY_CLOSE:
            self._size += nbytes
            self._body_bytes += nbytes
            return None
        if state in (_BODY_LENGTH, _CHUNK_DATA) and nbytes <= self._remaining:
            self._remaining -= nbytes
            self._size += nbytes
            self._body_bytes += nbytes
            if self._remaining == 0:
                if state == _BODY_LENGTH:
                    return self._complete()
                self._state = _CHUNK_CRLF
            return None
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
        return msg

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
        elif state == _HEAD and self._pos < len(self._buf):
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
        if self._pos < len(self._buf):
            self._pos += 1  # the byte the failed message started at is not a message start
            self._counters.inc("resync_skipped_bytes")
        self._at_line_start = False
        self._start_checked = False
        self._reset_message()
        self._state = _RESYNC

    def take_unread(self) -> bytes:
        """The bytes buffered and not consumed, handed out; nothing is parsed any more (HTTP/2, a tunnel, TLS)."""
        rest = bytes(self._buf[self._pos:])
        self.discard()
        return rest

    def peek(self, n: int) -> bytes:
        """Up to `n` unconsumed bytes, left in place."""
        return bytes(self._buf[self._pos:self._pos + n])

    @property
    def at_stream_start(self) -> bool:
        """Nothing of this direction has been consumed yet."""
        return self._base + self._pos == 0

    def discard(self) -> None:
        """Forget buffered bytes and any message in progress (the connection became a tunnel)."""
        self._discard_buffer()
        self._reset_message()
        self._state = _HEAD

    # -- head --------------------------------------------------------------------

    def _parse_head(self) -> bool:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        # Empty lines between messages are tolerated (RFC 9112 section 2.2).
        while pos < end and buf[pos] in (13, 10):
            if buf[pos] == 13 and pos + 1 < end and buf[pos + 1] != 10:
                break
            pos += 1
        if pos != self._pos:
            self._pos = pos
            self._head_scan = pos
        if pos >= end:
            return False
        scan = self._head_scan if self._head_scan > pos else pos
        stop = buf.find(b"\r\n\r\n", scan)
        if stop < 0:
            stop = lenient_head_end(buf, max(pos, scan - 3)) - 4  # a head with bare LF line ends
        if stop < 0:
            if not self._start_checked:
                # Check the start line before buffering a whole header block behind it.
                line_end, _ = _line_end(buf, pos, pos + MAX_START_LINE + 2)
                if line_end < 0:
                    if not plausible_start(bytes(buf[pos:pos + _PROBE_LEN])):
                        self._fail(pos, "not an HTTP start line")
                    if end - pos > MAX_START_LINE:
                        self._counters.inc("start_line_overflow")
                        self._fail(pos, f"start line longer than {MAX_START_LINE} bytes")
                else:
                    problem = parse_start_line(bytes(buf[pos:line_end]), _Head())
                    if problem:
                        self._fail(pos, problem)
                    self._start_checked = True
            if end - pos > self._header_limit:
                self._counters.inc("header_block_overflow")
                self._fail(pos, f"header block longer than {self._header_limit} bytes")
            self._head_scan = max(pos, end - 3)
            return False
        raw = bytes(buf[pos:stop + 4])
        if len(raw) > self._header_limit:
            self._counters.inc("header_block_overflow")
            self._fail(pos, f"header block longer than {self._header_limit} bytes")
        head = _Head()
        line_end = raw.find(b"\r\n")
        start_line = raw[:line_end]
        problem = parse_start_line(start_line, head)
        if problem is None and line_end < len(raw) - 4:
            # Never a slice whose start passes its end: mypyc's bytes slice fails on one (a head whose bare LFs
            # end it right after the start line's CRLF).
            problem = parse_header_block(raw[line_end + 2:max(line_end + 2, len(raw) - 4)], head)
        if problem is BARE_LF or 10 in start_line:  # the head may even end before this CRLF CRLF
            raw, head, problem = _lenient_head(raw)
            stop = pos + len(raw) - 4
            self._notes.append(NOTE_BARE_LF)
        if problem:
            self._fail(pos, problem)
        head.raw = raw
        marks = self._marks
        # One segment buffered (the usual case): its time is the message's.
        head.ts_ns = marks[0][1] if len(marks) == 1 else self._ts_at(pos)
        self._pos = stop + 4
        self._head_scan = self._pos
        self._start_checked = False
        self._at_line_start = True
        self._start_body(head)
        return True

    def _start_body(self, head: _Head) -> None:
        # The message state was reset when the previous message completed (or sync was lost).
        self._head = head
        self._size = len(head.raw)
        config = self.config
        if head.is_request:
            self._push_method(head.method)
            includes = config.include_request_body_for
        else:
            includes = config.include_response_body_for
            status = head.status
            if 100 <= status < 200 and status != 101:
                return  # interim response: no body, and the final response is still to come
            method = self._methods.popleft() if self._methods else b""
            if status < 200 or status in (204, 304) or method == b"HEAD" or (
                    method == b"CONNECT" and status < 300):
                return
        content_type = head.content_type
        send = False
        for include in includes:
            if include in content_type:
                send = True
                break
        self._send = send
        self._save = send or (head.content_length > 0 and b"urlencoded" in content_type)
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
        pos = self._pos
        take = min(limit, len(self._buf) - pos)
        if take:
            if self._save:
                self._store(self._buf[pos:pos + take])
            self._pos = pos + take
            self._size += take
            self._body_bytes += take
        return take

    def _eat_length(self) -> bool:
        self._remaining -= self._take(self._remaining)
        return self._remaining == 0

    def _eat_until_close(self) -> None:
        self._take(len(self._buf) - self._pos)

    def _chunk_size(self) -> bool:
        buf = self._buf
        pos = self._pos
        end, after = _line_end(buf, pos, pos + MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buf) - pos > MAX_CHUNK_LINE:
                self._counters.inc("chunk_line_overflow")
                self._fail(pos, f"chunk-size line longer than {MAX_CHUNK_LINE} bytes")
            return False
        line = bytes(buf[pos:end])
        semicolon = line.find(b";")
        digits = (line if semicolon < 0 else line[:semicolon]).strip(b" \t")
        if not digits or len(digits) > 16 or digits.translate(None, _HEX_CHARS):
            self._fail(pos, "malformed chunk size")
        size = int(digits, 16)
        if after != end + 2:
            self._bare_lf()
        self._size += after - pos
        self._pos = after
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
        buf = self._buf
        pos = self._pos
        if buf[pos] == 10:
            self._bare_lf()
            self._pos = pos + 1
            self._size += 1
            self._state = _CHUNK_SIZE
            return True
        if len(buf) - pos < 2:
            if len(buf) > pos and buf[pos] != 13:
                self._fail(pos, "chunk data not followed by CRLF")
            return False
        if buf[pos] != 13 or buf[pos + 1] != 10:
            self._fail(pos, "chunk data not followed by CRLF")
        self._pos = pos + 2
        self._size += 2
        self._state = _CHUNK_SIZE
        return True

    def _trailers(self) -> bool:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            if avail and buf[pos] != 13 and not plausible_trailer(buf[pos]):
                self._fail(pos, "malformed trailer section")
            return False
        if buf[pos] == 13 and buf[pos + 1] == 10:
            self._pos = pos + 2
            self._size += 2
            return True
        if buf[pos] == 10:
            self._bare_lf()
            self._pos = pos + 1
            self._size += 1
            return True
        stop = buf.find(b"\r\n\r\n", pos)
        end = stop + 4
        lenient = lenient_head_end(buf, pos)
        if lenient >= 0 and (stop < 0 or lenient < end):
            self._bare_lf()
            end = lenient
        elif stop < 0:
            if avail > self._header_limit:
                self._counters.inc("header_block_overflow")
                self._fail(pos, f"trailer section longer than {self._header_limit} bytes")
            return False
        self._size += end - pos
        self._pos = end
        return True

    # -- resynchronisation ---------------------------------------------------------

    def _resync_scan(self) -> bool:
        """Skip to a line that starts a message; False when more bytes are needed."""
        buf = self._buf
        end = len(buf)
        pos = self._pos
        candidate = pos if self._at_line_start else -1
        while True:
            if candidate < 0:
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    self._skip_to(end)
                    self._at_line_start = False
                    return False
                candidate = newline + 1
            if candidate >= end:
                self._skip_to(end)
                self._at_line_start = True
                return False
            line_end, _ = _line_end(buf, candidate, candidate + MAX_START_LINE + 2)
            if line_end < 0:
                if plausible_start(bytes(buf[candidate:candidate + _PROBE_LEN])) and \
                        end - candidate <= MAX_START_LINE:
                    self._skip_to(candidate)
                    self._at_line_start = True
                    return False  # maybe a start line: wait for its end
            elif parse_start_line(bytes(buf[candidate:line_end]), _Head()) is None:
                self._skip_to(candidate)
                self._state = _HEAD
                self._head_scan = candidate
                self._start_checked = True
                self._at_line_start = True
                return True
            pos = candidate
            candidate = -1

    def _skip_to(self, pos: int) -> None:
        skipped = pos - self._pos
        if skipped > 0:
            self._counters.inc("resync_skipped_bytes", skipped)
        self._pos = pos

    def _lose_sync(self) -> None:
        self._discard_buffer()
        self._reset_message()
        self._state = _RESYNC
        self._at_line_start = True  # the first byte after a gap may start a message
        if not self._direction_is_requests():
            # Responses were lost with the gap: the methods queue can no longer be trusted.
            self._methods.clear()

    def _direction_is_requests(self) -> bool:
        return self._direction == Direction.TO_SERVER

    # -- helpers -------------------------------------------------------------------

    def _fail(self, pos: int, reason: str) -> None:
        self._pos = pos
        raise ParseError(PROTOCOL, self._direction, self._base + pos, reason)

    def _ts_at(self, pos: int) -> int:
        absolute = self._base + pos
        marks = self._marks
        while len(marks) > 1 and marks[0][0] <= absolute:
            marks.popleft()
        return marks[0][1] if marks else 0

    def _discard_buffer(self) -> None:
        self._base += len(self._buf)
        self._buf = b""
        self._pos = 0
        self._head_scan = 0
        self._start_checked = False
        self._marks.clear()

    def _reset_message(self) -> None:
        self._head = _EMPTY_HEAD
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


def plausible_trailer(first: int) -> bool:
    return first in _TOKEN


_EMPTY_HEAD = _Head()
