"""PostgreSQL's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction
from agent.protocols.sql.text import RowText, sql_method
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.pgsql.plugin import PgsqlConfig

# Packetbeat's pgsql fields.yml.  Besides these: method, query, params, request and response.
FIELDS = """
pgsql.error_code long
pgsql.error_message keyword
pgsql.error_severity keyword
pgsql.num_fields keyword
pgsql.num_rows keyword
"""


class Request:
    """One statement (of a Query) or one Execute, as its event shows it, filled in as the server answers."""

    __slots__ = ("client_bytes", "end_ns", "error", "ignored", "method", "names", "notes", "num_fields",
                 "num_rows", "params", "query", "server_bytes", "started", "text", "ts_ns")

    def __init__(self, ts_ns: int, query: str, client_bytes: int, keep_rows: int | None) -> None:
        self.ts_ns = ts_ns
        self.query = query
        self.method = sql_method(query)
        self.client_bytes = client_bytes
        self.server_bytes = 0
        self.end_ns: int | None = None
        self.num_rows = 0
        self.num_fields = 0
        self.names: tuple[str, ...] = ()
        self.error: tuple[str, str, str] | None = None
        self.notes: list[str] = []
        self.params: list[str] | None = None
        self.text = RowText(keep_rows) if keep_rows is not None else None
        self.ignored = False
        self.started = False  # a result message arrived

    def fields(self, names: tuple[str, ...]) -> None:
        self.num_fields = len(names)
        self.names = names
        if self.text is not None:
            self.text.header(names)


def transaction(conn: ConnectionInfo, config: PgsqlConfig, txn: Request) -> Transaction:
    """A statement and what the server answered, as Packetbeat publishes it."""
    pgsql: dict[str, Any] = {"num_rows": txn.num_rows, "num_fields": txn.num_fields}
    fields: dict[str, Any] = {"method": txn.method, "query": txn.query, "pgsql": pgsql}
    out = Transaction(type="pgsql", conn=conn, ts_ns=txn.ts_ns, end_ns=txn.end_ns,
                      client_bytes=txn.client_bytes, server_bytes=txn.server_bytes, notes=txn.notes,
                      fields=fields)
    if txn.error is not None:
        code, message, severity = txn.error
        pgsql.update(error_code=code, error_message=message, error_severity=severity)
        out.status = "Error"
    if txn.params:
        fields["params"] = txn.params
    if config.send_request:
        fields["request"] = txn.query
    if txn.text is not None:
        fields["response"] = txn.text.text()
    return out
