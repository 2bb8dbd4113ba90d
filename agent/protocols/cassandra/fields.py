"""Cassandra's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction, prefixed
from agent.protocols.cassandra.body import OP_ERROR
from agent.protocols.cassandra.parser import CqlFrame
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.cassandra.plugin import CassandraConfig


# A frame header, as both directions publish it.
_HEADERS = """
version long
flags keyword
stream keyword
op keyword
length long
"""

# Result metadata: of a ROWS result, and of a PREPARED result's bound variables and result columns.
_METADATA = """
keyspace keyword
table keyword
flags keyword
col_count long
pkey_columns long
paging_state keyword
"""

# A schema change, as a RESULT and as a pushed EVENT.
_SCHEMA_CHANGE = """
change keyword
keyspace keyword
table keyword
object keyword
target keyword
name keyword
args keyword
"""

# Packetbeat's cassandra fields.yml; pktbeat also publishes authentication.data (an AUTH_CHALLENGE or
# AUTH_SUCCESS token, Go-quoted) and result.keyspace.
FIELDS = f"""
cassandra.no_request boolean
{prefixed("cassandra.request.headers", _HEADERS)}
{prefixed("cassandra.response.headers", _HEADERS)}
cassandra.request.query keyword
cassandra.response.result.type keyword
cassandra.response.result.rows.num_rows long
{prefixed("cassandra.response.result.rows.meta", _METADATA)}
cassandra.response.result.keyspace keyword
{prefixed("cassandra.response.result.schema_change", _SCHEMA_CHANGE)}
cassandra.response.result.prepared.prepared_id keyword
{prefixed("cassandra.response.result.prepared.req_meta", _METADATA)}
{prefixed("cassandra.response.result.prepared.resp_meta", _METADATA)}
cassandra.response.supported object dynamic=keyword
cassandra.response.authentication.class keyword
cassandra.response.authentication.data keyword
cassandra.response.warnings keyword
cassandra.response.event.type keyword
cassandra.response.event.change keyword
cassandra.response.event.host keyword
cassandra.response.event.port long
{prefixed("cassandra.response.event.schema_change", _SCHEMA_CHANGE)}
cassandra.response.error.code long
cassandra.response.error.msg keyword
cassandra.response.error.type keyword
cassandra.response.error.details.read_consistency keyword
cassandra.response.error.details.required long
cassandra.response.error.details.alive long
cassandra.response.error.details.received long
cassandra.response.error.details.blockfor long
cassandra.response.error.details.write_type keyword
cassandra.response.error.details.data_present boolean
cassandra.response.error.details.keyspace keyword
cassandra.response.error.details.table keyword
cassandra.response.error.details.stmt_id keyword
cassandra.response.error.details.num_failures keyword
cassandra.response.error.details.function keyword
cassandra.response.error.details.arg_types keyword
"""


def transaction(conn: ConnectionInfo, config: CassandraConfig, request: CqlFrame | None,
                response: CqlFrame) -> Transaction:
    """A request and its response (or a server push alone) as Packetbeat publishes it."""
    cassandra: dict[str, Any] = {}
    notes: list[str] = []
    if request is not None:
        notes.extend(request.notes)
        data = _frame_fields(request, config.send_request, config.send_request_header)
        if data:
            cassandra["request"] = data
    else:
        cassandra["no_request"] = True
    notes.extend(response.notes)
    data = _frame_fields(response, config.send_response, config.send_response_header)
    if data:
        cassandra["response"] = data
    fields: dict[str, Any] = {"cassandra": cassandra} if cassandra else {}
    ts_ns = request.ts_ns if request is not None else response.ts_ns
    return Transaction(
        type="cassandra", conn=conn, ts_ns=ts_ns, end_ns=max(response.ts_ns, ts_ns),
        has_request=request is not None, status="Error" if response.opcode == OP_ERROR else "OK",
        client_bytes=request.size if request is not None else None, server_bytes=response.size,
        notes=notes, fields=fields)


def _frame_fields(frame: CqlFrame, send: bool, send_header: bool) -> dict[str, Any]:
    """What one side publishes: nothing unless `send`, its decoded body, and its header when `send_header`."""
    if not send:
        return {}
    data = dict(frame.data)
    if send_header:
        data["headers"] = frame.headers()
    return data
