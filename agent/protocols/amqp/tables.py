"""AMQP 0-9-1 field values: short strings, field tables and arrays, message properties.

Values come out as Packetbeat publishes them: tables are objects, arrays
are objects keyed "0", "1", ... , decimals and timestamps are strings
(timestamps as `January _2 15:04:05 2006`, in UTC here), byte arrays print
as `[10, 0, 125]`, and a long int ('I') is read unsigned as Packetbeat reads
it.  Every length is checked against the bytes that are really there, so a
hostile length (0xFFFFFFFF) is an error, never an over-read.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from typing import Any

MAX_TABLE_DEPTH = 32  # tables and arrays nested in each other

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")


class FieldError(Exception):
    """Malformed AMQP field data (a length past the end, an unknown type)."""


def short_string(data: bytes, pos: int) -> tuple[str, int]:
    """An AMQP shortstr at `pos`: (text, position after it)."""
    if pos >= len(data):
        raise FieldError(f"short string length missing at {pos}")
    end = pos + 1 + data[pos]
    if end > len(data):
        raise FieldError(f"short string of {data[pos]} bytes at {pos} runs past the end ({len(data)})")
    return data[pos + 1:end].decode("utf-8", "replace"), end


def _long_end(data: bytes, pos: int, what: str) -> int:
    """Where the item at `pos`, its 4-byte length first, ends; it must end within `data`."""
    if pos + 4 > len(data):
        raise FieldError(f"{what} length missing at {pos}")
    end = pos + 4 + int.from_bytes(data[pos:pos + 4], "big")
    if end > len(data):
        raise FieldError(f"{what} at {pos} declares {end - pos - 4} bytes, only {len(data) - pos - 4} left")
    return end


def long_string(data: bytes, pos: int) -> tuple[str, int]:
    end = _long_end(data, pos, "long string")
    return data[pos + 4:end].decode("utf-8", "replace"), end


def timestamp_text(seconds: int) -> str:
    """Packetbeat's `January _2 15:04:05 2006` layout (UTC)."""
    try:
        tm = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    return f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_year}"


def float32(raw: float) -> float:
    """The shortest decimal that reads back as the same float32 (what Go's JSON prints for one)."""
    packed = _F32.pack(raw)
    for digits in range(1, 10):
        candidate = float(f"{raw:.{digits}g}")
        try:
            if _F32.pack(candidate) == packed:
                return candidate
        except OverflowError:  # rounded past the float32 range
            continue
    return raw


def _finite(value: float) -> float | str:
    """NaN and infinities have no JSON form: they are published as text (Go's JSON encoder refuses them)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def decimal_text(scale: int, value: int) -> str:
    """Packetbeat's decimal rendering: the digits with a point `scale` places from the right."""
    digits = str(value)
    cut = len(digits) - scale
    if scale and 0 <= cut < len(digits):
        return digits[:cut] + "." + digits[cut:]
    return digits


