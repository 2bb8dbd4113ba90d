"""Values of the binary protocol: COM_STMT_EXECUTE parameters and binary result rows.

Each value becomes the text MySQL itself would print for it (integers,
floats in their shortest exact form, 'YYYY-MM-DD hh:mm:ss[.ffffff]' dates,
'[-][d ]hh:mm:ss' times, strings as sent).  A value the payload does not
hold in full (a truncated packet) raises `ShortRead`.
"""

from __future__ import annotations

import math
import struct

from agent.protocols.cursor import Cursor
from agent.protocols.errors import ShortRead
from agent.protocols.mysql import wire
from agent.protocols.mysql.wire import lenenc, lenenc_bytes

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")

_STRING_TYPES = frozenset({
    wire.T_DECIMAL, wire.T_NEWDECIMAL, wire.T_VARCHAR, wire.T_VAR_STRING, wire.T_STRING, wire.T_ENUM, wire.T_SET,
    wire.T_TINY_BLOB, wire.T_MEDIUM_BLOB, wire.T_LONG_BLOB, wire.T_BLOB, wire.T_BIT, wire.T_GEOMETRY, wire.T_JSON,
})
_INT_SIZES = {wire.T_TINY: 1, wire.T_SHORT: 2, wire.T_YEAR: 2, wire.T_LONG: 4, wire.T_INT24: 4, wire.T_LONGLONG: 8}


