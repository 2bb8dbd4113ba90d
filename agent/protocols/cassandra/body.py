"""CQL frame bodies (native protocol v1-v4), decoded into Packetbeat's `cassandra.*` maps.

What is read, and how it is named and typed, follows Packetbeat: a QUERY
request gives its query string; responses give `error`, `result`,
`supported`, `authentication`, `event` and `warnings`.  Integers are read
unsigned as Packetbeat reads them.  One Packetbeat behaviour is kept on
purpose because users compare against it: for a ROWS result, Packetbeat reads
`num_rows` right after the metadata header, without skipping the column
specifications, and pktbeat reports the same number.  Prepared results, where
Packetbeat would read past the column specifications into garbage, are decoded
properly.

Every read is bounded by the body (the shared `Cursor`): a length past its
end raises `ShortRead`, any other undecodable content `BodyError`.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from agent.protocols.cursor import Cursor
from agent.protocols.gostrings import go_quote_bytes

# Opcodes
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT, OP_PREPARE, OP_EXECUTE = 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A
OP_REGISTER, OP_EVENT, OP_BATCH, OP_AUTH_CHALLENGE, OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = (0x0B, 0x0C, 0x0D, 0x0E,
                                                                                          0x0F, 0x10)
OP_NAMES = {OP_ERROR: "ERROR", OP_STARTUP: "STARTUP", OP_READY: "READY", OP_AUTHENTICATE: "AUTHENTICATE",
            OP_OPTIONS: "OPTIONS", OP_SUPPORTED: "SUPPORTED", OP_QUERY: "QUERY", OP_RESULT: "RESULT",
            OP_PREPARE: "PREPARE", OP_EXECUTE: "EXECUTE", OP_REGISTER: "REGISTER", OP_EVENT: "EVENT",
            OP_BATCH: "BATCH", OP_AUTH_CHALLENGE: "AUTH_CHALLENGE", OP_AUTH_RESPONSE: "AUTH_RESPONSE",
            OP_AUTH_SUCCESS: "AUTH_SUCCESS"}
OPS_BY_NAME = {name: op for op, name in OP_NAMES.items()}

# Header flags
FLAG_COMPRESS, FLAG_TRACING, FLAG_CUSTOM_PAYLOAD, FLAG_WARNING = 0x01, 0x02, 0x04, 0x08
_HEADER_FLAG_NAMES = {0x00: "Default", FLAG_COMPRESS: "Compress", FLAG_TRACING: "Tracing",
                      FLAG_CUSTOM_PAYLOAD: "CustomPayload", FLAG_WARNING: "Warning"}

# Rows metadata flags
_GLOBAL_TABLE_SPEC, _HAS_MORE_PAGES, _NO_METADATA = 0x01, 0x02, 0x04
_ROW_FLAG_NAMES = {_GLOBAL_TABLE_SPEC: "GlobalTableSpec", _HAS_MORE_PAGES: "HasMorePages",
                   _NO_METADATA: "NoMetaData"}

_ERROR_TYPES = {0x0000: "errServer", 0x000A: "errProtocol", 0x0100: "errCredentials", 0x1000: "errUnavailable",
                0x1001: "errOverloaded", 0x1002: "errBootstrapping", 0x1003: "errTruncate",
                0x1100: "errWriteTimeout", 0x1200: "errReadTimeout", 0x1300: "errReadFailure",
                0x1400: "errFunctionFailure", 0x1500: "errWriteFailure", 0x2000: "errSyntax",
                0x2100: "errUnauthorized", 0x2200: "errInvalid", 0x2300: "errConfig", 0x2400: "errAlreadyExists",
                0x2500: "errUnprepared"}
_CONSISTENCIES = {0x00: "ANY", 0x01: "ONE", 0x02: "TWO", 0x03: "THREE", 0x04: "QUORUM", 0x05: "ALL",
                  0x06: "LOCAL_QUORUM", 0x07: "EACH_QUORUM", 0x0A: "LOCAL_ONE"}
_RESULT_VOID, _RESULT_ROWS, _RESULT_KEYSPACE, _RESULT_PREPARED, _RESULT_SCHEMA = 1, 2, 3, 4, 5

MAX_TYPE_DEPTH = 32  # nested collection/UDT/tuple column types


class BodyError(Exception):
    """A frame body that does not decode (besides a short read): a bad address size, types nested too deep."""


def header_flags_text(flags: int) -> str:
    return _HEADER_FLAG_NAMES.get(flags, f"UnknownFlag_{flags}")


def op_text(op: int) -> str:
    return OP_NAMES.get(op, f"UNKNOWN_OP_{op}")


# -- CQL notation ([string], [bytes], [inet] ...) over the shared cursor; every read is bounded by the body --


def string(body: Cursor) -> str:
    """[string]: a [short] length, then UTF-8."""
    return body.take(body.u16()).decode("utf-8", "replace")


def long_string(body: Cursor) -> str:
    """[long string]: an [int] length (read unsigned, as Packetbeat does), then UTF-8."""
    return body.take(body.u32()).decode("utf-8", "replace")


def string_list(body: Cursor) -> list[str]:
    return [string(body) for _ in range(body.u16())]


def value(body: Cursor) -> bytes | None:
    """[bytes]: null when the length is negative."""
    size = body.i32()
    return None if size < 0 else body.take(size)


def short_bytes(body: Cursor) -> bytes:
    return body.take(body.u16())


def string_multimap(body: Cursor) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _ in range(body.u16()):
        key = string(body)
        out[key] = string_list(body)
    return out


def bytes_map(body: Cursor) -> None:
    for _ in range(body.u16()):
        string(body)
        value(body)


def inet(body: Cursor) -> tuple[str, int]:
    size = body.u8()
    if size not in (4, 16):
        raise BodyError(f"invalid IP address size {size}")
    raw = body.take(size)
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), body.u32()


def consistency(body: Cursor) -> str:
    level = body.u16()
    return _CONSISTENCIES.get(level, f"UNKNOWN_CONS_0x{level:x}")


def option(body: Cursor, depth: int = 0) -> None:
    """Skip one [option] column type (collections, UDTs and tuples nest)."""
    if depth > MAX_TYPE_DEPTH:
        raise BodyError(f"column types nested deeper than {MAX_TYPE_DEPTH}")
    kind = body.u16()
    if kind == 0x0000:
        string(body)
    elif kind in (0x0020, 0x0022):
        option(body, depth + 1)
    elif kind == 0x0021:
        option(body, depth + 1)
        option(body, depth + 1)
    elif kind == 0x0030:
        string(body)
        string(body)
        for _ in range(body.u16()):
            string(body)
            option(body, depth + 1)
    elif kind == 0x0031:
        for _ in range(body.u16()):
            option(body, depth + 1)


def decode_request(op: int, body: Cursor) -> dict[str, Any]:
    if op == OP_QUERY:
        return {"query": long_string(body)}
    return {}


def decode_response(op: int, version: int, body: Cursor, data: dict[str, Any]) -> None:
    if op == OP_ERROR:
        data["error"] = _error(body)
    elif op == OP_RESULT:
        data["result"] = _result(body, version)
    elif op == OP_SUPPORTED:
        data["supported"] = string_multimap(body)
    elif op == OP_AUTHENTICATE:
        data["authentication"] = {"class": string(body)}
    elif op in (OP_AUTH_CHALLENGE, OP_AUTH_SUCCESS):
        token = value(body)
        data["authentication"] = {"data": go_quote_bytes(token or b"")}
    elif op == OP_EVENT:
        data["event"] = _event(body, version)


def _error(body: Cursor) -> dict[str, Any]:
    code = body.u32()
    out: dict[str, Any] = {"code": code, "msg": string(body), "type": _ERROR_TYPES.get(code, "ErrUnknown")}
    details: dict[str, Any] = {}
    if code == 0x1000:  # unavailable
        details["read_consistency"] = consistency(body)
        details["required"] = body.u32()
        details["alive"] = body.u32()
    elif code in (0x1100, 0x1500):  # write timeout, write failure
        _timeout_details(body, details, failure=code == 0x1500)
        details["write_type"] = string(body)
    elif code in (0x1200, 0x1300):  # read timeout, read failure
        _timeout_details(body, details, failure=code == 0x1300)
        details["data_present"] = body.u8() != 0
    elif code == 0x2400:  # already exists
        details["keyspace"] = string(body)
        details["table"] = string(body)
    elif code == 0x2500:  # unprepared: Go publishes the id bytes base64-encoded
        details["stmt_id"] = base64.b64encode(short_bytes(body)).decode()
    elif code == 0x1400:  # function failure
        details["keyspace"] = string(body)
        details["function"] = string(body)
        details["arg_types"] = string_list(body)
    if details:
        out["details"] = details
    return out


def _timeout_details(body: Cursor, details: dict[str, Any], failure: bool) -> None:
    """What a read or write timeout (and failure) error starts with: <cl><received><blockfor>[<numfailures>]."""
    details["read_consistency"] = consistency(body)
    details["received"] = body.u32()
    details["blockfor"] = body.u32()
    if failure:
        details["num_failures"] = body.u32()


def _result(body: Cursor, version: int) -> dict[str, Any]:
    kind = body.u32()
    out: dict[str, Any] = {}
    if kind == _RESULT_VOID:
        out["type"] = "void"
    elif kind == _RESULT_ROWS:
        out["type"] = "rows"
        meta = _metadata(body, version, prepared=False, columns=False)
        out["rows"] = {"meta": meta, "num_rows": body.u32()}
    elif kind == _RESULT_KEYSPACE:
        out["type"] = "set_keyspace"
        out["keyspace"] = string(body)
    elif kind == _RESULT_PREPARED:
        out["type"] = "prepared"
        prepared: dict[str, Any] = {"prepared_id": _uuid_text(short_bytes(body))}
        prepared["req_meta"] = _metadata(body, version, prepared=True, columns=True)
        if version >= 2:
            prepared["resp_meta"] = _metadata(body, version, prepared=False, columns=True)
        out["prepared"] = prepared
    elif kind == _RESULT_SCHEMA:
        out["type"] = "schemaChanged"
        out["schema_change"] = _schema_change(body, version)
    return out


def _uuid_text(raw: bytes) -> str:
    if len(raw) != 16:
        raw = bytes(16)  # Packetbeat prints the zero UUID for an id that is not 16 bytes
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _metadata(body: Cursor, version: int, *, prepared: bool, columns: bool) -> dict[str, Any]:
    """Result metadata; `columns` also steps over the column specifications."""
    flags = body.u32()
    count = body.u32()
    meta: dict[str, Any] = {"flags": _ROW_FLAG_NAMES.get(flags, f"FLAG_{flags}"), "col_count": count}
    if prepared and version >= 4:
        meta["pkey_columns"] = [body.u16() for _ in range(body.u32())]
    if flags & _HAS_MORE_PAGES:
        paging = value(body)
        meta["paging_state"] = (paging or b"").hex().upper()
        if not columns:
            return meta
    if flags & _NO_METADATA:
        return meta
    global_spec = bool(flags & _GLOBAL_TABLE_SPEC)
    if global_spec:
        meta["keyspace"] = string(body)
        meta["table"] = string(body)
    if columns:
        for _ in range(count):
            if not global_spec:
                string(body)
                string(body)
            string(body)
            option(body)
    return meta


def _schema_change(body: Cursor, version: int) -> dict[str, Any]:
    if version <= 2:
        return {"change": string(body), "keyspace": string(body), "table": string(body)}
    out: dict[str, Any] = {"change": string(body)}
    target = string(body)
    out["target"] = target
    if target == "KEYSPACE":
        out["keyspace"] = string(body)
    elif target in ("TABLE", "TYPE"):
        out["keyspace"] = string(body)
        out["object"] = string(body)
    elif target in ("FUNCTION", "AGGREGATE"):
        out["keyspace"] = string(body)
        out["name"] = string(body)
        out["args"] = string_list(body)
    return out


def _event(body: Cursor, version: int) -> dict[str, Any]:
    kind = string(body)
    out: dict[str, Any] = {"type": kind}
    if kind in ("TOPOLOGY_CHANGE", "STATUS_CHANGE"):
        out["change"] = string(body)
        out["host"], out["port"] = inet(body)
    elif kind == "SCHEMA_CHANGE":
        out["schema_change"] = _schema_change(body, version)
    return out
