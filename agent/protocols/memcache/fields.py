"""Memcache's event fields (with their index mapping), and its messages and transactions as Packetbeat
publishes them (memcache.request/response.*)."""

from __future__ import annotations

import base64
from typing import Any

from agent.protocols.base import Transaction
from agent.protocols.memcache import codes
from agent.protocols.memcache.parser import McMessage
from agent.transport.types import ConnectionInfo

FIELDS = """
memcache.protocol_type keyword
memcache.request.line keyword
memcache.request.command keyword
memcache.request.type keyword
memcache.request.opcode keyword
memcache.request.opcode_value long
memcache.request.opaque long
memcache.request.vbucket long
memcache.request.keys keyword
memcache.request.count_values long
memcache.request.values keyword
memcache.request.bytes long
memcache.request.delta long
memcache.request.initial long
memcache.request.verbosity long
memcache.request.raw_args keyword
memcache.request.source_class long
memcache.request.dest_class long
memcache.request.automove keyword
memcache.request.flags long
memcache.request.exptime long
memcache.request.sleep_us long
memcache.request.noreply boolean
memcache.request.quiet boolean
memcache.request.cas_unique long
memcache.response.command keyword
memcache.response.type keyword
memcache.response.error_msg keyword
memcache.response.opcode keyword
memcache.response.opcode_value long
memcache.response.opaque long
memcache.response.status keyword
memcache.response.status_code long
memcache.response.keys keyword
memcache.response.count_values long
memcache.response.values keyword
memcache.response.bytes long
memcache.response.flags long
memcache.response.value long
memcache.response.cas_unique long
memcache.response.version keyword
memcache.response.stats object
memcache.response.stats.name keyword
memcache.response.stats.value keyword
"""

NOTE_NO_REQUEST = "Invalid transaction. Request missing"
NOTE_NON_QUIET_RESPONSE_ONLY = "Missing response for non-quiet request"
NOTE_UNFINISHED = "Unfinished transaction"

_AUTOMOVE = {0: "standby", 1: "slow", 2: "aggressive"}

OK = "OK"
ERROR = "Error"
CLIENT_ERROR = "Client Error"
SERVER_ERROR = "Server Error"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text_arg(msg: McMessage, kind: str, out: dict[str, Any]) -> None:
    kind = kind.rstrip("?")
    if kind in ("key", "keys"):
        out["keys"] = list(msg.keys)
    elif kind in ("flags", "exptime"):
        out[kind] = getattr(msg, kind)
    elif kind == "bytes":
        out["bytes"] = msg.byte_count
    elif kind == "cas":
        out["cas_unique"] = msg.cas or 0
    elif kind == "noreply":
        out["noreply"] = msg.noreply
    elif kind in ("delta", "value", "sleep_us", "verbosity"):
        out[kind] = msg.value
    elif kind == "source_class":
        out["source_class"] = msg.ivalue
    elif kind == "dest_class":
        out["dest_class"] = msg.ivalue2
    elif kind == "automove":
        out["automove"] = _AUTOMOVE.get(msg.value, str(msg.value))
    elif kind == "raw":
        out["raw_args"] = msg.raw_args
    elif kind == "stat":
        out["stats"] = _stats(msg)
    elif kind == "error_msg":
        if msg.error_msg is not None:
            out["error_msg"] = msg.error_msg
    elif kind == "version" and msg.version:
        out["version"] = msg.version


def _stats(msg: McMessage) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in msg.stats]


def message_fields(msg: McMessage) -> dict[str, Any]:
    """memcache.request or memcache.response of one message."""
    cmd = msg.command
    if msg.is_binary:
        return _binary_fields(msg)
    if cmd is codes.UNKNOWN_COMMAND:
        return {"line": msg.line, "command": cmd.name, "type": cmd.type}
    out: dict[str, Any] = {"command": cmd.name, "type": cmd.type}
    if cmd is codes.COUNTER_REPLY:
        out["value"] = msg.value
        return out
    if cmd.data:
        out["count_values"] = msg.count_values
        if msg.count_values:
            if msg.is_request and msg.data is not None:
                out["values"] = _b64(msg.data)
            elif not msg.is_request and msg.values:
                out["values"] = [_b64(v) for v in msg.values]
    for kind in cmd.args:
        _text_arg(msg, kind, out)
    return out


