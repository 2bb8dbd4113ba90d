"""Cassandra's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction
from agent.protocols.cassandra.body import OP_ERROR
from agent.protocols.cassandra.parser import CqlFrame
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.cassandra.plugin import CassandraConfig

# Packetbeat's cassandra fields.yml; pktbeat also publishes authentication.data (an AUTH_CHALLENGE or
# AUTH_SUCCESS token, Go-quoted) and result.keyspace.
FIELDS = """
cassandra.no_request boolean
cassandra.request.headers.version long
cassandra.request.headers.flags keyword
cassandra.request.headers.stream keyword
cassandra.request.headers.op keyword
cassandra.request.headers.length long
cassandra.response.headers.version long
cassandra.response.headers.flags keyword
cassandra.response.headers.stream keyword
cassandra.response.headers.op keyword
cassandra.response.headers.length long
cassandra.request.query keyword
cassandra.response.result.type keyword
cassandra.response.result.rows.num_rows long
cassandra.response.result.rows.meta.keyspace keyword
cassandra.response.result.rows.meta.table keyword
cassandra.response.result.rows.meta.flags keyword
cassandra.response.result.rows.meta.col_count long
cassandra.response.result.rows.meta.pkey_columns long
cassandra.response.result.rows.meta.paging_state keyword
cassandra.response.result.keyspace keyword
cassandra.response.result.schema_change.change keyword
cassandra.response.result.schema_change.keyspace keyword
cassandra.response.result.schema_change.table keyword
cassandra.response.result.schema_change.object keyword
cassandra.response.result.schema_change.target keyword
cassandra.response.result.schema_change.name keyword
cassandra.response.result.schema_change.args keyword
cassandra.response.result.prepared.prepared_id keyword
cassandra.response.result.prepared.req_meta.keyspace keyword
cassandra.response.result.prepared.req_meta.table keyword
cassandra.response.result.prepared.req_meta.flags keyword
cassandra.response.result.prepared.req_meta.col_count long
cassandra.response.result.prepared.req_meta.pkey_columns long
cassandra.response.result.prepared.req_meta.paging_state keyword
cassandra.response.result.prepared.resp_meta.keyspace keyword
cassandra.response.result.prepared.resp_meta.table keyword
cassandra.response.result.prepared.resp_meta.flags keyword
cassandra.response.result.prepared.resp_meta.col_count long
cassandra.response.result.prepared.resp_meta.pkey_columns long
cassandra.response.result.prepared.resp_meta.paging_state keyword
cassandra.response.supported object dynamic=keyword
cassandra.response.authentication.class keyword
cassandra.response.authentication.data keyword
cassandra.response.warnings keyword
cassandra.response.event.type keyword
cassandra.response.event.change keyword
cassandra.response.event.host keyword
cassandra.response.event.port long
cassandra.response.event.schema_change.change keyword
cassandra.response.event.schema_change.keyspace keyword
cassandra.response.event.schema_change.table keyword
cassandra.response.event.schema_change.object keyword
cassandra.response.event.schema_change.target keyword
cassandra.response.event.schema_change.name keyword
cassandra.response.event.schema_change.args keyword
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
        if config.send_request:
            data = dict(request.data)
            if config.send_request_header:
                data["headers"] = request.headers()
            if data:
                cassandra["request"] = data
    else:
        cassandra["no_request"] = True
    notes.extend(response.notes)
    if config.send_response:
        data = dict(response.data)
        if config.send_response_header:
            data["headers"] = response.headers()
        if data:
            cassandra["response"] = data
    fields: dict[str, Any] = {"cassandra": cassandra} if cassandra else {}
    ts_ns = request.ts_ns if request is not None else response.ts_ns
    return Transaction(
        type="cassandra", conn=conn, ts_ns=ts_ns, end_ns=max(response.ts_ns, ts_ns),
        has_request=request is not None, status="Error" if response.opcode == OP_ERROR else "OK",
        client_bytes=request.size if request is not None else None, server_bytes=response.size,
        notes=notes, fields=fields)
