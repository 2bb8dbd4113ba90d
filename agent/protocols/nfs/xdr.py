"""A bounds-checked cursor over XDR data (RFC 4506): every short read is one typed error.

Lengths read from the wire are checked against the data left and against
named limits before anything is sliced, and variable-length items must
carry their padding to a 4-byte boundary.
"""

from __future__ import annotations

import struct

MAX_OPAQUE = 65536  # bytes in one variable-length opaque or string
MAX_VECTOR = 32768  # items in one variable-length array of unsigned ints

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class XdrError(Exception):
    """A read past the end of the data, or a length over a limit."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class Xdr:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def size(self) -> int:
        return len(self.data)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def uint(self) -> int:
        return self._number(_U32, "unsigned int")

    def uhyper(self) -> int:
        return self._number(_U64, "unsigned hyper")

    def _number(self, kind: struct.Struct, what: str) -> int:
        pos = self.pos
        if pos + kind.size > len(self.data):
            raise XdrError(pos, f"{what} past the end of the data")
        self.pos = pos + kind.size
        value: int = kind.unpack_from(self.data, pos)[0]
        return value

    def opaque(self, length: int) -> bytes:
        """Fixed-length opaque data of `length` bytes, plus its padding."""
        pos = self.pos
        if length < 0 or length > MAX_OPAQUE:
            raise XdrError(pos, f"opaque length {length} is outside 0-{MAX_OPAQUE}")
        padded = (length + 3) & ~3
        if pos + padded > len(self.data):
            raise XdrError(pos, f"opaque of {length} bytes (padded {padded}) past the end of the data")
        self.pos = pos + padded
        return self.data[pos:pos + length]

    def dynamic_opaque(self) -> bytes:
        return self.opaque(self.uint())

    def string(self) -> str:
        return self.dynamic_opaque().decode("utf-8", "replace")

    def uint_vector(self) -> list[int]:
        count = self.uint()
        if count > MAX_VECTOR:
            raise XdrError(self.pos - 4, f"array of {count} items is over the limit of {MAX_VECTOR}")
        pos = self.pos
        if pos + 4 * count > len(self.data):
            raise XdrError(pos, f"array of {count} unsigned ints past the end of the data")
        self.pos = pos + 4 * count
        return list(struct.unpack_from(f"!{count}I", self.data, pos))

    def skip(self, nbytes: int) -> None:
        if self.pos + nbytes > len(self.data):
            raise XdrError(self.pos, f"{nbytes} bytes past the end of the data")
        self.pos += nbytes
