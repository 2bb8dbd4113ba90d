"""HTTP/1.x heads: the start line and header block, read from their bytes (CRLF, or bare LF leniently).

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes); an edit is used natively
only after set-up rebuilds (`scripts/accel.py build`).

Pure functions over bytes, used by the stream parser (parser.py) for the
message heads, trailer lines and the resync scan: a head that parses fills a
`Head`; one that does not gives the reason, which becomes the ParseError.
"""

from __future__ import annotations

from typing import Final

BARE_LF: Final = "a line ended by a bare LF"  # parse_header_block's answer when a CRLF line holds an LF

MAX_CHUNK_LINE: Final = 4096  # chunk size plus extensions
CHUNK_LINE_TOO_LONG: Final = f"chunk-size line longer than {MAX_CHUNK_LINE} bytes"
MALFORMED_TRAILERS: Final = "malformed trailer section"
CHUNK_DATA_UNTERMINATED: Final = -2  # chunk_data_end: the bytes after chunk data are not a line end
MAX_START_LINE: Final = 64 * 1024  # request line or status line without its CRLF
START_LINE_TOO_LONG: Final = f"start line longer than {MAX_START_LINE} bytes"
_PROBE_LEN: Final = 24  # bytes enough to tell a start line from garbage

# RFC 9110 token characters; a method must be made of them.
_TOKEN: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# `x.translate(None, CHARS)` deletes those characters: empty means x is made of nothing else.
_TOKEN_CHARS: Final = bytes(sorted(_TOKEN))


def byte_flags(members: bytes) -> bytes:
    """256 flags, one per byte value: 1 for the bytes of `members` (indexing it is cheaper than a set test)."""
    flags = bytearray(256)
    for byte in members:
        flags[byte] = 1
    return bytes(flags)


_TOKEN_FLAGS: Final = byte_flags(_TOKEN_CHARS)
HEX_CHARS: Final = b"0123456789abcdefABCDEF"
_DIGIT_CHARS: Final = b"0123456789"


def _hex_values() -> bytes:
    """The value of each hex digit by its byte value; 255 for the other bytes."""
    values = bytearray(b"\xff" * 256)
    for index, byte in enumerate(HEX_CHARS.lower()[:16]):
        values[byte] = index
        values[ord(chr(byte).upper())] = index
    return bytes(values)


_HEX_VALUES: Final = _hex_values()
_MAX_METHOD: Final = 32

# Header names seen before, lower-cased and decoded once (bounded).
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX: Final = 4096
# Whole header lines seen before (Host, Accept, Server, Content-Type...: most lines repeat), with their name and
# value: a hit skips the scan.  Bounded in entries and line length (at most about 2.5 MB); never what may be a
# credential (kept no longer than its message), nor fields whose value changes with every message.
_LINE_CACHE: Final[dict[bytes, tuple[str, bytes]]] = {}
_LINE_CACHE_MAX: Final = 4096
_CACHED_LINE: Final = 200
_UNCACHED_FIELDS: Final = frozenset({
    "cookie", "set-cookie", "content-length", "date", "last-modified", "expires", "age", "etag", "content-range",
    "x-request-id",
})
_SECRET_NAME_PARTS: Final = ("auth", "token", "key", "secret", "session", "password", "signature")


class Head:
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


_KNOWN_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}


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


def parse_start_line(line: bytes, head: Head) -> str | None:
    """Fill `head` from a request line or status line; returns why it is not one, else None."""
    n = len(line)
    if line[:5] == b"HTTP/":
        # The usual "HTTP/1.1 200 OK" read by index (bytes methods cost ~800 instructions a call here).
        if n >= 12 and line[8] == 32 and (n == 12 or line[12] == 32):
            version = _version_text(line[5:8])
            d0, d1, d2 = line[9] - 48, line[10] - 48, line[11] - 48
            if version is not None and 0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9:
                head.is_request = False
                head.version = version
                head.status = d0 * 100 + d1 * 10 + d2
                head.phrase = line[13:]
                return None
        return _parse_status_line(line, head)
    # The usual "GET /path HTTP/1.1": a short token method, one space, the target, " HTTP/x.y" at the end.
    first = _method_end(line)
    if first > 0 and n - 9 > first and line[n - 9] == 32 and line[n - 8:n - 3] == b"HTTP/":
        version = _version_text(line[n - 3:])  # DIGIT.DIGIT: no space, so line[n - 9] is the last one
        if version is not None:
            head.is_request = True
            head.version = version
            head.method = line[:first]
            head.uri = line[first + 1:n - 9]
            return None
    return _parse_request_line(line, head)


