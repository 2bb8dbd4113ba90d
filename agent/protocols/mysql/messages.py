"""The typed messages of the MySQL parser: what a connection's packets mean, in order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Greeting:
    ts_ns: int
    server_version: str
    connection_id: int
    capabilities: int


@dataclass(frozen=True, slots=True)
class Login:
    ts_ns: int
    user: str
    database: str
    capabilities: int
    tls: bool
    compression: str  # "", "zlib" or "zstd"


@dataclass(frozen=True, slots=True)
class AuthResult:
    ts_ns: int
    ok: bool
    error_code: int = 0
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    serial: int
    ts_ns: int
    code: int
    size: int  # wire bytes (uncompressed packet headers included)
    text: str  # SQL of COM_QUERY / COM_STMT_PREPARE, schema of COM_INIT_DB, table of COM_FIELD_LIST...
    stmt_id: int  # COM_STMT_EXECUTE / CLOSE / RESET / FETCH / SEND_LONG_DATA
    body: bytes  # payload after the command byte (kept prefix)
    truncated: bool
    expects_reply: bool


@dataclass(frozen=True, slots=True)
class Column:
    schema: str
    table: str
    org_table: str
    name: str
    type: int
    flags: int


@dataclass(frozen=True, slots=True)
class Reply:
    serial: int  # the Command it answers; -1 for a server packet nobody asked for
    command: int
    ts_ns: int  # the first packet of the reply
    size: int
    error: bool
    affected_rows: int = 0
    insert_id: int = 0
    num_fields: int = 0
    num_rows: int = 0
    tables: tuple[str, ...] = ()
    response: str = ""  # CSV rows (or the statistics text); "" unless asked for
    error_code: int = 0
    error_message: str = ""  # "SQLSTATE: message"
    stmt_id: int = 0
    num_params: int = 0
    client_extra: int = 0  # client bytes that belong to the command (LOCAL INFILE data, auth exchange)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lost:
    """Commands whose replies cannot be read any more (gap, desynchronisation, overflow)."""

    serials: tuple[int, ...]


Message = Greeting | Login | AuthResult | Command | Reply | Lost
