"""SMTP on the wire (RFC 5321): command lines, replies, and the message content between them.

Sans-IO, one parser per direction, each reading through a `ReceiveBuffer`.

- The client side (`ClientParser`) reads command lines.  What follows some
  commands depends on the server's answer, which the session pairs: after
  DATA, AUTH and STARTTLS the parser *holds* the client's bytes (RFC 2920:
  those commands end a pipelined group, so the client waits too) until the
  session says what they are: message content (354), a SASL response (334),
  TLS (220), or commands again.  BDAT chunks (RFC 3030) follow their command
  at once and are read by their announced size.
- DATA content is dot-unstuffed as it streams (RFC 5321 section 4.5.2) and
  ends at CRLF "." CRLF.  It is handed out in pieces (`Content`), never
  buffered whole: a 100 MB message costs a segment of memory.  A dot line
  ended or preceded by a bare LF is not the end of the data (the RFC's rule);
  it gets the note NOTE_BARE_LF_DOT, since servers that read it as the end
  are what "SMTP smuggling" exploits.
- The server side (`ServerParser`) assembles multi-line replies ("250-..."
  lines up to "250 ...") whole, with the enhanced status code (RFC 3463)
  taken off each line.

Lines end with CRLF or a bare LF.  Limits: a command or reply line longer
than MAX_LINE, or client bytes held past MAX_HELD, is a `ParseError`; reply
lines past MAX_REPLY_LINES / MAX_REPLY_BYTES are counted, not kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.transport.types import Direction

PROTOCOL = "smtp"

MAX_LINE = 64 * 1024  # a command or reply line (AUTH tokens of GSSAPI/XOAUTH2 run to kilobytes)
MAX_HELD = 256 * 1024  # client bytes held while DATA/AUTH/STARTTLS awaits its answer
MAX_REPLY_LINES = 256
MAX_REPLY_BYTES = 64 * 1024
MAX_VERB = 16

NOTE_BARE_LF_DOT = "A dot line with a bare LF in the message content (not its end; an SMTP smuggling pattern)"

# Commands after which the client waits for the server's answer before it sends anything else.
DECIDING = frozenset({"DATA", "AUTH", "STARTTLS"})

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # upper case; "" for an empty line
    args: str  # the rest of the line, as sent (UTF-8, SMTPUTF8 allows it)
    size: int  # bytes on the wire, line end included
    ts_ns: int


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """A client line answering a 334 challenge during AUTH."""

    text: str
    size: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Content:
    """Message content: a dot-unstuffed piece of DATA, or a piece of a BDAT chunk."""

    data: bytes
    wire_size: int  # bytes it took on the wire (dot-stuffing included)
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ContentEnd:
    """The end of DATA content: the "." line."""

    wire_size: int  # the end-of-data line
    ts_ns: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str  # "2.1.0"; "" when the reply has none
    lines: tuple[str, ...]  # each line's text after the code and the enhanced code
    size: int  # bytes on the wire, every line
    ts_ns: int
    truncated: bool = False  # lines past MAX_REPLY_LINES / MAX_REPLY_BYTES were not kept

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_error(self) -> bool:
        return self.code >= 400


ClientMessage = Command | SaslResponse | Content | ContentEnd


class ClientMode(Enum):
    COMMAND = "command"
    HOLD = "hold"  # waiting for the session to say what the next bytes are
    SASL = "sasl"  # the next line answers an AUTH challenge
    DATA = "data"  # message content up to CRLF . CRLF
    CHUNK = "chunk"  # a BDAT chunk of known size
    RESYNC = "resync"  # after lost bytes: skip to the next line
    OPAQUE = "opaque"  # TLS after STARTTLS: nothing is read


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def parse_command(line: bytes, size: int, ts_ns: int, direction: Direction, offset: int) -> Command:
    """A command line (without its line end) as verb and arguments."""
    space = line.find(b" ")
    verb = line if space < 0 else line[:space]
    if len(verb) > MAX_VERB or (verb and not verb.isalpha()):
        raise ParseError(PROTOCOL, direction, offset, "not an SMTP command line")
    args = b"" if space < 0 else line[space + 1:]
    return Command(verb.decode("ascii").upper(), _text(args).strip(" "), size, ts_ns)


class ClientParser:
    """The client's side of one connection."""

    __slots__ = ("_at_line_start", "_chunk_left", "_notes", "_tail", "buffer", "mode")

    def __init__(self) -> None:
        self.buffer = ReceiveBuffer(PROTOCOL, Direction.TO_SERVER, MAX_LINE)
        self.mode = ClientMode.COMMAND
        self._at_line_start = True  # DATA: the next byte starts a line (a dot there is special)
        self._chunk_left = 0
        self._notes: list[str] = []
        self._tail = b""  # the last content bytes read, for patterns across segments

    def feed(self, data: bytes, ts_ns: int) -> list[ClientMessage]:
        """The next bytes (b"" to go on with what is held after `resume`); the messages they completed."""
        if data and self.mode is not ClientMode.OPAQUE:
            self.buffer.feed(data, ts_ns)
        out: list[ClientMessage] = []
        buf = self.buffer
        while buf.unread:
            mode = self.mode
            if mode is ClientMode.COMMAND:
                if not self._command(out):
                    break
            elif mode is ClientMode.DATA:
                self._content(out)
                if self.mode is ClientMode.DATA:
                    break
            elif mode is ClientMode.CHUNK:
                self._chunk(out)
            elif mode is ClientMode.SASL:
                line = self._line()
                if line is None:
                    break
                out.append(SaslResponse(_text(line[0]), line[1], line[2]))
                self.mode = ClientMode.HOLD
            elif mode is ClientMode.RESYNC:
                self._resync()
            else:  # HOLD: bounded; OPAQUE: nothing is buffered
                if buf.unread > MAX_HELD:
                    raise buf.error(f"more than {MAX_HELD} bytes sent before the server answered")
                break
        return out

    def resume(self, mode: ClientMode) -> None:
        """The session paired the deciding reply: what the held bytes are."""
        self.mode = mode
        if mode is ClientMode.DATA:
            self._at_line_start = True
            self._notes = []
            self._tail = b"\r\n"  # the DATA line's end

    def start_chunk(self, size: int) -> None:
        self._chunk_left = size
        self.mode = ClientMode.CHUNK if size else ClientMode.COMMAND

    def take_rest(self) -> bytes:
        """Every byte held and not read (the first bytes of TLS after STARTTLS); nothing is read any more."""
        buf = self.buffer
        rest = bytes(buf.data[buf.pos:])
        buf.clear()
        self.mode = ClientMode.OPAQUE
        return rest

    def gap(self, nbytes: int) -> bool:
        """`nbytes` were lost; True when the framing survived (inside message content)."""
        mode = self.mode
        if mode is ClientMode.OPAQUE:
            return True
        if mode is ClientMode.DATA:
            self.buffer.clear()
            self._at_line_start = False  # unknown: the end of the data is found at the next CRLF . CRLF
            return True
        if mode is ClientMode.CHUNK and nbytes <= self._chunk_left:
            self.buffer.clear()
            self._chunk_left -= nbytes
            if not self._chunk_left:
                self.mode = ClientMode.COMMAND
            return True
        self.reset()
        return False

    def reset(self) -> None:
        """After a ParseError or lost bytes: drop what is buffered and go on at the next line."""
        self.buffer.clear()
        self.mode = ClientMode.RESYNC

    def _line(self) -> tuple[bytes, int, int] | None:
        """(line, wire size, time of its first byte), consumed; None until complete."""
        buf = self.buffer
        start = buf.pos
        ts = buf.ts_at(start)
        line = buf.line(MAX_LINE)
        if line is None:
            return None
        return line, buf.pos - start, ts

    def _command(self, out: list[ClientMessage]) -> bool:
        buf = self.buffer
        offset = buf.offset
        got = self._line()
        if got is None:
            return False
        command = parse_command(got[0], got[1], got[2], Direction.TO_SERVER, offset)
        out.append(command)
        if command.verb in DECIDING:
            self.mode = ClientMode.HOLD
        elif command.verb == "BDAT":
            size = command.args.split(" ", 1)[0]
            if size.isdigit():
                self.start_chunk(int(size))
        return True

    def _resync(self) -> None:
        buf = self.buffer
        idx = buf.find(b"\n")
        if idx < 0:
            buf.pos = len(buf.data)
            return
        buf.pos = idx + 1
        self.mode = ClientMode.COMMAND

    def _chunk(self, out: list[ClientMessage]) -> None:
        buf = self.buffer
        take = min(self._chunk_left, buf.unread)
        ts = buf.ts_at(buf.pos)
        piece = bytes(buf.data[buf.pos:buf.pos + take])
        buf.pos += take
        self._chunk_left -= take
        out.append(Content(piece, take, ts))
        if not self._chunk_left:
            self.mode = ClientMode.COMMAND

    def _content(self, out: list[ClientMessage]) -> None:
        """DATA content up to what is buffered: unstuffed pieces, and ContentEnd at CRLF . CRLF."""
        buf = self.buffer
        data = buf.data
        pos = start = buf.pos
        end = len(data)
        ts = buf.ts_at(pos)
        pieces: list[bytes] = []
        if NOTE_BARE_LF_DOT not in self._notes:
            # Across the previous bytes too: a pattern may straddle two segments.
            edge = self._tail + bytes(data[pos:pos + 4])
            if _bare_lf_dot(edge, 0, len(edge)) or _bare_lf_dot(data, pos, end):
                self._notes.append(NOTE_BARE_LF_DOT)
        while pos < end:
            if self._at_line_start and data[pos] == 0x2E:  # a dot starts the line
                if end - pos < 3 and data[pos:end] in (b".", b".\r"):
                    break  # the end-of-data line, or a stuffed dot: the next bytes tell
                if data[pos + 1:pos + 3] == b"\r\n":
                    if pos > start:
                        out.append(Content(b"".join(pieces), pos - start, ts))
                    out.append(ContentEnd(3, buf.ts_at(pos), tuple(self._notes)))
                    buf.pos = pos + 3
                    self.mode = ClientMode.COMMAND
                    return
                pos += 1  # a stuffed dot: dropped
                start_piece = pos
            else:
                start_piece = pos
            self._at_line_start = False
            # Only a line that starts with a dot needs a look: the bytes before the next one pass as they are.
            idx = data.find(b"\r\n.", pos)
            if idx < 0:
                # Keep a final CR: with the next segment's LF it ends a line.
                stop = end - 1 if data[end - 1] == 13 else end
                pieces.append(bytes(data[start_piece:stop]))
                pos = stop
                self._at_line_start = data[stop - 2:stop] == b"\r\n" if stop - 2 >= start_piece else False
                break
            pieces.append(bytes(data[start_piece:idx + 2]))
            pos = idx + 2
            self._at_line_start = True
        if pos > start:
            out.append(Content(b"".join(pieces), pos - start, ts))
            self._tail = (self._tail + bytes(data[max(start, pos - 4):pos]))[-4:]
        buf.pos = pos


