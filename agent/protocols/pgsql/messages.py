"""The typed messages of the PostgreSQL parser: what each side's protocol messages mean, and readers of the
bodies that several of them share (C strings, RowDescription, ErrorResponse fields)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_I16 = struct.Struct("!h")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Startup:
    ts_ns: int
    kind: str  # "startup", "ssl", "gss", "cancel"
    user: str = ""
    database: str = ""


@dataclass(frozen=True, slots=True)
class EncryptionReply:
    ts_ns: int
    accepted: bool
    tls: bool = False  # an SSLRequest accepted: TLS follows (a GSSENCRequest accepted: GSSAPI encryption)


@dataclass(frozen=True, slots=True)
class Frontend:
    """A client message: type (one letter) and its fields, as far as pktbeat uses them."""

    type: str
    ts_ns: int
    size: int
    sql: str = ""  # Query, Parse
    name: str = ""  # Parse: statement; Bind/Execute: portal; Describe/Close: the object
    statement: str = ""  # Bind: the statement
    kind: str = ""  # Describe/Close: "S" or "P"
    param_oids: tuple[int, ...] = ()  # Parse
    param_formats: tuple[int, ...] = ()  # Bind
    params: tuple[bytes | None, ...] = ()  # Bind values (kept prefix)
    result_formats: tuple[int, ...] = ()  # Bind
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class RowDescription:
    ts_ns: int
    size: int
    names: tuple[str, ...]
    formats: tuple[int, ...]
    type_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DataRows:
    """Consecutive DataRow (copy=False) or server CopyData (copy=True) messages."""

    ts_ns: int
    size: int
    count: int
    rows: tuple[tuple[bytes | None, ...], ...]
    copy: bool = False
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class Backend:
    """Any other server message: CommandComplete (text = tag), ReadyForQuery (text = status), ..."""

    type: str
    ts_ns: int
    size: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class ErrorNotice:
    """ErrorResponse (type "E") or NoticeResponse (type "N")."""

    type: str
    ts_ns: int
    size: int
    severity: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    ts_ns: int
    size: int
    oids: tuple[int, ...]


Message = (Startup | EncryptionReply | Frontend | RowDescription | DataRows | Backend | ErrorNotice
           | ParameterDescription)


# -- reading message bodies ------------------------------------------------------------------

def cstr(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end == -1:
        return data[pos:].decode("utf-8", "replace"), len(data)
    return data[pos:end].decode("utf-8", "replace"), end + 1


def row_description(body: bytes) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    if len(body) < 2:
        return (), (), ()
    count = _I16.unpack_from(body, 0)[0]
    pos = 2
    names: list[str] = []
    formats: list[int] = []
    oids: list[int] = []
    for _ in range(max(count, 0)):
        name, pos = cstr(body, pos)
        if pos + 18 > len(body):
            break
        oids.append(_U32.unpack_from(body, pos + 6)[0])
        formats.append(_I16.unpack_from(body, pos + 16)[0])
        names.append(name)
        pos += 18
    return tuple(names), tuple(formats), tuple(oids)


def error_fields(body: bytes) -> tuple[str, str, str]:
    severity = code = message = ""
    pos = 0
    while pos < len(body) and body[pos]:
        field = body[pos]
        value, pos = cstr(body, pos + 1)
        if field == 0x53:  # S
            severity = value
        elif field == 0x43:  # C
            code = value
        elif field == 0x4D:  # M
            message = value
    return severity, code, message