def table(data: bytes, pos: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    """A field table at `pos` (its 4-byte length first): (values, position after it)."""
    end = _long_end(data, pos, "table")
    out: dict[str, Any] = {}
    at = pos + 4
    body = data[:end]
    while at < end:
        name, at = short_string(body, at)
        out[name], at = _value(body, at, depth)
    return out, end


def array(data: bytes, pos: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    """A field array, as Packetbeat publishes it: an object keyed by the index."""
    end = _long_end(data, pos, "array")
    out: dict[str, Any] = {}
    at = pos + 4
    body = data[:end]
    index = 0
    while at < end:
        out[str(index)], at = _value(body, at, depth)
        index += 1
    return out, end


def _need(data: bytes, pos: int, size: int) -> None:
    if pos + size > len(data):
        raise FieldError(f"field value of {size} bytes at {pos} runs past the end ({len(data)})")


def _uint(size: int) -> Callable[[bytes, int], int]:
    def read(data: bytes, pos: int) -> int:
        return int.from_bytes(data[pos:pos + size], "big")
    return read


def _struct(fmt: struct.Struct) -> Callable[[bytes, int], Any]:
    def read(data: bytes, pos: int) -> Any:
        return fmt.unpack_from(data, pos)[0]
    return read


def _boolean(data: bytes, pos: int) -> bool:
    return data[pos] == 1


def _float(data: bytes, pos: int) -> Any:
    return _finite(float32(_F32.unpack_from(data, pos)[0]))


def _double(data: bytes, pos: int) -> Any:
    return _finite(_F64.unpack_from(data, pos)[0])


def _decimal(data: bytes, pos: int) -> str:
    return decimal_text(data[pos], int.from_bytes(data[pos + 1:pos + 5], "big"))


def _timestamp(data: bytes, pos: int) -> str:
    return timestamp_text(int.from_bytes(data[pos:pos + 8], "big"))


# Field value types of a fixed size: type octet -> (size, reader).  Integers are read as Packetbeat reads
# them ('I', a long int, unsigned).
_FIXED: dict[int, tuple[int, Callable[[bytes, int], Any]]] = {
    0x49: (4, _uint(4)),  # 'I' long int
    0x74: (1, _boolean),  # 't'
    0x62: (1, _struct(_I8)),  # 'b' short-short int
    0x42: (1, _uint(1)),  # 'B' short-short uint
    0x55: (2, _struct(_I16)),  # 'U' short int
    0x75: (2, _uint(2)),  # 'u' short uint
    0x69: (4, _uint(4)),  # 'i' long uint
    0x4C: (8, _struct(_I64)),  # 'L' long-long int
    0x6C: (8, _uint(8)),  # 'l' long-long uint
    0x66: (4, _float),  # 'f'
    0x64: (8, _double),  # 'd'
    0x44: (5, _decimal),  # 'D' decimal: scale octet, long uint
    0x54: (8, _timestamp),  # 'T'
}


def _value(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise FieldError(f"field type missing at {pos}")
    kind = data[pos]
    pos += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        size, read = fixed
        _need(data, pos, size)
        return read(data, pos), pos + size
    if kind == 0x53:  # 'S' long string
        return long_string(data, pos)
    if kind in (0x46, 0x41):  # 'F' table, 'A' array
        if depth >= MAX_TABLE_DEPTH:
            raise FieldError(f"tables nested deeper than {MAX_TABLE_DEPTH}")
        return table(data, pos, depth + 1) if kind == 0x46 else array(data, pos, depth + 1)
    if kind == 0x73:  # 's' short string
        return short_string(data, pos)
    if kind == 0x56:  # 'V' void
        return None, pos
    if kind == 0x78:  # 'x' byte array (RabbitMQ)
        end = _long_end(data, pos, "byte array")
        return "[" + ", ".join(str(b) for b in data[pos + 4:end]) + "]", end
    raise FieldError(f"unknown field type {kind:#04x} at {pos - 1}")


# Message property flags: (bit in the 16-bit flag word, name, kind)
_PROPERTIES = (
    (15, "content-type", "s"),
    (14, "content-encoding", "s"),
    (13, "headers", "F"),
    (12, "delivery-mode", "o"),
    (11, "priority", "o"),
    (10, "correlation-id", "s"),
    (9, "reply-to", "s"),
    (8, "expiration", "s"),
    (7, "message-id", "s"),
    (6, "timestamp", "T"),
    (5, "type", "s"),
    (4, "user-id", "s"),
    (3, "app-id", "s"),
    (2, "cluster-id", "s"),  # reserved: read to stay aligned, not published (as Packetbeat)
)
_DELIVERY_MODES = {1: "non-persistent", 2: "persistent"}


def properties(data: bytes, pos: int) -> dict[str, Any]:
    """Basic-class content properties at `pos` (the property flags first)."""
    if pos + 2 > len(data):
        raise FieldError("property flags missing")
    flags = int.from_bytes(data[pos:pos + 2], "big")
    at = pos + 2
    more = flags & 1
    while more:  # continuation flag words: no basic-class properties live there
        if at + 2 > len(data):
            raise FieldError("property flags continuation missing")
        more = data[at + 1] & 1
        at += 2
    out: dict[str, Any] = {}
    for bit, name, kind in _PROPERTIES:
        if not flags >> bit & 1:
            continue
        if kind == "s":
            value, at = short_string(data, at)
            if name != "cluster-id":
                out[name] = value
        elif kind == "F":
            headers, at = table(data, at)
            if headers:
                out[name] = headers
        elif kind == "o":
            _need(data, at, 1)
            octet = data[at]
            at += 1
            if name == "priority":
                out[name] = octet
            elif octet in _DELIVERY_MODES:
                out[name] = _DELIVERY_MODES[octet]
        else:
            _need(data, at, 8)
            out[name] = timestamp_text(int.from_bytes(data[at:at + 8], "big"))
            at += 8
    return out