def _bare_lf_dot(data: bytes | bytearray, start: int, end: int) -> bool:
    """A dot line ended or preceded by a bare LF in data[start:end] (data[start - 1] may be read)."""
    for pattern in (b"\n.\n", b"\n.\r\n"):
        idx = data.find(pattern, start, end)
        while idx >= 0:
            if pattern == b"\n.\n" or idx == 0 or data[idx - 1] != 13:
                return True
            idx = data.find(pattern, idx + 1, end)
    return False


class ServerParser:
    """The server's side: replies, each read whole."""

    __slots__ = ("_code", "_lines", "_size", "_start_ts", "_truncated", "buffer", "opaque", "resync", "stepwise")

    def __init__(self) -> None:
        self.buffer = ReceiveBuffer(PROTOCOL, Direction.TO_CLIENT, MAX_LINE)
        self.opaque = False  # TLS after STARTTLS
        self.resync = False
        # One reply per feed while a STARTTLS waits for its answer: the bytes after a 220 may be TLS.
        self.stepwise = False
        self._reset_reply()

    def _reset_reply(self) -> None:
        self._code = 0
        self._lines: list[str] = []
        self._size = 0
        self._start_ts = 0
        self._truncated = False

    def feed(self, data: bytes, ts_ns: int) -> list[Reply]:
        if self.opaque:
            return []
        buf = self.buffer
        if data:
            buf.feed(data, ts_ns)
        out: list[Reply] = []
        while buf.unread:
            start = buf.pos
            offset = buf.offset
            ts = buf.ts_at(start)
            line = buf.line(MAX_LINE)
            if line is None:
                break
            if self.resync:
                self.resync = False
                continue  # the rest of a line cut by lost bytes
            reply = self._reply_line(line, buf.pos - start, ts, offset)
            if reply is not None:
                out.append(reply)
                if self.stepwise:
                    break
        return out

    def _reply_line(self, line: bytes, size: int, ts: int, offset: int) -> Reply | None:
        code_text = line[:3]
        sep = line[3:4]
        if len(code_text) != 3 or not code_text.isdigit() or sep not in (b"", b" ", b"-") \
                or not b"1" <= code_text[:1] <= b"5":
            raise ParseError(PROTOCOL, Direction.TO_CLIENT, offset, "not an SMTP reply line")
        if not self._lines and not self._size:
            self._code = int(code_text)
            self._start_ts = ts
        self._size += size
        if len(self._lines) < MAX_REPLY_LINES and self._size <= MAX_REPLY_BYTES:
            self._lines.append(_text(line[4:]))
        else:
            self._truncated = True
        if sep == b"-":
            return None
        lines = tuple(self._lines)
        match = _ENHANCED.match(lines[0]) if lines else None
        enhanced = ""
        if match is not None:
            enhanced = f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"
            lines = tuple(_strip_enhanced(text) for text in lines)
        reply = Reply(self._code, enhanced, lines, self._size, self._start_ts, self._truncated)
        self._reset_reply()
        return reply

    def take_rest(self) -> bytes:
        buf = self.buffer
        rest = bytes(buf.data[buf.pos:])
        buf.clear()
        self.opaque = True
        return rest

    def gap(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop the reply in progress and buffered bytes; go on at the next line."""
        self.buffer.clear()
        self._reset_reply()
        self.resync = True


def _strip_enhanced(text: str) -> str:
    match = _ENHANCED.match(text)
    return text[match.end():] if match is not None else text
