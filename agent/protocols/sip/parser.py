"""Sans-IO SIP message parsing (RFC 3261 §7): one datagram, or a TCP byte stream framed by Content-Length.

A message is a start line (request or status line), headers up to an
empty line, and a body of Content-Length bytes.  Header names are
lower-cased, compact forms expanded (`f` -> `from`), folded lines joined.

Over UDP a datagram holds one message; without Content-Length the body
is the rest of the datagram.  Over TCP Content-Length frames the body (no
Content-Length: no body), CRLF keep-alives between messages are skipped,
and `flush` hands out the message in progress when a gap or FIN cuts it.
A start line that is not SIP raises `ParseError`; the session then calls
`lose_sync`, and the parser looks for the next line that starts a SIP
message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_HEADER_BYTES = 64 * 1024  # start line + headers of one message
MAX_BODY_BYTES = 1024 * 1024  # body bytes kept per message; the rest is counted, not stored
MAX_CONTENT_LENGTH = 16 * 1024 * 1024  # over TCP a larger one is taken as garbage, not waited for
MIN_START_LINE = len("SIP/2.0 XXX OK")
MAX_START_LINE = 8 * 1024  # a longer line cannot start a message we are looking for

COMPACT_NAMES = {
    "a": "accept-contact", "b": "referred-by", "c": "content-type", "d": "request-disposition",
    "e": "content-encoding", "f": "from", "i": "call-id", "j": "reject-contact", "k": "supported",
    "l": "content-length", "m": "contact", "o": "event", "r": "refer-to", "s": "subject", "t": "to",
    "u": "allow-events", "v": "via", "x": "session-expires", "y": "identity",
}

_VERSION_PREFIX = "SIP/"
_TOKEN_EXTRA = frozenset("-.!%*_+`'~")


@dataclass(frozen=True, slots=True)
class StartLine:
    is_request: bool
    method: str
    uri: str
    code: int
    phrase: str
    version: str


@dataclass(frozen=True, slots=True)
class SipMessage:
    start: StartLine
    headers: tuple[tuple[str, str], ...]  # (lower-case full name, value), in order
    body: bytes
    raw: bytes  # start line to the end of the body, as seen
    has_content_length: bool
    content_length: int
    truncated: str = ""  # why the message is incomplete ("" when whole)

    @property
    def is_request(self) -> bool:
        return self.start.is_request

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def has_header(self, name: str) -> bool:
        return any(key == name for key, _ in self.headers)


def _is_token(text: str) -> bool:
    return bool(text) and text.isascii() and all(ch.isalnum() or ch in _TOKEN_EXTRA for ch in text)


def _version(text: str) -> str | None:
    """"2.0" from "2.0" (the part after "SIP/"), None when it is not digit.digit."""
    if len(text) < 3 or not (text[0].isdigit() and text[1] == "." and text[2].isdigit()):
        return None
    return text[:3]


def parse_start_line(line: str) -> StartLine | None:
    """The request or status line, or None when `line` is not one."""
    if len(line) < MIN_START_LINE:
        return None
    if line.startswith(_VERSION_PREFIX):
        version = _version(line[4:7])
        code_text, _, phrase = line[8:].partition(" ")
        if version is None or line[7:8] != " " or len(code_text) != 3 or not code_text.isdigit():
            return None
        return StartLine(False, "", "", int(code_text), phrase.strip(), version)
    parts = line.split()
    if len(parts) != 3 or not _is_token(parts[0]) or not parts[2].startswith(_VERSION_PREFIX):
        return None
    version = _version(parts[2][4:])
    if version is None:
        return None
    return StartLine(True, parts[0], parts[1], 0, "", version)


def parse_headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Header lines (no start line, no empty line) into (name, value) pairs."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # not a header; a forgiving parser skips it
        name = name.strip().lower()
        if len(name) == 1:
            name = COMPACT_NAMES.get(name, name)
        out.append((name, value.strip()))
    return tuple(out)


def _content_length(headers: tuple[tuple[str, str], ...]) -> tuple[bool, int]:
    """(is there a Content-Length, its value); the last one counts, as for every single-valued header."""
    found, length = False, 0
    for name, value in headers:
        if name == "content-length":
            digits = value.strip()
            found, length = True, int(digits) if digits.isascii() and digits.isdigit() else 0
    return found, length


def _decode_head(head: bytes) -> tuple[StartLine | None, tuple[tuple[str, str], ...]]:
    lines = head.decode("utf-8", "replace").split("\r\n")
    start = parse_start_line(lines[0])
    return start, parse_headers([line for line in lines[1:] if line])


def parse_datagram(data: bytes, direction: Direction | None = None) -> SipMessage:
    """One SIP message from one UDP datagram."""
    offset = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", offset)
    if end < 0:
        raise ParseError("sip", direction, len(data), "no end of headers in the datagram")
    start, headers = _decode_head(data[offset:end])
    if start is None:
        raise ParseError("sip", direction, offset, "the first line is not a SIP request or status line")
    body_at = end + 4
    has_length, declared = _content_length(headers)
    available = len(data) - body_at
    truncated = ""
    length = declared
    if not has_length:
        length = available
    elif length > available:
        truncated = f"Body is shorter than its Content-Length ({available} of {length} bytes)"
        length = available
    body = data[body_at:body_at + length]
    return SipMessage(start, headers, body, data[offset:body_at + length], has_length, declared, truncated)


class SipStreamParser:
    """One TCP direction: bytes in, complete messages out; bounded buffers."""

    __slots__ = ("_body", "_body_left", "_buf", "_head", "_line_checked", "_lost", "direction", "dropped_bytes",
                 "skipped_body", "synced")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.synced = True
        self.dropped_bytes = 0  # skipped while looking for a start line
        self.skipped_body = 0  # body bytes over MAX_BODY_BYTES, counted but not kept
        self._buf = bytearray()  # an incomplete head, or bytes searched for a start line
        self._line_checked = False  # the incomplete head's first line was checked
        self._reset()

    def _reset(self) -> None:
        self._head: tuple[StartLine, tuple[tuple[str, str], ...], bytes, bool, int] | None = None
        self._body = bytearray()
        self._body_left = 0
        self._lost = 0

    def _error(self, offset: int, reason: str) -> ParseError:
        return ParseError("sip", self.direction, offset, reason)

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._body)

    @property
    def mid_message(self) -> bool:
        return self._head is not None or bool(self._buf.strip(b"\r\n"))

    def feed(self, data: bytes) -> Iterator[SipMessage]:
        """The messages `data` completes, in order; ParseError when a start line is not SIP."""
        pos = 0
        if self._head is not None:
            done, pos = self._take_body(data, 0)
            if done is None:
                return
            yield done
        elif not self.synced:
            if self._buf:
                data = bytes(self._buf) + data  # the tail kept from the last search (at most a line)
                self._buf.clear()
            found = self._resync(data)
            if found is None:
                return
            data = found
        elif self._buf:
            # A head waiting for its end: only the new bytes (and the 3 before them) can end it.
            buf = self._buf
            seen = len(buf)
            buf += data
            if buf.find(b"\r\n\r\n", max(0, seen - 3)) < 0:
                self._check_partial_head(seen)
                return
            data = bytes(buf)
            buf.clear()
        n = len(data)
        while pos < n:
            while pos < n and data[pos] in (13, 10):
                pos += 1  # keep-alive CRLFs (RFC 5626) between messages
            if pos >= n:
                break
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self._buf += data[pos:]
                self._line_checked = False
                self._check_partial_head(0)
                return
            if end - pos > MAX_HEADER_BYTES:
                raise self._error(0, f"headers longer than {MAX_HEADER_BYTES} bytes")
            start, headers = _decode_head(data[pos:end])
            if start is None:
                raise self._error(0, "the first line is not a SIP request or status line")
            has_length, length = _content_length(headers)
            if length > MAX_CONTENT_LENGTH:
                raise self._error(0, f"Content-Length {length} is over the limit of {MAX_CONTENT_LENGTH}")
            self._head = (start, headers, data[pos:end + 4], has_length, length)
            self._body_left = length
            done, pos = self._take_body(data, end + 4)
            if done is None:
                return
            yield done

    def _check_partial_head(self, seen: int) -> None:
        """A head still waiting for its end (its first `seen` bytes were checked before): check the
        first line once it is complete, and bound the size."""
        buf = self._buf
        if len(buf) > MAX_HEADER_BYTES:
            buf.clear()
            raise self._error(0, f"headers longer than {MAX_HEADER_BYTES} bytes")
        if self._line_checked:
            return
        line_end = buf.find(b"\r\n", max(0, seen - 1))
        if line_end < 0:
            return
        self._line_checked = True
        if parse_start_line(buf[:line_end].decode("utf-8", "replace")) is None:
            buf.clear()
            raise self._error(0, "the first line is not a SIP request or status line")

    def _take_body(self, data: bytes, pos: int) -> tuple[SipMessage | None, int]:
        """Body bytes for the message in progress from data[pos:]: (the message if now complete, where
        the bytes after it start)."""
        take = min(self._body_left, len(data) - pos)
        room = MAX_BODY_BYTES - len(self._body)
        if room > 0:
            self._body += data[pos:pos + min(take, room)]
        if take > room:
            self.skipped_body += take - max(room, 0)
        self._body_left -= take
        if self._body_left:
            return None, len(data)
        return self._message(""), pos + take

    def _message(self, truncated: str) -> SipMessage:
        assert self._head is not None
        start, headers, raw_head, has_length, length = self._head
        body = bytes(self._body)
        if not truncated and self._lost:
            truncated = f"{self._lost} bytes of the body were lost in a gap"
        self._reset()
        return SipMessage(start, headers, body, raw_head + body, has_length, length, truncated)

    def flush(self, reason: str) -> SipMessage | None:
        """The message in progress, cut short by a gap or FIN, once its start line was read."""
        if self._head is not None:
            return self._message(reason)
        data = bytes(self._buf.lstrip(b"\r\n"))
        self._buf.clear()
        complete = data.rfind(b"\r\n")
        if not self.synced or complete < 0:
            return None
        start, headers = _decode_head(data[:complete])
        if start is None:
            return None
        has_length, length = _content_length(headers)
        return SipMessage(start, headers, b"", data, has_length, length, reason)

    def gap(self, nbytes: int) -> tuple[bool, SipMessage | None]:
        """`nbytes` were lost: (framing still holds, a message the gap completed)."""
        if self._head is not None and 0 < nbytes <= self._body_left:
            self._body_left -= nbytes
            self._lost += nbytes
            if self._body_left:
                return True, None
            return True, self._message("")
        return False, None

    def lose_sync(self) -> None:
        self.synced = False
        self._buf.clear()
        self._reset()

    def _resync(self, data: bytes) -> bytes | None:
        """The bytes from the next line that starts a SIP message on, or None (the tail is kept)."""
        at = 0
        while True:
            hit = data.find(b"SIP/2.0", at)
            if hit < 0:
                break
            line_start = data.rfind(b"\n", 0, hit) + 1
            line_end = data.find(b"\r\n", hit)
            if line_end < 0:
                # The line is not complete yet: keep it for the next feed, if it can be a start line.
                if len(data) - line_start <= MAX_START_LINE:
                    self.dropped_bytes += line_start
                    self._buf += data[line_start:]
                    return None
                break
            if parse_start_line(data[line_start:line_end].decode("utf-8", "replace")) is not None:
                self.dropped_bytes += line_start
                self.synced = True
                return data[line_start:]
            at = hit + 1
        # Keep the last line: a start line may be split across two feeds.
        tail = data.rfind(b"\n") + 1
        if len(data) - tail > MAX_START_LINE:
            tail = len(data) - MAX_START_LINE
        self.dropped_bytes += tail
        self._buf += data[tail:]
        return None
