"""Sans-IO memcache parsing: text and binary protocols, one direction at a time, plus UDP frames.

The first byte of a message picks the protocol (0x80/0x81: binary).  Value
data is consumed as it streams by; only what the event can show is kept
(`maxvalues` values of at most `maxbytespervalue` bytes, and never more
than MAX_VALUE_BYTES), so a large item costs no memory.  A hole inside a
value is skipped and noted (Packetbeat's behaviour); anywhere else it is
not recoverable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.crlf import take_crlf
from agent.protocols.errors import ParseError
from agent.protocols.memcache import codes
from agent.protocols.memcache.codes import Command
from agent.protocols.stream import Gap, in_sync, lost_sync
from agent.transport.types import Direction

PROTOCOL = "memcache"

MAX_LINE_BYTES = 256 * 1024  # a text command line (multi-get lines can be long)
MAX_VALUE_BYTES = 1 << 20  # value bytes kept for an event, whatever maxbytespervalue says
MAX_SPECIAL_BYTES = 64 * 1024  # binary replies read as a number, a version or a stat
MAX_DATA_BYTES = 1 << 31  # declared value length accepted at all

NOTE_REQUEST_LOSS = "Packet loss while capturing the request"
NOTE_RESPONSE_LOSS = "Packet loss while capturing the response"
NOTE_BAD_EXTRAS = "Invalid extras length"

UDP_HEADER_SIZE = 8
UDP_MAX_DATAGRAMS = 1024

_HEADER = struct.Struct(">BBHBBHIIQ")


@dataclass(frozen=True, slots=True)
class ParserOptions:
    max_values: int = 0  # values kept per message: 0 none, < 0 all (Packetbeat's maxvalues)
    max_bytes_per_value: int = 0  # <= 0: no limit but MAX_VALUE_BYTES (maxbytespervalue)
    parse_unknown: bool = False  # unknown text commands become UNKNOWN messages, not errors

    @property
    def keep_bytes(self) -> int:
        if self.max_values == 0:
            return 0
        if self.max_bytes_per_value <= 0:
            return MAX_VALUE_BYTES
        return min(self.max_bytes_per_value, MAX_VALUE_BYTES)


@dataclass(frozen=True, slots=True)
class McMessage:
    ts_ns: int
    size: int  # bytes on the wire, lost bytes excluded
    is_request: bool
    is_binary: bool
    command: Command
    keys: tuple[str, ...] = ()
    flags: int = 0
    exptime: int = 0
    value: int = 0  # delta, counter value, verbosity, sleep_us, automove...
    value2: int = 0  # initial (binary counters)
    ivalue: int = 0  # source_class
    ivalue2: int = 0  # dest_class
    cas: int | None = None
    noreply: bool = False
    byte_count: int = 0  # value length declared (sum when replies are merged)
    bytes_lost: int = 0
    count_values: int = 0
    values: tuple[bytes, ...] = ()
    data: bytes | None = None  # the (last) value of a text request
    stats: tuple[tuple[str, str], ...] = ()
    raw_args: str = ""
    line: str = ""
    error_msg: str | None = None
    version: str | None = None
    opcode: int = 0
    status: int = 0
    vbucket: int = 0
    opaque: int = 0
    quiet: bool = False
    notes: tuple[str, ...] = ()

    done: bool = True  # False for a reply that more replies extend (VALUE, STAT, a binary stat with a key)

    @property
    def expects_no_reply(self) -> bool:
        """No reply will come when all goes well (text noreply, binary quiet commands except reads)."""
        if self.is_binary:
            return self.quiet and self.opcode not in codes.QUIET_READS
        return self.noreply


def merge_replies(prev: McMessage, msg: McMessage, max_values: int) -> McMessage | None:
    """`prev` extended by `msg` (VALUE...END, STAT...END, binary stats), or None when they do not merge."""
    if prev.done or prev.is_binary != msg.is_binary:
        return None
    if prev.is_binary:
        if prev.opcode != codes.OP_STAT or msg.opcode != codes.OP_STAT or prev.opaque != msg.opaque:
            return None
    elif prev.command is codes.VALUE_REPLY:
        if msg.command is not codes.VALUE_REPLY and msg.command is not codes.END_REPLY:
            return None
        values = prev.values
        if msg.values and (max_values < 0 or len(values) < max_values):
            room = len(msg.values) if max_values < 0 else max_values - len(values)
            values = values + msg.values[:room]
        return replace(prev, size=prev.size + msg.size, byte_count=prev.byte_count + msg.byte_count,
                       keys=prev.keys + msg.keys, count_values=prev.count_values + msg.count_values, values=values,
                       bytes_lost=prev.bytes_lost + msg.bytes_lost, notes=prev.notes + msg.notes, done=msg.done)
    elif prev.command is codes.STAT_REPLY:
        if msg.command is not codes.STAT_REPLY and msg.command is not codes.END_REPLY:
            return None
    else:
        return None
    return replace(prev, size=prev.size + msg.size, stats=prev.stats + msg.stats, notes=prev.notes + msg.notes,
                   done=msg.done)


class _Draft:
    """The message being parsed."""

    __slots__ = ("command", "fields", "is_binary", "is_request", "keep", "lost", "notes", "parts", "size_start",
                 "special", "ts_ns", "value_crlf", "value_left")

    def __init__(self, ts_ns: int, start: int) -> None:
        self.ts_ns = ts_ns
        self.size_start = start
        self.is_request = False
        self.is_binary = False
        self.command: Command = codes.UNKNOWN_COMMAND
        self.fields: dict[str, object] = {}
        self.notes: list[str] = []
        self.value_left = -1
        self.value_crlf = False
        self.keep = 0
        self.parts: list[bytes] = []
        self.lost = 0
        self.special = ""


def _uint(raw: bytes, what: str, direction: Direction, offset: int) -> int:
    if raw.isdigit() and len(raw) <= 20:
        value = int(raw)
        if value < 1 << 64:
            return value
    raise ParseError(PROTOCOL, direction, offset, f"expected a number for {what}, got {raw[:24]!r}")


def _int(raw: bytes, what: str, direction: Direction, offset: int) -> int:
    if raw[:1] == b"-":
        return -_uint(raw[1:], what, direction, offset)
    return _uint(raw, what, direction, offset)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class McParser:
    """Incremental parser for one direction of a memcache TCP connection (or one UDP message)."""

    def __init__(self, direction: Direction, options: ParserOptions | None = None) -> None:
        self.direction = direction
        self.options = options or ParserOptions()
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_LINE_BYTES)
        self._draft: _Draft | None = None

    def reset(self) -> None:
        self.buf.clear()
        self._draft = None

    @property
    def idle(self) -> bool:
        return self._draft is None and not self.buf.unread

    @property
    def buffered(self) -> int:
        """Bytes held waiting for more input (value data streams through and is not held)."""
        return self.buf.unread

    # -- feeding -------------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> list[McMessage]:
        rb = self.buf
        if data:
            rb.feed(data, ts_ns)
        out: list[McMessage] = []
        buf = rb.data
        while True:
            draft = self._draft
            if draft is None:
                if rb.pos >= len(buf):
                    break
                draft = self._draft = _Draft(ts_ns, rb.offset)
                draft.is_binary = buf[rb.pos] in (codes.MAGIC_REQUEST, codes.MAGIC_RESPONSE)
            if draft.value_left >= 0:
                if not self._read_value(draft, out):
                    break
            elif draft.is_binary:
                if not self._read_binary_header(draft, out):
                    break
            elif not self._read_text_line(draft, out):
                break
        return out

    def gap(self, nbytes: int, ts_ns: int) -> Gap[McMessage]:
        """Skip a hole of `nbytes`: in sync when it fell inside a value (the message goes on, noted)."""
        draft = self._draft
        rb = self.buf
        if draft is None or draft.value_left < 0 or nbytes > draft.value_left or rb.unread:
            return lost_sync()
        draft.value_left -= nbytes
        draft.lost += nbytes
        rb.skip_unbuffered(nbytes)
        note = NOTE_REQUEST_LOSS if draft.is_request else NOTE_RESPONSE_LOSS
        if note not in draft.notes:
            draft.notes.append(note)
        return in_sync()

    # -- text --------------------------------------------------------------------------

    def _read_text_line(self, draft: _Draft, out: list[McMessage]) -> bool:
        rb = self.buf
        start = rb.pos
        line = rb.crlf_line(MAX_LINE_BYTES)
        if line is None:
            return False
        stripped = line.lstrip(b" ")
        command, _, rest = stripped.partition(b" ")
        if not command:
            raise rb.error("empty command line", start)
        draft.is_request = self.direction is Direction.TO_SERVER
        cmd: Command | None
        if draft.is_request:
            cmd = codes.TEXT_REQUESTS.get(command)
            if cmd is None:
                sub = codes.TEXT_SUBCOMMANDS.get(command)
                if sub is not None:
                    name, _, rest = rest.lstrip(b" ").partition(b" ")
                    cmd = sub.get(name)
        else:
            cmd = codes.TEXT_REPLIES.get(command)
            if cmd is None and command.isdigit():
                draft.command = codes.COUNTER_REPLY
                draft.fields["value"] = _uint(command, "counter value", self.direction, rb.base + start)
                self._yield(draft, out)
                return True
        if cmd is None:
            if not self.options.parse_unknown:
                raise rb.error(f"unknown memcache command {command[:32]!r}", start)
            draft.command = codes.UNKNOWN_COMMAND
            draft.fields["line"] = _text(line)
            self._yield(draft, out)
            return True
        draft.command = cmd
        self._text_args(draft, cmd, rest, rb.base + start)
        if cmd.data:
            self._start_value(draft, int(draft.fields.get("byte_count", 0)), crlf=True)  # type: ignore[call-overload]
        else:
            self._yield(draft, out)
        return True

    def _text_args(self, draft: _Draft, cmd: Command, rest: bytes, offset: int) -> None:
        fields = draft.fields
        tokens = rest.split()
        i = 0
        d = self.direction
        for kind in cmd.args:
            optional = kind.endswith("?")
            kind = kind.rstrip("?")
            if kind == "raw":
                fields["raw_args"] = _text(rest)
                continue
            if kind in ("error_msg", "version"):
                fields[kind] = _text(rest)
                continue
            if kind == "keys":
                if i >= len(tokens):
                    raise ParseError(PROTOCOL, d, offset, "message has no keys")
                fields["keys"] = tuple(_text(t) for t in tokens[i:])
                i = len(tokens)
                continue
            if i >= len(tokens) or (kind == "exptime" and optional and tokens[i] == b"noreply"):
                if optional:
                    continue
                raise ParseError(PROTOCOL, d, offset, f"{cmd.name}: missing {kind}")
            token = tokens[i]
            i += 1
            if kind == "stat":
                fields["stats"] = ((_text(token), _text(tokens[i]) if i < len(tokens) else ""),)
                i += 1
            else:
                self._token_arg(fields, kind, token, offset)

    def _token_arg(self, fields: dict[str, object], kind: str, token: bytes, offset: int) -> None:
        """One argument of a text command line that is one token."""
        d = self.direction
        if kind == "noreply":
            if not token.startswith(b"noreply"):
                raise ParseError(PROTOCOL, d, offset, "expected noreply in argument list")
            fields["noreply"] = True
        elif kind == "key":
            fields["keys"] = (_text(token),)
        elif kind in ("exptime", "source_class", "dest_class"):
            value = _int(token, kind, d, offset)
            fields[{"exptime": "exptime", "source_class": "ivalue", "dest_class": "ivalue2"}[kind]] = value
        elif kind == "cas":
            fields["cas"] = _uint(token, kind, d, offset)
        elif kind in ("flags", "bytes"):
            value = _uint(token, kind, d, offset)
            if value > MAX_DATA_BYTES and kind == "bytes":
                raise ParseError(PROTOCOL, d, offset, f"value length {value} out of range")
            fields["byte_count" if kind == "bytes" else kind] = value & 0xFFFFFFFF
        else:  # delta, value, sleep_us, verbosity, automove
            fields["value"] = _uint(token, kind, d, offset)

    # -- binary ------------------------------------------------------------------------

    def _read_binary_header(self, draft: _Draft, out: list[McMessage]) -> bool:
        rb = self.buf
        buf = rb.data
        pos = rb.pos
        if len(buf) - pos < codes.HEADER_SIZE:
            return False
        magic, opcode, key_len, extra_len, _dtype, status, total, opaque, cas = _HEADER.unpack_from(buf, pos)
        head_len = codes.HEADER_SIZE + extra_len + key_len
        if len(buf) - pos < min(head_len, codes.HEADER_SIZE + total):
            return False
        value_len = total - extra_len - key_len
        if value_len < 0:
            raise rb.error(f"body length {total} shorter than extras {extra_len} and key {key_len}", pos)
        if value_len > MAX_DATA_BYTES:
            raise rb.error(f"body length {total} out of range", pos)
        draft.is_request = magic == codes.MAGIC_REQUEST
        command = codes.BINARY_COMMANDS.get(opcode, codes.BINARY_UNKNOWN)
        draft.command = command
        fields = draft.fields
        fields["opcode"] = opcode
        fields["opaque"] = opaque
        if draft.is_request:
            fields["vbucket"] = status
        else:
            fields["status"] = status
        if cas:
            fields["cas"] = cas
        fields["quiet"] = opcode in codes.QUIET_OPCODES
        extras_at = pos + codes.HEADER_SIZE
        if extra_len:
            kinds = command.args if draft.is_request else command.response_args
            if kinds:
                self._binary_extras(draft, kinds, bytes(buf[extras_at:extras_at + extra_len]))
        if key_len:
            key = bytes(buf[extras_at + extra_len:extras_at + extra_len + key_len])
            fields["keys"] = (_text(key),)
        rb.pos = pos + head_len
        if value_len == 0:
            self._yield(draft, out)
            return True
        if not draft.is_request and command.value and status == 0:
            draft.special = command.value
        self._start_value(draft, value_len, crlf=False)
        return True

    def _binary_extras(self, draft: _Draft, kinds: tuple[str, ...], extras: bytes) -> None:
        offset = 0
        for kind in kinds:
            size = codes.EXTRA_SIZES[kind]
            if offset + size > len(extras):
                draft.notes.append(NOTE_BAD_EXTRAS)
                return
            value = int.from_bytes(extras[offset:offset + size], "big")
            offset += size
            if kind in ("delta", "verbosity32"):
                draft.fields["value"] = value
            elif kind == "initial":
                draft.fields["value2"] = value
            else:
                draft.fields[kind] = value

    # -- values ------------------------------------------------------------------------

    def _start_value(self, draft: _Draft, length: int, crlf: bool) -> None:
        draft.value_left = length
        draft.value_crlf = crlf
        draft.fields["byte_count"] = length
        draft.keep = MAX_SPECIAL_BYTES if draft.special else self.options.keep_bytes

    def _read_value(self, draft: _Draft, out: list[McMessage]) -> bool:
        rb = self.buf
        buf = rb.data
        left = draft.value_left
        if left:
            pos = rb.pos
            take = min(left, len(buf) - pos)
            kept = sum(len(p) for p in draft.parts)
            keep = min(take, draft.keep - kept)
            if keep > 0:
                draft.parts.append(bytes(buf[pos:pos + keep]))
            rb.pos = pos + take
            draft.value_left = left - take
            if draft.value_left:
                return False
        if draft.value_crlf and not take_crlf(rb, "value data"):
            return False
        draft.value_left = -1
        data = b"".join(draft.parts)
        draft.parts = []
        fields = draft.fields
        special = draft.special
        if draft.lost:
            fields["count_values"] = 1
        elif special == "counter" and len(data) >= 8:
            fields["value"] = int.from_bytes(data[:8], "big")
        elif special == "version":
            fields["version"] = _text(data)
        elif special == "stat":
            keys = fields.get("keys")
            if not keys:
                raise rb.error("message has no keys")
            fields["stats"] = ((keys[0], _text(data)),)  # type: ignore[index]
        else:
            fields["count_values"] = 1
            if self.options.max_values != 0:
                fields["values"] = (data,)
                fields["data"] = data
        self._yield(draft, out)
        return True

    def _yield(self, draft: _Draft, out: list[McMessage]) -> None:
        size = self.buf.offset - draft.size_start - draft.lost
        fields = draft.fields
        command = draft.command
        if draft.is_binary:
            done = draft.is_request or fields.get("opcode") != codes.OP_STAT or "keys" not in fields
        else:
            done = draft.is_request or (command is not codes.VALUE_REPLY and command is not codes.STAT_REPLY)
        out.append(McMessage(draft.ts_ns, size, draft.is_request, draft.is_binary, command, bytes_lost=draft.lost,
                             notes=tuple(draft.notes), done=done, **fields))  # type: ignore[arg-type]
        self._draft = None


# -- UDP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpHeader:
    request_id: int
    seq: int
    count: int


def parse_udp_header(datagram: bytes, direction: Direction) -> UdpHeader:
    """The 8-byte frame header memcache puts before each UDP datagram."""
    if len(datagram) < UDP_HEADER_SIZE:
        raise ParseError(PROTOCOL, direction, 0, f"UDP frame header needs 8 bytes, got {len(datagram)}")
    request_id, seq, count = struct.unpack_from(">HHH", datagram)
    if count == 0 or count > UDP_MAX_DATAGRAMS:
        raise ParseError(PROTOCOL, direction, 4, f"invalid datagram count {count}")
    if seq >= count:
        raise ParseError(PROTOCOL, direction, 2, f"datagram {seq} out of range (count {count})")
    return UdpHeader(request_id, seq, count)


def parse_udp_message(payload: bytes, direction: Direction, ts_ns: int, options: ParserOptions,
                      ) -> McMessage:
    """The one message (replies merged) a reassembled UDP payload holds."""
    parser = McParser(direction, options)
    messages = parser.feed(payload, ts_ns)
    if not messages or not parser.idle:
        raise ParseError(PROTOCOL, direction, len(payload), "attempt to parse incomplete message failed")
    msg = messages[0]
    for extra in messages[1:]:
        merged = merge_replies(msg, extra, options.max_values)
        if merged is None:
            break
        msg = merged
    return msg