def _method_end(line: bytes) -> int:
    """The index of the space after a method of token characters at the start of `line`; -1 when there is none
    within the longest method (the general path then tells what is wrong)."""
    limit = min(len(line), _MAX_METHOD + 1)
    for index in range(limit):
        byte = line[index]
        if byte == 32:
            return index
        if not _TOKEN_FLAGS[byte]:
            return -1
    return -1


def _parse_status_line(line: bytes, head: Head) -> str | None:
    space = line.find(b" ", 5)
    version = _version_text(line[5:space] if space > 0 else line[5:])
    if version is None or space < 0:
        return "malformed status line"
    rest = line[space + 1:]
    space = rest.find(b" ")
    code, phrase = (rest, b"") if space < 0 else (rest[:space], rest[space + 1:])
    if len(code) > 3 or not code.isdigit():  # bytes.isdigit: ASCII digits only, and not empty
        return "malformed status code"
    head.is_request = False
    head.version = version
    head.status = int(code)
    head.phrase = phrase
    return None


def _parse_request_line(line: bytes, head: Head) -> str | None:
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


def find_line_end(buf: bytes | bytearray, start: int, stop: int) -> tuple[int, int]:
    """(end of the line's text, start of the next line) of the line at `start`, LF or CRLF; (-1, -1) if none."""
    newline = buf.find(b"\n", start, stop)
    if newline < 0:
        return -1, -1
    return (newline - 1 if newline > start and buf[newline - 1] == 13 else newline), newline + 1


def lenient_head(raw: bytes) -> tuple[bytes, Head, str | None]:
    """The head at the start of `raw` read with LF or CRLF line ends: (its bytes, it, why it is not one)."""
    raw = raw[:lenient_head_end(raw, 0)]
    text = crlf_lines(raw)
    head = Head()
    line_end = text.find(b"\r\n")
    problem = parse_start_line(text[:line_end], head)
    if problem is None and line_end < len(text) - 4:
        problem = parse_header_block(text[line_end + 2:-4], head)
    return raw, head, problem


def parse_header_block(block: bytes, head: Head) -> str | None:
    """Fill `head` from the lines after the start line (`block` excludes the final CRLF CRLF).

    Returns why it is not a header block, BARE_LF when a line holds a bare LF, else None.
    """
    headers = head.headers
    known = _LINE_CACHE
    last_name = ""
    content_type = b""
    for line in block.split(b"\r\n"):
        field = known.get(line)
        if field is not None:
            name, value = field  # a line seen before: no LF, no fold, a colon
        else:
            if 10 in line:  # an int: bytes.__contains__ tries a bytes needle as an int first, raising inside
                return BARE_LF
            if line and line[0] in (32, 9):  # obsolete line folding: joins the previous field with one space
                if not last_name:
                    return "folded line without a header field"
                headers[last_name] = headers[last_name] + b" " + line.strip(b" \t")
                continue
            name, value = _read_field(line)
            if not name:
                return "header line without a colon" if line else "empty header line"
        if name in headers:
            headers[name] = headers[name] + b", " + value
        else:
            headers[name] = value
        if name == "content-type":
            content_type = value
        last_name = name
    head.content_type = content_type
    return _framing(headers, head)


def _framing(headers: dict[str, bytes], head: Head) -> str | None:
    """Content-Length and the codings from the parsed fields; why they cannot frame a body, else None."""
    length = headers.get("content-length")
    if length is not None:
        declared: int | None = _digits_value(length)  # the usual single, plain value
        if declared is not None and declared < 0:
            declared = _leading_int(length.rsplit(b",", 1)[-1].strip(b" \t"))
        if declared is None:
            return "Content-Length too large"
        head.has_length = True
        head.content_length = declared
    content_coding = headers.get("content-encoding")
    transfer = headers.get("transfer-encoding")
    if transfer == b"chunked" and not content_coding:
        head.chunked = True  # the usual chunked response: no coding left to report
    elif content_coding or transfer:
        codings: list[str] = [c for c in _codings(content_coding) if c] if content_coding else []
        if transfer:
            transfer_codings = [c for c in _codings(transfer) if c]
            if transfer_codings and transfer_codings[-1] == "chunked":
                head.chunked = True
                transfer_codings.pop()
            codings.extend(transfer_codings)
        head.encodings = tuple(codings)
    return None


