"""The typed messages of the PostgreSQL parser: what each side's protocol messages mean."""

from __future__ import annotations

from dataclasses import dataclass


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
