"""A small cursor over a DNS message: fixed-size reads, counted strings, spans and names.

Every read checks its bounds and raises `ParseError` when the data is short,
so decoders never compare lengths by hand.  A `span` is a sub-cursor over the
next n bytes that must be consumed exactly (`finish`); names inside it may
point back into the whole message but never past the span's end.

Compression pointers may only point backwards: each pointer must land before
the start of the name (or before the previous pointer's target), so every
name is read in a bounded number of steps and loops are impossible.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_NAME_WIRE = 255  # octets of a name on the wire, root label included (RFC 1035 §2.3.4)

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U48 = struct.Struct("!HI").unpack_from
_U64 = struct.Struct("!Q").unpack_from


class Cursor:
    __slots__ = ("buf", "direction", "end", "names", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None, direction: Direction | None = None,
                 names: dict[int, tuple[str, int]] | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.direction = direction
        # Names already read in this message, by offset: (presentation, wire octets).
        self.names: dict[int, tuple[str, int]] = {} if names is None else names

    def error(self, reason: str, offset: int | None = None) -> ParseError:
        return ParseError("dns", self.direction, self.pos if offset is None else offset, reason)

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise self.error(f"{what} needs {n} bytes, {self.end - pos} left")
        self.pos = pos + n
        return pos

    def u8(self) -> int:
        return self.buf[self._need(1, "uint8")]

    def u16(self) -> int:
        value: int = _U16(self.buf, self._need(2, "uint16"))[0]
        return value

    def u32(self) -> int:
        value: int = _U32(self.buf, self._need(4, "uint32"))[0]
        return value

    def u48(self) -> int:
        high, low = _U48(self.buf, self._need(6, "uint48"))
        return int(high) << 32 | int(low)

    def u64(self) -> int:
        value: int = _U64(self.buf, self._need(8, "uint64"))[0]
        return value

    def take(self, n: int) -> bytes:
        pos = self._need(n, "field")
        return self.buf[pos:pos + n]

    def counted(self) -> bytes:
        """A <length uint8><bytes> character-string."""
        n = self.u8()
        pos = self._need(n, "character-string")
        return self.buf[pos:pos + n]

    def rest(self) -> bytes:
        pos, self.pos = self.pos, self.end
        return self.buf[pos:self.end]

    def span(self, n: int) -> Cursor:
        """The next `n` bytes as a cursor of their own (this one moves past them)."""
        pos = self._need(n, "span")
        return Cursor(self.buf, pos, pos + n, self.direction, self.names)

    def finish(self) -> None:
        if self.pos != self.end:
            raise self.error(f"{self.end - self.pos} bytes left over at the end of the field")

    def labels(self) -> list[bytes]:
        """A possibly compressed domain name, as its labels (the root label excluded)."""
        buf = self.buf
        end = self.end
        pos = self.pos
        limit = pos  # a pointer must land strictly before this
        resume = -1  # where the cursor continues once the name is read
        budget = MAX_NAME_WIRE
        out: list[bytes] = []
        while True:
            if pos >= end:
                raise self.error("name runs past the end of its field", pos)
            length = buf[pos]
            kind = length & 0xC0
            if kind == 0:
                if length == 0:
                    pos += 1
                    break
                nxt = pos + 1 + length
                if nxt > end:
                    raise self.error("label runs past the end of its field", pos)
                budget -= length + 1
                if budget <= 0:
                    raise self.error(f"name longer than {MAX_NAME_WIRE} octets", pos)
                out.append(buf[pos + 1:nxt])
                pos = nxt
            elif kind == 0xC0:
                if pos + 1 >= end:
                    raise self.error("compression pointer cut short", pos)
                target = (length & 0x3F) << 8 | buf[pos + 1]
                if target >= limit:
                    raise self.error(f"compression pointer to {target} does not point backwards", pos)
                if resume < 0:
                    resume = pos + 2
                limit = target
                pos = target
            else:
                raise self.error(f"reserved label type 0x{length:02x}", pos)
        self.pos = pos if resume < 0 else resume
        return out

    def name(self) -> str:
        """A domain name in presentation form with its trailing dot ("." for the root).

        Same rules as `labels`; a pointer to a name read before is answered
        from this message's name table instead of being walked again.
        """
        buf = self.buf
        end = self.end
        pos = self.pos
        names = self.names
        if pos + 1 < end and buf[pos] >= 0xC0:  # the usual owner name: one pointer to a name already read
            target = (buf[pos] & 0x3F) << 8 | buf[pos + 1]
            if target < pos:
                known = names.get(target)
                if known is not None:
                    self.pos = pos + 2
                    return known[0]
        start = pos
        limit = pos
        resume = -1
        used = 0  # wire octets of the labels so far
        parts: list[str] = []
        suffix, suffix_used = "", 0
        while True:
            if pos >= end:
                raise self.error("name runs past the end of its field", pos)
            length = buf[pos]
            kind = length & 0xC0
            if kind == 0:
                if length == 0:
                    pos += 1
                    break
                nxt = pos + 1 + length
                if nxt > end:
                    raise self.error("label runs past the end of its field", pos)
                used += length + 1
                if used >= MAX_NAME_WIRE:
                    raise self.error(f"name longer than {MAX_NAME_WIRE} octets", pos)
                parts.append(label_text(buf[pos + 1:nxt]))
                pos = nxt
            elif kind == 0xC0:
                if pos + 1 >= end:
                    raise self.error("compression pointer cut short", pos)
                target = (length & 0x3F) << 8 | buf[pos + 1]
                if target >= limit:
                    raise self.error(f"compression pointer to {target} does not point backwards", pos)
                if resume < 0:
                    resume = pos + 2
                known = names.get(target)
                if known is not None:
                    suffix, suffix_used = known
                    if used + suffix_used >= MAX_NAME_WIRE:
                        raise self.error(f"name longer than {MAX_NAME_WIRE} octets", pos)
                    break
                limit = target
                pos = target
            else:
                raise self.error(f"reserved label type 0x{length:02x}", pos)
        self.pos = pos if resume < 0 else resume
        if not parts:
            return suffix or "."
        text = ".".join(parts) + "." + suffix
        if buf[start] < 0xC0:  # later pointers to this name find it here
            names[start] = (text, used + suffix_used)
        return text


# -- text forms ---------------------------------------------------------------------

def _table(special: str, named: dict[int, str]) -> tuple[str, ...]:
    out = []
    for b in range(256):
        ch = chr(b)
        if b in named:
            out.append(named[b])
        elif ch in special:
            out.append("\\" + ch)
        elif b < 0x20 or b > 0x7E:
            out.append(f"\\{b:03d}")
        else:
            out.append(ch)
    return tuple(out)


def _plain(table: tuple[str, ...]) -> bytes:
    return bytes(b for b in range(256) if table[b] == chr(b))


# Labels escape the characters that are special in zone files; character-strings
# escape quotes and backslashes; opaque RDATA also names \t, \r and \n.
_LABEL = _table(".' @;()\"\\", {})
_TEXT = _table("\"\\", {})
_OPAQUE = _table("\"\\", {9: "\\t", 13: "\\r", 10: "\\n"})
_LABEL_PLAIN = _plain(_LABEL)
_TEXT_PLAIN = _plain(_TEXT)
_OPAQUE_PLAIN = _plain(_OPAQUE)


@lru_cache(maxsize=8192)
def label_text(label: bytes) -> str:
    if not label.translate(None, _LABEL_PLAIN):
        return label.decode("ascii")
    return "".join([_LABEL[b] for b in label])


def text_string(data: bytes) -> str:
    """A character-string as miekg/dns prints it (quotes, backslashes and unprintables escaped)."""
    if not data.translate(None, _TEXT_PLAIN):
        return data.decode("ascii")
    return "".join([_TEXT[b] for b in data])


def opaque_text(data: bytes) -> str:
    """Opaque RDATA as Packetbeat prints it: printable bytes as is, the others as \\DDD."""
    if not data.translate(None, _OPAQUE_PLAIN):
        return data.decode("ascii")
    return "".join([_OPAQUE[b] for b in data])


def wire_name(labels: list[bytes]) -> bytes:
    """A name in uncompressed wire form."""
    return b"".join([bytes((len(label),)) + label for label in labels]) + b"\x00"


def trim_dot(name: str) -> str:
    """The name without its trailing dot; the root stays "."."""
    if len(name) > 1 and name[-1] == ".":
        return name[:-1]
    return name
