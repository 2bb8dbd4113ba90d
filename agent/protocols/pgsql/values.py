"""Bound parameters as text, and a simple Query string cut into its statements."""

from __future__ import annotations

import datetime
import struct
import uuid

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


def binary_text(oid: int, raw: bytes) -> str:
    """A binary-format value of type `oid` as PostgreSQL would print it; hex for types not known here."""
    try:
        if oid == INT2:
            return str(struct.unpack("!h", raw)[0])
        if oid == INT4:
            return str(struct.unpack("!i", raw)[0])
        if oid in (INT8,):
            return str(struct.unpack("!q", raw)[0])
        if oid == OID:
            return str(struct.unpack("!I", raw)[0])
        if oid == BOOL:
            return "t" if raw[:1] == b"\x01" else "f"
        if oid == FLOAT4:
            return repr(struct.unpack("!f", raw)[0])
        if oid == FLOAT8:
            return repr(struct.unpack("!d", raw)[0])
        if oid in _TEXTUAL:
            return raw.decode("utf-8", "replace")
        if oid == JSONB:
            return raw[1:].decode("utf-8", "replace")
        if oid == UUID:
            return str(uuid.UUID(bytes=raw))
        if oid == DATE:
            return (_EPOCH_DATE + datetime.timedelta(days=struct.unpack("!i", raw)[0])).isoformat()
        if oid in (TIMESTAMP, TIMESTAMPTZ):
            moment = _EPOCH + datetime.timedelta(microseconds=struct.unpack("!q", raw)[0])
            text = moment.isoformat(sep=" ")
            return text + "+00" if oid == TIMESTAMPTZ else text
        if oid == TIME:
            micro = struct.unpack("!q", raw)[0]
            seconds, micro = divmod(micro, 1_000_000)
            text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            return text + (f".{micro:06d}" if micro else "")
        if oid == NUMERIC:
            return _numeric(raw)
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
        c = sql[i]
        if c == ";":
            piece = sql[start:i].strip()
            if piece:
                out.append(piece)
            start = i + 1
            i += 1
        elif c in "'\"":
            end = i + 1
            while True:
                end = sql.find(c, end)
                if end == -1:
                    i = n
                    break
                if end + 1 < n and sql[end + 1] == c:  # doubled quote
                    end += 2
                    continue
                i = end + 1
                break
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            depth = 0
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
            i = j
        elif c == "$":
            end = sql.find("$", i + 1)
            tag = sql[i:end + 1] if end != -1 else ""
            if tag and (len(tag) == 2 or (tag[1:-1].replace("_", "a").isalnum() and not tag[1].isdigit())):
                close = sql.find(tag, end + 1)
                i = n if close == -1 else close + len(tag)
            else:
                i += 1
        else:
            i += 1
    piece = sql[start:].strip()
    if piece:
        out.append(piece)
    return out
