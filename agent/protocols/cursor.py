"""A cursor over one complete message: fixed-size reads, counted and NUL-terminated strings, exact spans.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes, subclasses only in compiled
modules); an edit is used natively only after set-up rebuilds (`scripts/accel.py build`).

dnspython's wire parser is the model: every read checks its bounds and a
read past the end raises one typed error, `ShortRead` (a `ParseError`),
so decoders never compare lengths by hand.  `span(n)` is a sub-cursor over
the next n bytes (the cursor moves past them); `finish()` checks a span was
consumed exactly.  Reads are named by byte order: `u16`/`i32` are network
order (big-endian), `u16le`/`i32le` little-endian.

The `what` argument names the field in the error ("responseFlags: message
ends early"), for protocols that publish the reason as an event note.
"""

from __future__ import annotations

import struct
from typing import Final

from agent.protocols.errors import ParseError, ShortRead
from agent.transport.types import Direction

_U16: Final = struct.Struct(">H").unpack_from
_U32: Final = struct.Struct(">I").unpack_from
_U48: Final = struct.Struct(">HI").unpack_from
_U64: Final = struct.Struct(">Q").unpack_from
_I16: Final = struct.Struct(">h").unpack_from
_I32: Final = struct.Struct(">i").unpack_from
_I64: Final = struct.Struct(">q").unpack_from
_U16LE: Final = struct.Struct("<H").unpack_from
_U32LE: Final = struct.Struct("<I").unpack_from
_U64LE: Final = struct.Struct("<Q").unpack_from
_I32LE: Final = struct.Struct("<i").unpack_from
_I64LE: Final = struct.Struct("<q").unpack_from


class Cursor:
    """Reads over data[pos:end]; ShortRead past `end`."""

    __slots__ = ("data", "direction", "end", "pos", "protocol")

    def __init__(self, data: bytes, pos: int = 0, end: int = -1, protocol: str = "",
                 direction: Direction | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end < 0 else end
        self.protocol = protocol
        self.direction = direction

    # -- bounds ----------------------------------------------------------------------

    def error(self, reason: str, offset: int = -1) -> ParseError:
        """A ParseError of this message, at `offset` (default: the read position)."""
        return ParseError(self.protocol, self.direction, self.pos if offset < 0 else offset, reason)

    def short(self, what: str) -> ShortRead:
        return ShortRead(self.protocol, self.direction, self.pos, f"{what}: message ends early")

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise self.short(what)
        self.pos = pos + n
        return pos

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def finish(self) -> None:
        """A span must be read to its end: bytes left over are malformed."""
        if self.pos != self.end:
            raise self.error(f"{self.end - self.pos} bytes left over at the end of the field")

    # -- integers ----------------------------------------------------------------------

    def u8(self, what: str = "uint8") -> int:
        return self.data[self._need(1, what)]

    def u16(self, what: str = "uint16") -> int:
        value: int = _U16(self.data, self._need(2, what))[0]
        return value

    def u32(self, what: str = "uint32") -> int:
        value: int = _U32(self.data, self._need(4, what))[0]
        return value

    def u48(self, what: str = "uint48") -> int:
        high, low = _U48(self.data, self._need(6, what))
        return int(high) << 32 | int(low)

    def u64(self, what: str = "uint64") -> int:
        value: int = _U64(self.data, self._need(8, what))[0]
        return value

    def i16(self, what: str = "int16") -> int:
        value: int = _I16(self.data, self._need(2, what))[0]
        return value

    def i32(self, what: str = "int32") -> int:
        value: int = _I32(self.data, self._need(4, what))[0]
        return value

    def i64(self, what: str = "int64") -> int:
        value: int = _I64(self.data, self._need(8, what))[0]
        return value

    def u16le(self, what: str = "uint16") -> int:
        value: int = _U16LE(self.data, self._need(2, what))[0]
        return value

    def u24le(self, what: str = "uint24") -> int:
        pos = self._need(3, what)
        data = self.data
        return data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16

    def u32le(self, what: str = "uint32") -> int:
        value: int = _U32LE(self.data, self._need(4, what))[0]
        return value

    def u64le(self, what: str = "uint64") -> int:
        value: int = _U64LE(self.data, self._need(8, what))[0]
        return value

    def i32le(self, what: str = "int32") -> int:
        value: int = _I32LE(self.data, self._need(4, what))[0]
        return value

    def i64le(self, what: str = "int64") -> int:
        value: int = _I64LE(self.data, self._need(8, what))[0]
        return value

    # -- bytes ---------------------------------------------------------------------------

    def take(self, n: int, what: str = "field") -> bytes:
        pos = self._need(n, what)
        return bytes(self.data[pos:pos + n])

    def skip(self, n: int, what: str = "field") -> None:
        self._need(n, what)

    def rest(self) -> bytes:
        pos, self.pos = self.pos, self.end
        return bytes(self.data[pos:self.end])

    def cstring(self, what: str = "string") -> bytes:
        """Bytes up to a NUL (consumed, not returned)."""
        end = self.data.find(b"\0", self.pos, self.end)
        if end < 0:
            raise ShortRead(self.protocol, self.direction, self.pos, f"{what}: unterminated string")
        start = self.pos
        self.pos = end + 1
        return bytes(self.data[start:end])

    def span(self, n: int, what: str = "span") -> Cursor:
        """The next `n` bytes as a cursor of their own (this one moves past them)."""
        pos = self._need(n, what)
        return Cursor(self.data, pos, pos + n, self.protocol, self.direction)
