"""Bound parameters as text, and a simple Query string cut into its statements."""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Callable

_EPOCH = datetime.datetime(2000, 1, 1)
_EPOCH_DATE = datetime.date(2000, 1, 1)

# type OIDs of the binary formats decoded here
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR, DATE, TIME = 114, 700, 701, 705, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1114, 1184, 1700, 2950, 3802

_TEXTUAL = frozenset({CHAR, NAME, TEXT, JSON, UNKNOWN, BPCHAR, VARCHAR})


def _numeric(raw: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", raw, 0)
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    digits = struct.unpack_from(f"!{ndigits}h", raw, 8)
    integer = 0
    for digit in digits:
        integer = integer * 10000 + digit
    # the value is integer * 10000 ** (weight - ndigits + 1)
    exponent = 4 * (weight - ndigits + 1)
    text = str(integer)
    if exponent >= 0:
        text += "0" * exponent
        whole, frac = text, ""
    else:
        text = text.rjust(-exponent + 1, "0")
        whole, frac = text[:exponent], text[exponent:]
    frac = (frac + "0" * dscale)[:dscale]
    whole = whole.lstrip("0") or "0"
    out = f"{whole}.{frac}" if frac else whole
    return ("-" if sign == 0x4000 else "") + out


def _unpacked(fmt: str) -> Callable[[bytes], str]:
    def render(raw: bytes) -> str:
        return str(struct.unpack(fmt, raw)[0])
    return render


def _float(fmt: str) -> Callable[[bytes], str]:
    def render(raw: bytes) -> str:
        return repr(struct.unpack(fmt, raw)[0])
    return render


def _bool(raw: bytes) -> str:
    return "t" if raw[:1] == b"\x01" else "f"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _jsonb(raw: bytes) -> str:
    return raw[1:].decode("utf-8", "replace")


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def _date(raw: bytes) -> str:
    return (_EPOCH_DATE + datetime.timedelta(days=struct.unpack("!i", raw)[0])).isoformat()


def _timestamp(raw: bytes) -> str:
    return (_EPOCH + datetime.timedelta(microseconds=struct.unpack("!q", raw)[0])).isoformat(sep=" ")


def _timestamptz(raw: bytes) -> str:
    return _timestamp(raw) + "+00"


def _time(raw: bytes) -> str:
    micro = struct.unpack("!q", raw)[0]
    seconds, micro = divmod(micro, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{micro:06d}" if micro else "")


# How each binary format known here is printed, by type OID.
_BINARY: dict[int, Callable[[bytes], str]] = {
    INT2: _unpacked("!h"), INT4: _unpacked("!i"), INT8: _unpacked("!q"), OID: _unpacked("!I"), BOOL: _bool,
    FLOAT4: _float("!f"), FLOAT8: _float("!d"), JSONB: _jsonb, UUID: _uuid, DATE: _date, TIMESTAMP: _timestamp,
    TIMESTAMPTZ: _timestamptz, TIME: _time, NUMERIC: _numeric, **dict.fromkeys(_TEXTUAL, _text),
}


def binary_text(oid: int, raw: bytes) -> str:
    """A binary-format value of type `oid` as PostgreSQL would print it; hex for types not known here."""
    render = _BINARY.get(oid)
    if render is not None:
        try:
            return render(raw)
        except (struct.error, ValueError, OverflowError):
            pass
    return "\\x" + raw.hex()


def bind_params(values: tuple[bytes | None, ...], formats: tuple[int, ...], oids: tuple[int, ...],
                max_length: int) -> list[str]:
    """Bind's parameter values as text (NULL for a null), each cut at `max_length` bytes."""
    out: list[str] = []
    for index, value in enumerate(values):
        if value is None:
            out.append("NULL")
            continue
        if not formats:
            fmt = 0
        elif len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[index] if index < len(formats) else 0
        if fmt == 1:
            oid = oids[index] if index < len(oids) else 0
            text = binary_text(oid, value)
        else:
            text = value.decode("utf-8", "replace")
        out.append(text[:max_length])
    return out


def _quoted_end(sql: str, i: int) -> int:
    """Where the '...' or "..." string starting at `i` ends (a doubled quote stays inside)."""
    quote = sql[i]
    n = len(sql)
    end = i + 1
    while True:
        end = sql.find(quote, end)
        if end == -1:
            return n
        if end + 1 < n and sql[end + 1] == quote:  # doubled quote
            end += 2
            continue
        return end + 1


def _block_comment_end(sql: str, i: int) -> int:
    """Where the /* ... */ comment starting at `i` ends (they nest)."""
    depth = 0
    n = len(sql)
    j = i
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                break
        else:
            j += 1
    return j


def _dollar_quoted_end(sql: str, i: int) -> int:
    """Where the $tag$ ... $tag$ string starting at `i` ends; i + 1 when `$` does not open one."""
    end = sql.find("$", i + 1)
    tag = sql[i:end + 1] if end != -1 else ""
    if tag and (len(tag) == 2 or (tag[1:-1].replace("_", "a").isalnum() and not tag[1].isdigit())):
        close = sql.find(tag, end + 1)
        return len(sql) if close == -1 else close + len(tag)
    return i + 1


def _skip(sql: str, i: int) -> int:
    """Past the quoted string or comment starting at `i`, or past the one character there."""
    c = sql[i]
    if c in "'\"":
        return _quoted_end(sql, i)
    if c == "-" and sql.startswith("--", i):
        end = sql.find("\n", i)
        return len(sql) if end == -1 else end + 1
    if c == "/" and sql.startswith("/*", i):
        return _block_comment_end(sql, i)
    if c == "$":
        return _dollar_quoted_end(sql, i)
    return i + 1


def split_statements(sql: str) -> list[str]:
    """The statements of a simple Query, split at semicolons outside quotes, comments and dollar quotes.

    Each is stripped of surrounding whitespace; empty ones are left out (the
    server does not answer them).
    """
    if not any(special in sql for special in "'\"-/$"):
        return [piece for piece in (part.strip() for part in sql.split(";")) if piece]
    out: list[str] = []
    start = 0
    i = 0
    n = len(sql)
    while i < n:
        if sql[i] == ";":
            piece = sql[start:i].strip()
            if piece:
                out.append(piece)
            start = i + 1
            i += 1
        else:
            i = _skip(sql, i)
    piece = sql[start:].strip()
    if piece:
        out.append(piece)
    return out
