"""MySQL's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction
from agent.protocols.mysql.messages import Command, Reply
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.mysql.plugin import MysqlConfig

# Packetbeat's mysql fields.yml.  Besides these: method, query, path, params, request and response.
FIELDS = """
mysql.affected_rows long
mysql.insert_id keyword
mysql.num_fields keyword
mysql.num_rows keyword
mysql.query keyword
mysql.error_code long
mysql.error_message keyword
"""


class Request:
    """A command as its event shows it: method, query, request text, bound parameters, notes."""

    __slots__ = ("cmd", "method", "notes", "params", "query", "request")

    def __init__(self, cmd: Command, method: str, query: str, request: str) -> None:
        self.cmd = cmd
        self.method = method
        self.query = query
        self.request = request
        self.params: list[str] | None = None
        self.notes: list[str] = []


def transaction(conn: ConnectionInfo, config: MysqlConfig, txn: Request, reply: Reply | None) -> Transaction:
    """A command and its reply (none for a command the server does not answer) as Packetbeat publishes it."""
    cmd = txn.cmd
    mysql: dict[str, Any] = {"affected_rows": 0, "insert_id": 0, "num_fields": 0, "num_rows": 0}
    fields: dict[str, Any] = {"method": txn.method, "query": txn.query, "mysql": mysql}
    out = Transaction(type="mysql", conn=conn, ts_ns=cmd.ts_ns, client_bytes=cmd.size, notes=list(txn.notes),
                      fields=fields)
    if txn.params:
        fields["params"] = txn.params
    if config.send_request:
        fields["request"] = txn.request
    if reply is not None:
        mysql.update(affected_rows=reply.affected_rows, insert_id=reply.insert_id,
                     num_fields=reply.num_fields, num_rows=reply.num_rows)
        if reply.error:
            mysql["error_code"] = reply.error_code
            mysql["error_message"] = reply.error_message
            out.status = "Error"
        if reply.tables:
            fields["path"] = ", ".join(reply.tables)
        if config.send_response:
            fields["response"] = reply.response
        out.end_ns = reply.ts_ns
        out.server_bytes = reply.size
        out.client_bytes = cmd.size + reply.client_extra
        out.notes.extend(reply.notes)
    return out