def _binary_fields(msg: McMessage) -> dict[str, Any]:
    cmd = msg.command
    out: dict[str, Any] = {"command": cmd.name, "type": cmd.type, "opcode": codes.OPCODE_NAMES.get(msg.opcode, ""),
                           "opcode_value": msg.opcode, "opaque": msg.opaque}
    if msg.keys:
        out["keys"] = list(msg.keys)
    if msg.cas is not None:
        out["cas_unique"] = msg.cas
    if msg.count_values > 0:
        out["count_values"] = msg.count_values
        if msg.values:
            out["values"] = [_b64(v) for v in msg.values]
        out["bytes"] = msg.byte_count
    if msg.version is not None:
        out["version"] = msg.version
    if msg.is_request:
        out["quiet"] = msg.quiet
        out["vbucket"] = msg.vbucket
        for kind in cmd.args:
            if kind in ("flags", "exptime"):
                out[kind] = getattr(msg, kind)
            elif kind == "delta":
                out["delta"] = msg.value
            elif kind == "initial":
                out["initial"] = msg.value2
            elif kind == "verbosity32":
                out["verbosity"] = msg.value
        return out
    out["status"] = codes.STATUS_NAMES.get(msg.status, "")
    out["status_code"] = msg.status
    if cmd.type == codes.COUNTER:
        out["value"] = msg.value
    if "flags" in cmd.response_args:
        out["flags"] = msg.flags
    if cmd.value == "stat" and msg.stats:
        out["stats"] = _stats(msg)
    return out


def transaction_status(request: McMessage | None, response: McMessage | None) -> str:
    if request is None:
        return CLIENT_ERROR
    if response is None:
        if request.quiet or request.noreply or request.command.is_quit:
            return OK
        return SERVER_ERROR
    if request.is_binary:
        if response.status == 0:
            return OK
        return SERVER_ERROR if response.status > 0x80 else ERROR
    cmd = response.command
    if cmd.type != codes.FAIL:
        return OK
    if cmd.name in codes.CLIENT_ERROR_REPLIES:
        return CLIENT_ERROR
    if cmd.name in codes.SERVER_ERROR_REPLIES:
        return SERVER_ERROR
    return ERROR


def outcome(response: McMessage) -> str:
    """event.outcome: success, or failure for a binary error status or a failing text reply.

    Packetbeat maps only the binary status name "Success" (so text replies always
    read as success); a failing reply is reported as a failure here.
    """
    if response.status != 0 or (not response.is_binary and response.command.type == codes.FAIL):
        return "failure"
    return "success"


def build_transaction(conn: ConnectionInfo, request: McMessage | None, response: McMessage | None,
                      extra_notes: tuple[str, ...] = ()) -> Transaction:
    """One event; note Packetbeat's quirk: source.bytes is the response size, destination.bytes the request's."""
    first = request if request is not None else response
    assert first is not None
    memcache: dict[str, Any] = {"protocol_type": "binary" if first.is_binary else "text"}
    event: dict[str, str] = {}
    notes: list[str] = []
    if request is not None:
        memcache["request"] = message_fields(request)
        event["action"] = "memcache." + request.command.type.lower()
        notes.extend(request.notes)
    if response is not None:
        memcache["response"] = message_fields(response)
        event["outcome"] = outcome(response)
        notes.extend(response.notes)
    notes.extend(extra_notes)
    end = None
    if response is not None:
        end = max(response.ts_ns, first.ts_ns)
    return Transaction(
        type="memcache", conn=conn, ts_ns=first.ts_ns, end_ns=end, has_request=request is not None,
        status=transaction_status(request, response),
        client_bytes=response.size if response is not None else None,
        server_bytes=request.size if request is not None else None,
        notes=notes, fields={"memcache": memcache, "event": event})
