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

Every read is bounded by the body: a length past its end is a `BodyError`.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

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
    """A frame body that does not decode (a length past its end)."""


def header_flags_text(flags: int) -> str:
    return _HEADER_FLAG_NAMES.get(flags, f"UnknownFlag_{flags}")


def op_text(op: int) -> str:
    return OP_NAMES.get(op, f"UNKNOWN_OP_{op}")


def _go_quote_bytes(raw: bytes) -> str:
    """Go's `%q` of a byte slice: printable text as is, other bytes escaped."""
    text = raw.decode("utf-8", "surrogateescape")
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


class Reader:
    """A cursor over one frame body; every read checks the bytes are there."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise BodyError(f"{size} bytes at {self.pos} run past the end of the body ({len(self.data)})")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def short(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def uint(self) -> int:
        """[int], read unsigned as Packetbeat reads it."""
        return int.from_bytes(self.take(4), "big")

    def signed_int(self) -> int:
        return int.from_bytes(self.take(4), "big", signed=True)

    def string(self) -> str:
        return self.take(self.short()).decode("utf-8", "replace")

    def long_string(self) -> str:
        return self.take(self.uint()).decode("utf-8", "replace")

    def string_list(self) -> list[str]:
        return [self.string() for _ in range(self.short())]

    def value(self) -> bytes | None:
        """[bytes]: null when the length is negative."""
        size = self.signed_int()
        return None if size < 0 else self.take(size)

    def short_bytes(self) -> bytes:
        return self.take(self.short())

    def string_multimap(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _ in range(self.short()):
            key = self.string()
            out[key] = self.string_list()
        return out

    def bytes_map(self) -> None:
        for _ in range(self.short()):
            self.string()
            self.value()

    def inet(self) -> tuple[str, int]:
        size = self.byte()
        if size not in (4, 16):
            raise BodyError(f"invalid IP address size {size}")
        raw = self.take(size)
        address = ipaddress.ip_address(raw)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return str(address), self.uint()

    def consistency(self) -> str:
        value = self.short()
        return _CONSISTENCIES.get(value, f"UNKNOWN_CONS_0x{value:x}")

    def option(self, depth: int = 0) -> None:
        """Skip one [option] column type (collections, UDTs and tuples nest)."""
        if depth > MAX_TYPE_DEPTH:
            raise BodyError(f"column types nested deeper than {MAX_TYPE_DEPTH}")
        kind = self.short()
        if kind == 0x0000:
            self.string()
        elif kind in (0x0020, 0x0022):
            self.option(depth + 1)
        elif kind == 0x0021:
            self.option(depth + 1)
            self.option(depth + 1)
        elif kind == 0x0030:
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.option(depth + 1)
        elif kind == 0x0031:
            for _ in range(self.short()):
                self.option(depth + 1)


def decode_request(op: int, body: Reader) -> dict[str, Any]:
    if op == OP_QUERY:
        return {"query": body.long_string()}
    return {}


def decode_response(op: int, version: int, body: Reader, data: dict[str, Any]) -> None:
    if op == OP_ERROR:
        data["error"] = _error(body)
    elif op == OP_RESULT:
        data["result"] = _result(body, version)
    elif op == OP_SUPPORTED:
        data["supported"] = body.string_multimap()
    elif op == OP_AUTHENTICATE:
        data["authentication"] = {"class": body.string()}
    elif op in (OP_AUTH_CHALLENGE, OP_AUTH_SUCCESS):
        token = body.value()
        data["authentication"] = {"data": _go_quote_bytes(token or b"")}
    elif op == OP_EVENT:
        data["event"] = _event(body, version)


def _error(body: Reader) -> dict[str, Any]:
    code = body.uint()
    out: dict[str, Any] = {"code": code, "msg": body.string(), "type": _ERROR_TYPES.get(code, "ErrUnknown")}
    details: dict[str, Any] = {}
    if code == 0x1000:  # unavailable
        details["read_consistency"] = body.consistency()
        details["required"] = body.uint()
        details["alive"] = body.uint()
    elif code in (0x1100, 0x1500):  # write timeout, write failure
        details["read_consistency"] = body.consistency()
        details["received"] = body.uint()
        details["blockfor"] = body.uint()
        if code == 0x1500:
            details["num_failures"] = body.uint()
        details["write_type"] = body.string()
    elif code in (0x1200, 0x1300):  # read timeout, read failure
        details["read_consistency"] = body.consistency()
        details["received"] = body.uint()
        details["blockfor"] = body.uint()
        if code == 0x1300:
            details["num_failures"] = body.uint()
        details["data_present"] = body.byte() != 0
    elif code == 0x2400:  # already exists
        details["keyspace"] = body.string()
        details["table"] = body.string()
    elif code == 0x2500:  # unprepared: Go publishes the id bytes base64-encoded
        details["stmt_id"] = base64.b64encode(body.short_bytes()).decode()
    elif code == 0x1400:  # function failure
        details["keyspace"] = body.string()
        details["function"] = body.string()
        details["arg_types"] = body.string_list()
    if details:
        out["details"] = details
    return out


def _result(body: Reader, version: int) -> dict[str, Any]:
    kind = body.uint()
    out: dict[str, Any] = {}
    if kind == _RESULT_VOID:
        out["type"] = "void"
    elif kind == _RESULT_ROWS:
        out["type"] = "rows"
        meta = _metadata(body, version, prepared=False, columns=False)
        out["rows"] = {"meta": meta, "num_rows": body.uint()}
    elif kind == _RESULT_KEYSPACE:
        out["type"] = "set_keyspace"
        out["keyspace"] = body.string()
    elif kind == _RESULT_PREPARED:
        out["type"] = "prepared"
        prepared: dict[str, Any] = {"prepared_id": _uuid_text(body.short_bytes())}
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


def _metadata(body: Reader, version: int, *, prepared: bool, columns: bool) -> dict[str, Any]:
    """Result metadata; `columns` also steps over the column specifications."""
    flags = body.uint()
    count = body.uint()
    meta: dict[str, Any] = {"flags": _ROW_FLAG_NAMES.get(flags, f"FLAG_{flags}"), "col_count": count}
    if prepared and version >= 4:
        meta["pkey_columns"] = [body.short() for _ in range(body.uint())]
    if flags & _HAS_MORE_PAGES:
        paging = body.value()
        meta["paging_state"] = (paging or b"").hex().upper()
        if not columns:
            return meta
    if flags & _NO_METADATA:
        return meta
    global_spec = bool(flags & _GLOBAL_TABLE_SPEC)
    if global_spec:
        meta["keyspace"] = body.string()
        meta["table"] = body.string()
    if columns:
        for _ in range(count):
            if not global_spec:
                body.string()
                body.string()
            body.string()
            body.option()
    return meta


def _schema_change(body: Reader, version: int) -> dict[str, Any]:
    if version <= 2:
        return {"change": body.string(), "keyspace": body.string(), "table": body.string()}
    out: dict[str, Any] = {"change": body.string()}
    target = body.string()
    out["target"] = target
    if target == "KEYSPACE":
        out["keyspace"] = body.string()
    elif target in ("TABLE", "TYPE"):
        out["keyspace"] = body.string()
        out["object"] = body.string()
    elif target in ("FUNCTION", "AGGREGATE"):
        out["keyspace"] = body.string()
        out["name"] = body.string()
        out["args"] = body.string_list()
    return out


def _event(body: Reader, version: int) -> dict[str, Any]:
    kind = body.string()
    out: dict[str, Any] = {"type": kind}
    if kind in ("TOPOLOGY_CHANGE", "STATUS_CHANGE"):
        out["change"] = body.string()
        out["host"], out["port"] = body.inet()
    elif kind == "SCHEMA_CHANGE":
        out["schema_change"] = _schema_change(body, version)
    return out
