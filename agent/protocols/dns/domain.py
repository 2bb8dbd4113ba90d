"""Domain names on the wire (compression pointers, presentation form) and DNS text forms.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes); an edit is used natively
only after set-up rebuilds (`scripts/accel.py build`).

`NameCursor` is the shared message cursor (agent/protocols/cursor.py: bounded
reads, ShortRead past the end, exact spans) with the one thing DNS adds:
names.  Names inside a span may point back into the whole message but never
past the span's end.

Compression pointers may only point backwards: each pointer must land before
the start of the name (or before the previous pointer's target), so every
name is read in a bounded number of steps and loops are impossible.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from agent.protocols.cursor import Cursor
from agent.transport.types import Direction

MAX_NAME_WIRE: Final = 255  # octets of a name on the wire, root label included (RFC 1035 §2.3.4)
# Names without compression pointers whose presentation form is remembered, by their wire bytes: a
# resolver sees the same names again and again, and finding where one ends and looking it up costs a
# tenth of walking and escaping its labels.  The whole table is dropped when full (at most about 2 MB).
PLAIN_NAME_CACHE_LIMIT = 8192
_plain_names: dict[bytes, tuple[str, int]] = {}  # wire bytes -> (presentation, wire octets before the root)


class NameCursor(Cursor):
    """The shared message cursor, plus domain names that may point back into the whole message."""

    __slots__ = ("names",)

    def __init__(self, data: bytes, pos: int = 0, end: int = -1, direction: Direction | None = None,
                 names: dict[int, tuple[str, int]] | None = None) -> None:
        super().__init__(data, pos, end, "dns", direction)
        # Names already read in this message, by offset: (presentation, wire octets).
        self.names: dict[int, tuple[str, int]] = {} if names is None else names

    def span(self, n: int, what: str = "span") -> NameCursor:
        """The next `n` bytes as a cursor of their own (this one moves past them), sharing the name table."""
        pos = self._need(n, what)
        return NameCursor(self.data, pos, pos + n, self.direction, self.names)

    def counted(self) -> bytes:
        """A <length uint8><bytes> character-string."""
        return self.take(self.u8(), "character-string")

    def labels(self) -> list[bytes]:
        """A possibly compressed domain name, as its labels (the root label excluded)."""
        buf = self.data
        end = self.end
        pos = self.pos
        limit = pos  # a pointer must land strictly before this
        resume = -1  # where the cursor continues once the name is read
        budget = MAX_NAME_WIRE
        out: list[bytes] = []
        while True:
            length = self._length_at(pos, end)
            kind = length & 0xC0
            if kind == 0:
                if length == 0:
                    pos += 1
                    break
                nxt = self._label_end(pos, length, end)
                budget -= length + 1
                if budget <= 0:
                    raise self.error(f"name longer than {MAX_NAME_WIRE} octets", pos)
                out.append(buf[pos + 1:nxt])
                pos = nxt
            elif kind == 0xC0:
                target = self._pointer_target(pos, limit)
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
        buf = self.data
        pos = self.pos
        if pos + 1 < self.end and buf[pos] >= 0xC0:  # the usual owner name: one pointer to a name already read
            target = (buf[pos] & 0x3F) << 8 | buf[pos + 1]
            if target < pos:
                known = self.names.get(target)
                if known is not None:
                    self.pos = pos + 2
                    return known[0]
        return self._walk_name()

    def _length_at(self, pos: int, end: int) -> int:
        """The octet that starts a label at `pos`: its length, or the mark of a pointer or extended label."""
        if pos >= end:
            raise self.error("name runs past the end of its field", pos)
        return self.data[pos]

    def _label_end(self, pos: int, length: int, end: int) -> int:
        """Where the label of `length` octets at `pos` ends, inside the field."""
        nxt = pos + 1 + length
        if nxt > end:
            raise self.error("label runs past the end of its field", pos)
        return nxt

    def _pointer_target(self, pos: int, limit: int) -> int:
        """Where the compression pointer at `pos` leads; it must point back before `limit`."""
        if pos + 1 >= self.end:
            raise self.error("compression pointer cut short", pos)
        target = (self.data[pos] & 0x3F) << 8 | self.data[pos + 1]
        if target >= limit:
            raise self.error(f"compression pointer to {target} does not point backwards", pos)
        return target

    def _remembered_name(self) -> str | None:
        """The name at the cursor when it has no compression pointer and was read before (in any message)."""
        buf = self.data
        end = self.end
        start = pos = self.pos
        while pos < end:
            length = buf[pos]
            if length == 0:
                if pos == start:
                    return None  # the root: nothing to remember
                known = _plain_names.get(buf[start:pos + 1])
                if known is None:
                    return None
                self.pos = pos + 1
                self.names[start] = known
                return known[0]
            if length & 0xC0:
                return None
            pos += 1 + length
        return None  # runs past the end: the walk says how

    def _walk_name(self) -> str:
        remembered = self._remembered_name()
        if remembered is not None:
            return remembered
        buf = self.data
        end = self.end
        pos = self.pos
        names = self.names
        start = pos
        limit = pos
        resume = -1
        used = 0  # wire octets of the labels so far
        parts: list[str] = []
        suffix, suffix_used = "", 0
        while True:
            length = self._length_at(pos, end)
            kind = length & 0xC0
            if kind == 0:
                if length == 0:
                    pos += 1
                    break
                nxt = self._label_end(pos, length, end)
                used += length + 1
                if used >= MAX_NAME_WIRE:
                    raise self.error(f"name longer than {MAX_NAME_WIRE} octets", pos)
                parts.append(label_text(buf[pos + 1:nxt]))
                pos = nxt
            elif kind == 0xC0:
                target = self._pointer_target(pos, limit)
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
        if resume < 0:  # no pointer: the name is its own bytes
            _remember_plain(buf[start:pos], text, used)
        return text


def _remember_plain(wire: bytes, text: str, used: int) -> None:
    if len(_plain_names) >= PLAIN_NAME_CACHE_LIMIT:
        _plain_names.clear()
    _plain_names[wire] = (text, used)


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
_LABEL: Final = _table(".' @;()\"\\", {})
_TEXT: Final = _table("\"\\", {})
_OPAQUE: Final = _table("\"\\", {9: "\\t", 13: "\\r", 10: "\\n"})
_LABEL_PLAIN: Final = _plain(_LABEL)
_TEXT_PLAIN: Final = _plain(_TEXT)
_OPAQUE_PLAIN: Final = _plain(_OPAQUE)


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