_FORM_TYPES: Final[dict[bytes, bool]] = {}  # Content-Type values seen: whether each names a urlencoded form
_FORM_TYPES_MAX: Final = 256


def is_urlencoded(content_type: bytes) -> bool:
    """Whether a Content-Type is a urlencoded form (remembered for the few values traffic repeats)."""
    form = _FORM_TYPES.get(content_type)
    if form is None:
        form = content_type.find(b"urlencoded") >= 0  # find, not `in` (see url.unescape)
        if len(_FORM_TYPES) >= _FORM_TYPES_MAX:
            _FORM_TYPES.clear()
        if len(content_type) <= 128:
            _FORM_TYPES[content_type] = form
    return form


def _read_field(line: bytes) -> tuple[str, bytes]:
    """(lower-case name, value) of a header line that is not folded; ("", b"") without a colon or a name.

    A short line whose field is neither a credential nor one that changes with every message is remembered.
    """
    colon = _colon_at(line)
    if colon <= 0:
        return "", b""
    raw_name = line[:colon]
    name = _NAME_CACHE.get(raw_name)
    if name is None:
        name = _header_name(raw_name)
    value = _field_value(line, colon + 1)
    if len(line) <= _CACHED_LINE and name not in _UNCACHED_FIELDS and not _may_be_secret(name):
        if len(_LINE_CACHE) >= _LINE_CACHE_MAX:
            _LINE_CACHE.clear()  # what repeats comes back at once
        _LINE_CACHE[line] = (name, value)
    return name, value


def _may_be_secret(name: str) -> bool:
    """Authorization, X-Api-Key, X-Auth-Token...: a field whose value may be a credential."""
    return any(name.find(part) >= 0 for part in _SECRET_NAME_PARTS)


_SCANNED_NAME: Final = 64  # header names up to this long are scanned byte by byte, longer lines by bytes.find


def _colon_at(line: bytes) -> int:
    """The index of the first ':' in a header line, -1 without one (a short name is scanned byte by byte: a
    bytes method call costs more than the loop)."""
    limit = min(len(line), _SCANNED_NAME)
    for index in range(limit):
        if line[index] == 58:
            return index
    return line.find(b":") if len(line) > _SCANNED_NAME else -1


def _field_value(line: bytes, start: int) -> bytes:
    """line[start:] without the spaces and tabs around it (what `.strip(b" \t")` gives)."""
    end = len(line)
    while start < end and line[start] in (32, 9):
        start += 1
    while end > start and line[end - 1] in (32, 9):
        end -= 1
    return line[start:end]


def _digits_value(value: bytes) -> int:
    """The number a run of 1 to 18 ASCII digits spells; -1 for anything else."""
    n = len(value)
    if not 0 < n <= 18:
        return -1
    number = 0
    for index in range(n):
        digit = value[index] - 48
        if not 0 <= digit <= 9:
            return -1
        number = number * 10 + digit
    return number


def plausible_trailer(first: int) -> bool:
    return first in _TOKEN


EMPTY_HEAD: Final = Head()


def check_partial_start(buf: bytes | bytearray, pos: int) -> tuple[str, bool]:
    """The start line of a head whose end is not buffered yet: (why it is not HTTP, or "";
    whether it is complete and valid, so the check is not repeated)."""
    end, _ = find_line_end(buf, pos, pos + MAX_START_LINE + 2)
    if end >= 0:
        problem = parse_start_line(bytes(buf[pos:end]), Head())
        return (problem, False) if problem else ("", True)
    if not plausible_start(bytes(buf[pos:pos + _PROBE_LEN])):
        return "not an HTTP start line", False
    if len(buf) - pos > MAX_START_LINE:
        return START_LINE_TOO_LONG, False
    return "", False


