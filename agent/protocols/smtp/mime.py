"""One mail message read as it streams: its header block, its MIME structure and attachment sizes, not its body.

The standard library's `email` package (BytesParser, policy.default) parses
every header block: the message's own and each MIME part's.  It decodes
RFC 2047 words in any charset Python has a codec for (GB2312, GBK, GB18030,
ISO-8859-*, windows-125x, UTF-8; Q and B; subjects in several words),
RFC 2231 file names, raw UTF-8 headers (SMTPUTF8) and address lists.

What the package cannot do is stream: it keeps every body in memory.  So
the walk between header blocks is done here, a line at a time but without
keeping lines: RFC 2046 boundary delimiters are looked for at line starts
(a delimiter of an enclosing part also ends the inner ones), and the bytes
of a leaf part are only counted, decoded for its size (base64 and
quoted-printable).  What is kept is bounded: the message's header block
(MAX_HEADER_BYTES), a part's header block (MAX_PART_HEADER_BYTES), MAX_PARTS
parts, MAX_DEPTH nested multiparts, and a partial line of at most
MAX_DELIMITER_LINE bytes.

Past `max_bytes` of content the structure is no longer followed: the event
gets the message's headers only (no attachments), with a note.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

MAX_HEADER_BYTES = 256 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_PARTS = 1000
MAX_DEPTH = 16
MAX_DELIMITER_LINE = 256  # "--" + a boundary of at most 70 characters, "--", and some white space
MAX_QP_LINE = 64 * 1024  # a quoted-printable line decoded at once; longer ones are counted as they are

NOTE_HEADERS_TRUNCATED = f"Message header block longer than {MAX_HEADER_BYTES} bytes: the rest is not read"
NOTE_PART_HEADERS = f"A MIME part's header block is longer than {MAX_PART_HEADER_BYTES} bytes: the rest is not read"
NOTE_TOO_MANY_PARTS = f"More than {MAX_PARTS} MIME parts (or {MAX_DEPTH} levels): the rest is not read"

_PARSER = BytesParser(policy=policy.default)
# Every byte that is not in the base64 alphabet (white space, padding, anything else).
_NOT_BASE64 = bytes(b for b in range(256)
                    if not (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b in (0x2B, 0x2F)))


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str | None
    mime_type: str
    size: int  # decoded bytes


@dataclass(frozen=True, slots=True)
class MessageSummary:
    headers: EmailMessage | None  # the message's header block, parsed (None: it never ended)
    raw_headers: bytes
    attachments: tuple[Attachment, ...]
    size: int  # content bytes (after dot-unstuffing)
    over_limit: bool  # past max_bytes: headers only
    notes: tuple[str, ...]


def parse_headers(block: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(block, headersonly=True)
    assert isinstance(message, EmailMessage)  # policy.default's message factory
    return message


class _Leaf:
    """A part whose body is being counted (an attachment, or skipped text)."""

    __slots__ = ("attachment", "b64_chars", "encoding", "mime_type", "name", "qp_carry", "size")

    def __init__(self, part: EmailMessage | None) -> None:
        self.attachment = part is not None and _is_attachment(part)
        self.name = part.get_filename() if part is not None and self.attachment else None
        self.mime_type = part.get_content_type() if part is not None else "text/plain"
        encoding = str(part.get("content-transfer-encoding", "")) if part is not None else ""
        self.encoding = encoding.strip().lower()
        self.size = 0
        self.b64_chars = 0
        self.qp_carry = b""

    def count(self, data: bytes) -> None:
        if not self.attachment:
            return
        if self.encoding == "base64":
            self.b64_chars += len(data.translate(None, _NOT_BASE64))
        elif self.encoding == "quoted-printable":
            data = self.qp_carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) <= MAX_QP_LINE:
                self.qp_carry = data
                return
            if cut == 0:
                cut = len(data)
            self.size += len(binascii.a2b_qp(data[:cut]))
            self.qp_carry = data[cut:]
        else:
            self.size += len(data)

    def finish(self) -> Attachment | None:
        if not self.attachment:
            return None
        if self.qp_carry:
            self.size += len(binascii.a2b_qp(self.qp_carry))
        size = self.b64_chars * 3 // 4 if self.encoding == "base64" else self.size
        return Attachment(self.name, self.mime_type, size)


def _is_attachment(part: EmailMessage) -> bool:
    return (part.get_content_disposition() == "attachment" or part.get_filename() is not None
            or part.get_content_type() == "message/rfc822")


HEADERS = 0  # the message's header block
PART_HEADERS = 1
BODY = 2  # a leaf part, a preamble or an epilogue: counted, delimiters looked for
SKIP = 3  # past the limit, or lost: bytes are only counted


class MessageReader:
    """Fed a message's content in pieces; `finish()` summarises it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._state = HEADERS
        self._block = bytearray()  # the header block being collected
        self._scan = 0  # where in _block to look for its end next
        self._headers: EmailMessage | None = None
        self._raw_headers = b""
        self._delimiters: list[bytes] = []  # b"--" + boundary, outermost first
        self._leaf: _Leaf | None = None
        self._held_newline = b""  # a line end that belongs to the next delimiter if one follows
        self._at_line_start = True
        self._carry = b""
        self._parts = 0
        self._attachments: list[Attachment] = []
        self._notes: list[str] = []
        self.over_limit = False

    @property
    def buffered(self) -> int:
        """Bytes held: the header block being collected and the carried partial line."""
        return len(self._block) + len(self._carry) + len(self._held_newline)

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self._state != SKIP:
            if self._carry:
                data = self._carry + data
                self._carry = b""
            pos = 0
            while pos < len(data) and self._state != SKIP:
                pos = self._read_headers(data, pos) if self._state != BODY else self._read_body(data, pos)
        if self.size > self.max_bytes and not self.over_limit and self._headers is not None:
            self.over_limit = True
            self._state = SKIP
            self._carry = b""
            self._leaf = None

    def finish(self) -> MessageSummary:
        if self._state == HEADERS and self._block:
            self._end_top_headers(bytes(self._block) + b"\r\n\r\n")  # content without the blank line
        if self._state == BODY and self._leaf is not None:
            self._count(self._carry)
            self._end_leaf()
        attachments = () if self.over_limit else tuple(self._attachments)
        return MessageSummary(self._headers, self._raw_headers, attachments, self.size, self.over_limit,
                              tuple(self._notes))

    # -- header blocks ----------------------------------------------------------------

    def _read_headers(self, data: bytes, pos: int) -> int:
        block = self._block
        before = len(block)
        block += data[pos:]
        end = _block_end(block, self._scan)
        limit = MAX_HEADER_BYTES if self._state == HEADERS else MAX_PART_HEADER_BYTES
        if end < 0:
            self._scan = max(0, len(block) - 3)
            if len(block) > limit:
                self._over_header_limit(block, limit)
            return len(data)
        consumed = end - before
        text = bytes(block[:end])
        self._block = bytearray()
        self._scan = 0
        if self._state == HEADERS:
            self._end_top_headers(text)
        else:
            self._end_part_headers(text)
        return pos + consumed

    def _over_header_limit(self, block: bytearray, limit: int) -> None:
        if self._state == HEADERS:
            cut = block.rfind(b"\n", 0, limit) + 1
            self._end_top_headers(bytes(block[:cut]) + b"\r\n")
            self._notes.append(NOTE_HEADERS_TRUNCATED)
        else:
            self._notes.append(NOTE_PART_HEADERS)
        self._block = bytearray()
        self._state = SKIP

    def _end_top_headers(self, text: bytes) -> None:
        self._raw_headers = text
        self._headers = parse_headers(text)
        self._open(self._headers)

    def _end_part_headers(self, text: bytes) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            self._notes.append(NOTE_TOO_MANY_PARTS)
            self._state = SKIP
            return
        self._open(parse_headers(text))

    def _open(self, part: EmailMessage) -> None:
        """The body of `part` starts: a multipart's preamble, or a leaf."""
        self._state = BODY
        self._at_line_start = True
        self._held_newline = b""
        boundary = part.get_boundary() if part.get_content_maintype() == "multipart" else None
        if boundary:
            if len(self._delimiters) >= MAX_DEPTH:
                self._notes.append(NOTE_TOO_MANY_PARTS)
                self._state = SKIP
                return
            self._delimiters.append(b"--" + boundary.encode("utf-8", "surrogateescape"))
            self._leaf = None
        else:
            self._leaf = _Leaf(part)

    # -- bodies -----------------------------------------------------------------------

    def _read_body(self, data: bytes, pos: int) -> int:
        end = len(data)
        while pos < end:
            if self._at_line_start and self._delimiters and data[pos] == 0x2D:  # "-"
                newline = data.find(b"\n", pos, pos + MAX_DELIMITER_LINE)
                if newline < 0 and end - pos < MAX_DELIMITER_LINE:
                    self._carry = data[pos:]
                    return end
                if newline >= 0 and self._delimiter(data[pos:newline].rstrip(b"\r \t")):
                    return newline + 1
            self._at_line_start = False
            idx = data.find(b"\n-", pos)
            stop = end if idx < 0 else idx + 1
            self._count(data[pos:stop])
            pos = stop
            self._at_line_start = data[stop - 1] == 0x0A
        return end

    def _count(self, chunk: bytes) -> None:
        """Body bytes; a final line end is held back, as it belongs to a delimiter that may follow."""
        if self._held_newline:
            chunk = self._held_newline + chunk
        keep = 2 if chunk.endswith(b"\r\n") else 1 if chunk.endswith((b"\n", b"\r")) else 0
        body = chunk[:len(chunk) - keep]
        self._held_newline = chunk[len(chunk) - keep:]
        if body and self._leaf is not None:
            self._leaf.count(body)

    def _delimiter(self, line: bytes) -> bool:
        """Act on a delimiter line of any enclosing multipart; False when it is none."""
        delimiters = self._delimiters
        for level in range(len(delimiters) - 1, -1, -1):
            delimiter = delimiters[level]
            if not line.startswith(delimiter):
                continue
            rest = line[len(delimiter):]
            if rest not in (b"", b"--"):
                continue
            self._held_newline = b""  # the line end before a delimiter is part of it
            self._end_leaf()
            if rest:  # close delimiter: this multipart ends, its epilogue follows
                del delimiters[level:]
                self._state = BODY
                self._leaf = None
                self._at_line_start = True
            else:
                del delimiters[level + 1:]
                self._state = PART_HEADERS
            return True
        return False

    def _end_leaf(self) -> None:
        leaf = self._leaf
        self._leaf = None
        if leaf is not None:
            attachment = leaf.finish()
            if attachment is not None:
                self._attachments.append(attachment)


def _block_end(block: bytearray, start: int) -> int:
    """End of a header block (just past its empty line, LF or CRLF ends), or -1."""
    if block[:2] == b"\r\n":
        return 2
    if block[:1] == b"\n":
        return 1
    lf_lf = block.find(b"\n\n", start)
    lf_crlf = block.find(b"\n\r\n", start, lf_lf + 2 if lf_lf >= 0 else len(block))
    if lf_crlf >= 0:
        return lf_crlf + 3
    return lf_lf + 2 if lf_lf >= 0 else -1
