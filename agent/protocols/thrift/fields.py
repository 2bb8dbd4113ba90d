"""Thrift's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction
from agent.protocols.thrift.idl import IdlMethod
from agent.protocols.thrift.parser import EXCEPTION, ThriftMessage, format_struct
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.thrift.plugin import ThriftConfig

# Packetbeat's thrift fields.yml (which leaves the types to dynamic mapping: they are strings, rendered).
# Besides these: method, path (the service), query, request and response (common fields).
FIELDS = """
thrift.params keyword
thrift.service keyword
thrift.return_value keyword
thrift.exceptions keyword
"""

PACKET_LOSS_NOTE = "Packet loss while capturing the response"


def reply_values(reply: ThriftMessage, method: IdlMethod | None, limit: int) -> tuple[str, str]:
    """(return_value, exceptions): field 0 is the return value, any other field an exception."""
    if not reply.fields:
        return "", ""
    first = reply.fields[0]
    if first.id == 0:
        return first.value, ""
    # A TApplicationException (message type EXCEPTION) is not one of the method's declared exceptions.
    names = method.exceptions if method is not None and reply.type != EXCEPTION else None
    return "", format_struct(reply.fields, reply.more_fields, limit, names)


def transaction(conn: ConnectionInfo, config: ThriftConfig, call: ThriftMessage, reply: ThriftMessage | None,
                method: IdlMethod | None) -> Transaction:
    """A call and its reply (none for a oneway call) as Packetbeat publishes it; `method` is from the IDL."""
    limit = config.collection_max_size
    params = format_struct(call.fields, call.more_fields, limit, method.params if method else None)
    service = method.service if method else ""
    query = call.method + params
    thrift: dict[str, Any] = {"params": params}
    if service:
        thrift["service"] = service
    fields: dict[str, Any] = {"method": call.method, "path": service, "query": query, "thrift": thrift}
    if config.send_request:
        fields["request"] = query
    status = "OK"
    notes: list[str] = []
    if reply is not None:
        return_value, exceptions = reply_values(reply, method, limit)
        thrift["return_value"] = return_value
        if exceptions:
            thrift["exceptions"] = exceptions
            status = "Error"
        if config.send_response:
            fields["response"] = f"Exceptions: {exceptions}" if exceptions else return_value
        if reply.lost:
            notes.append(PACKET_LOSS_NOTE)
    return Transaction(
        type="thrift", conn=conn, ts_ns=call.ts_ns,
        end_ns=max(reply.ts_ns, call.ts_ns) if reply is not None else None,
        status=status, client_bytes=call.size or None,
        server_bytes=(reply.size or None) if reply is not None else None,
        notes=notes, fields=fields)