def find_start_line(buf: bytes | bytearray, pos: int, at_line_start: bool) -> tuple[int, bool, bool]:
    """Where a message may start, at `pos` (when it is a line start) or after the next LF:
    (the index to skip to, whether a valid start line is complete there, whether that index is a line start).
    Not found: the end of `buf`, or a plausible start line still waiting for its end."""
    end = len(buf)
    candidate = pos if at_line_start else -1
    while True:
        if candidate < 0:
            newline = buf.find(b"\n", pos)
            if newline < 0:
                return end, False, False
            candidate = newline + 1
        if candidate >= end:
            return end, False, True
        line_end, _ = find_line_end(buf, candidate, candidate + MAX_START_LINE + 2)
        if line_end < 0:
            if plausible_start(bytes(buf[candidate:candidate + _PROBE_LEN])) and end - candidate <= MAX_START_LINE:
                return candidate, False, True  # maybe a start line: wait for its end
        elif parse_start_line(bytes(buf[candidate:line_end]), Head()) is None:
            return candidate, True, True
        pos = candidate
        candidate = -1


def read_chunk_size(buf: bytes | bytearray, pos: int) -> tuple[int, int, str]:
    """The chunk-size line at `pos` (extensions ignored): (the size, the index after its line end, why it is
    malformed, or ""); (-1, -1, "") while its end is not buffered."""
    # The usual line, hex digits then CRLF, read by index (the general path costs ten times as much).
    n = len(buf)
    limit = min(n, pos + 16)
    size = 0
    index = pos
    while index < limit:
        digit = _HEX_VALUES[buf[index]]
        if digit > 15:
            break
        size = size * 16 + digit
        index += 1
    if index > pos and index + 1 < n and buf[index] == 13 and buf[index + 1] == 10:
        return size, index + 2, ""
    end, after = find_line_end(buf, pos, pos + MAX_CHUNK_LINE + 2)
    if end < 0:
        return -1, -1, CHUNK_LINE_TOO_LONG if len(buf) - pos > MAX_CHUNK_LINE else ""
    line = bytes(buf[pos:end])
    semicolon = line.find(b";")
    digits = (line if semicolon < 0 else line[:semicolon]).strip(b" \t")
    if not digits or len(digits) > 16 or digits.translate(None, HEX_CHARS):
        return -1, -1, "malformed chunk size"
    return int(digits, 16), after, ""


def trailer_section_end(buf: bytes | bytearray, pos: int, limit: int) -> tuple[int, bool, str]:
    """The end of the trailer section at `pos` (after the last chunk): (the index after it, whether a bare LF
    ended a line, why it is not a trailer section, or ""); -1 while its end is not buffered."""
    avail = len(buf) - pos
    if avail < 2:
        if avail and buf[pos] != 13 and not plausible_trailer(buf[pos]):
            return -1, False, MALFORMED_TRAILERS
        return -1, False, ""
    if buf[pos] == 13 and buf[pos + 1] == 10:
        return pos + 2, False, ""
    if buf[pos] == 10:
        return pos + 1, True, ""
    stop = buf.find(b"\r\n\r\n", pos)
    lenient = lenient_head_end(buf, pos)
    if lenient >= 0 and (stop < 0 or lenient < stop + 4):
        return lenient, True, ""
    if stop < 0:
        return -1, False, f"trailer section longer than {limit} bytes" if avail > limit else ""
    return stop + 4, False, ""


def chunk_data_end(buf: bytes | bytearray, pos: int) -> int:
    """The index after the line end that follows chunk data at `pos` (CRLF, or a bare LF); -1 while it is not
    buffered, CHUNK_DATA_UNTERMINATED when something else follows the data."""
    avail = len(buf) - pos
    if avail and buf[pos] == 10:
        return pos + 1
    if avail < 2:
        return CHUNK_DATA_UNTERMINATED if avail and buf[pos] != 13 else -1
    return pos + 2 if buf[pos] == 13 and buf[pos + 1] == 10 else CHUNK_DATA_UNTERMINATED


def response_framing(status: int, method: bytes) -> tuple[bool, bool]:
    """A final response to `method`: (whether a body follows its head; whether what follows may be another
    protocol, 101 or a 2xx to CONNECT, so parsing pauses after it)."""
    switches = status == 101 or (method == b"CONNECT" and 200 <= status < 300)
    no_body = status < 200 or status in (204, 304) or method == b"HEAD" or (method == b"CONNECT" and status < 300)
    return not no_body, switches