def float32_text(raw: bytes) -> str:
    """The shortest decimal that reads back as the same 32-bit float."""
    value = _F32.unpack(raw)[0]
    if math.isnan(value) or math.isinf(value):
        return str(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _F32.pack(float(text)) == raw:
            return _plain(text)
    return repr(value)


def float64_text(value: float) -> str:
    return _plain(repr(value))


def _plain(text: str) -> str:
    if text.endswith(".0"):
        return text[:-2]
    return text


def _int(reader: Cursor, size: int, unsigned: bool) -> str:
    raw = reader.take(size)
    return str(int.from_bytes(raw, "little", signed=not unsigned))


def _datetime(reader: Cursor, with_time: bool) -> str:
    length = reader.u8()
    body = Cursor(reader.take(length))
    year = month = day = hour = minute = second = micro = 0
    if length >= 4:
        year, month, day = body.u16le(), body.u8(), body.u8()
    if length >= 7:
        hour, minute, second = body.u8(), body.u8(), body.u8()
    if length >= 11:
        micro = body.u32le()
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if with_time:
        text += f" {hour:02d}:{minute:02d}:{second:02d}"
        if micro:
            text += f".{micro:06d}"
    return text


def _time(reader: Cursor) -> str:
    length = reader.u8()
    body = Cursor(reader.take(length))
    if length < 8:
        return "00:00:00"
    negative, days, hour, minute, second = body.u8(), body.u32le(), body.u8(), body.u8(), body.u8()
    micro = body.u32le() if length >= 12 else 0
    hours = days * 24 + hour
    text = f"{'-' if negative else ''}{hours:02d}:{minute:02d}:{second:02d}"
    if micro:
        text += f".{micro:06d}"
    return text


def read_value(reader: Cursor, typ: int, unsigned: bool) -> bytes:
    """One binary-protocol value as text bytes."""
    size = _INT_SIZES.get(typ)
    if size is not None:
        return _int(reader, size, unsigned).encode()
    if typ == wire.T_FLOAT:
        return float32_text(reader.take(4)).encode()
    if typ == wire.T_DOUBLE:
        return float64_text(_F64.unpack(reader.take(8))[0]).encode()
    if typ in (wire.T_DATE, wire.T_NEWDATE):
        return _datetime(reader, False).encode()
    if typ in (wire.T_DATETIME, wire.T_TIMESTAMP, wire.T_DATETIME2, wire.T_TIMESTAMP2):
        return _datetime(reader, True).encode()
    if typ in (wire.T_TIME, wire.T_TIME2):
        return _time(reader).encode()
    if typ == wire.T_NULL:
        return b"NULL"
    if typ in _STRING_TYPES:
        value = lenenc_bytes(reader)
        return b"NULL" if value is None else value
    raise reader.short(f"value of type {typ}")  # an unknown type: its size is unknown, nothing after it can be read


def read_value_prefix(reader: Cursor, typ: int, unsigned: bool) -> bytes:
    """Like read_value, but a string cut by the end of a truncated payload gives what is there."""
    if typ in _STRING_TYPES:
        length = lenenc(reader)
        if length is None:
            return b"NULL"
        take = min(length, reader.remaining())
        value = reader.take(take)
        if take < length:
            raise _Partial(value)
        return value
    return read_value(reader, typ, unsigned)


class _Partial(Exception):
    def __init__(self, value: bytes) -> None:
        super().__init__()
        self.value = value


def binary_row(payload: bytes, columns: list[tuple[int, int]]) -> list[bytes | None]:
    """A binary result row (0x00, NULL bitmap with a 2-bit offset, values) as text values.

    `columns` holds (type, flags) per column.  Stops quietly where a
    truncated payload ends.
    """
    count = len(columns)
    reader = Cursor(payload, 1)
    bitmap_len = (count + 9) // 8
    try:
        bitmap = reader.take(bitmap_len)
    except ShortRead:
        return []
    out: list[bytes | None] = []
    for index, (typ, flags) in enumerate(columns):
        bit = index + 2
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            out.append(None)
            continue
        try:
            out.append(read_value_prefix(reader, typ, bool(flags & wire.UNSIGNED_FLAG)))
        except _Partial as partial:
            out.append(partial.value)
            break
        except ShortRead:
            break
    return out


def text_row(payload: bytes) -> list[bytes | None]:
    """A text result row: length-encoded strings, 0xfb for NULL; stops where a truncated payload ends."""
    reader = Cursor(payload)
    out: list[bytes | None] = []
    while reader.remaining():
        try:
            length = lenenc(reader)
        except ShortRead:
            break
        if length is None:
            out.append(None)
            continue
        take = min(length, reader.remaining())
        out.append(reader.take(take))
        if take < length:
            break
    return out


def execute_params(body: bytes, num_params: int, saved_types: tuple[tuple[int, bool], ...] | None,
                   long_data: dict[int, bytes] | None = None, query_attributes: bool = False
                   ) -> tuple[list[str] | None, tuple[tuple[int, bool], ...] | None]:
    """Decode COM_STMT_EXECUTE parameters.

    `body` is the payload after the command byte; `long_data` holds the
    values sent before by COM_STMT_SEND_LONG_DATA (absent from the packet).
    Returns (params as text, the parameter types to remember for later
    executes); params is None when the packet cannot be decoded (unknown
    types, truncation).
    """
    reader = Cursor(body)
    try:
        reader.skip(4)  # statement id
        flags = reader.u8()
        reader.skip(4)  # iteration count
        if query_attributes and flags & 0x08:  # PARAMETER_COUNT_AVAILABLE
            count = lenenc(reader)
            if count is not None:
                num_params = count
        if num_params <= 0:
            return [], saved_types
        null_bitmap = reader.take((num_params + 7) // 8)
        bound = reader.u8()
        if bound == 1:
            types = []
            for _ in range(num_params):
                typ = reader.u8()
                flag = reader.u8()
                if query_attributes:
                    lenenc_bytes(reader)  # parameter name
                types.append((typ, bool(flag & 0x80)))
            saved_types = tuple(types)
        if saved_types is None or len(saved_types) != num_params:
            return None, saved_types
        params: list[str] = []
        for index, (typ, unsigned) in enumerate(saved_types):
            if null_bitmap[index >> 3] & (1 << (index & 7)):
                params.append("NULL")
            elif long_data and index in long_data:
                params.append(long_data[index].decode("utf-8", "replace"))
            else:
                params.append(read_value(reader, typ, unsigned).decode("utf-8", "replace"))
        return params, saved_types
    except ShortRead:
        return None, saved_types
