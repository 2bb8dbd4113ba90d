"""PostgreSQL transactions: one per statement of a simple Query, one per Execute of the extended protocol.

Events follow Packetbeat: `method` (first word of the SQL), `query`,
`pgsql.{num_rows, num_fields, error_code, error_message, error_severity}`,
`request`/`response` on request, `destination.bytes` counting the result
messages (RowDescription through CommandComplete, as Packetbeat does).

Correlation: every client message the server answers leaves a slot in a
FIFO (Parse, Bind, Describe, Execute, Close, Sync, Query...); each server
message is read against the oldest slot.  An error skips the rest of its
Sync batch, as the server does; ReadyForQuery closes a batch.

Beyond Packetbeat: statements are split at semicolons outside quotes and
comments; a named statement's SQL is remembered (`statement_timeout`,
across the transport's idle expiry) for later executes; bound parameters
are decoded into `params`; COPY is followed (rows from CopyData or the
command tag); notices become notes.  As Packetbeat does, statements
starting with "SET " sent through the extended protocol (drivers' session
set-up) are not reported.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolSpec, SessionContext, Transaction
from agent.protocols.pgsql import values
from agent.protocols.pgsql.parser import (
    Backend,
    DataRows,
    EncryptionReply,
    ErrorNotice,
    Frontend,
    Message,
    ParameterDescription,
    PgsqlParser,
    RowDescription,
    Startup,
)
from agent.protocols.sql import SqlConfig
from agent.protocols.sql.statements import StatementStore, shared_store
from agent.protocols.sql.text import RowText, sql_method, truncate_row
from agent.transport.session import ParseError
from agent.transport.types import Direction

LOST_RESPONSE = "Packet loss while capturing the response"
UNKNOWN_STATEMENT = "The actual query being used is unknown"
EXECUTE_UNKNOWN = "Request Execute Statement"
TRUNCATED_QUERY = "The query was truncated"

MAX_SLOTS = 4096  # client messages waiting for the server's answer
MAX_PORTALS = 256
MAX_NOTES = 10



@dataclass(frozen=True)
class PgsqlConfig(SqlConfig):
    # pktbeat: how long a named prepared statement's SQL is remembered after its last use.
    statement_timeout: float = opt(3600.0, kind="duration")


class _Statement:
    __slots__ = ("names", "oids", "sql")

    def __init__(self, sql: str, oids: tuple[int, ...]) -> None:
        self.sql = sql
        self.oids = oids
        self.names: tuple[str, ...] | None = None  # result columns, once described


class _Portal:
    __slots__ = ("names", "params", "stmt")

    def __init__(self, stmt: _Statement | None, params: list[str] | None) -> None:
        self.stmt = stmt
        self.params = params
        self.names: tuple[str, ...] | None = stmt.names if stmt is not None else None


class _Txn:
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


# slot kinds
_PARSE, _BIND, _DESCRIBE, _EXECUTE, _CLOSE, _SYNC, _QUERY, _FUNCTION = range(8)


class _Slot:
    __slots__ = ("index", "kind", "portal", "stmt", "txns")

    def __init__(self, kind: int, txns: list[_Txn] | None = None, stmt: _Statement | None = None,
                 portal: _Portal | None = None) -> None:
        self.kind = kind
        self.txns = txns or []
        self.index = 0
        self.stmt = stmt
        self.portal = portal

    @property
    def txn(self) -> _Txn | None:
        return self.txns[self.index] if self.index < len(self.txns) else None


class PgsqlSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, PgsqlConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        self.parser = PgsqlParser(max_row_length=config.max_row_length)
        self.keep_rows = config.max_rows if config.send_response else None
        self.parser.rows_per_result = self.keep_rows or 0
        conn = ctx.conn
        self.conn_key = (conn.client.ip, conn.client.port, conn.server.ip, conn.server.port)
        self.store: StatementStore[Any] = shared_store(config, ctx.counters, int(config.statement_timeout * 1e9))
        self.unnamed: _Statement | None = None
        self.portals: dict[str, _Portal] = {}
        self.slots: deque[_Slot] = deque()
        self.open = 0  # transactions created and not yet published or dropped
        self.pending_bytes = 0  # client bytes of the batch before its next Execute
        self.batch_ts: int | None = None
        self.last_exec: _Txn | None = None
        self.carry_bytes = 0  # Describe's answer, counted with the Execute that follows
        self.carry_names: tuple[str, ...] | None = None
        self.resp_ts: int | None = None
        self.copy_in: _Txn | None = None
        self.failed = False  # an error: the server skips the rest of the batch until Sync
        self._parser_counts: dict[str, int] = {}

    # -- StreamSession -------------------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        out: list[Message] = []
        try:
            self.parser.feed(direction, data, ts_ns, out)
        finally:
            for msg in out:
                if direction == Direction.TO_SERVER:
                    self._client(msg)
                else:
                    self._server(msg)
            self._sync_counters()

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.parser.gap(direction, nbytes)
        if direction == Direction.TO_SERVER:
            self.pending_bytes = 0
            self.batch_ts = None
            return
        head = self.slots[0] if self.slots else None
        txn = head.txn if head is not None else None
        if txn is not None and (txn.num_rows or txn.num_fields):
            txn.notes.append(LOST_RESPONSE)
            self._complete(head, txn)  # type: ignore[arg-type]
        self._drop_all()

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self.store.drop_connection(self.conn_key)
        self._sync_counters()

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.parser.recover(direction)
        if direction == Direction.TO_CLIENT:
            self._drop_all()

    def expire(self, ts_ns: int) -> None:
        self._drop_all()
        self._sync_counters()

    def pending(self) -> int:
        return self.open

    def buffered(self) -> int:
        return self.parser.buffered

    # -- helpers ---------------------------------------------------------------------------------------------

    def _sync_counters(self) -> None:
        for name, value in self.parser.counters.items():
            seen = self._parser_counts.get(name, 0)
            if value != seen:
                self.counters.inc(name, value - seen)
                self._parser_counts[name] = value

    def _push(self, slot: _Slot) -> None:
        self.slots.append(slot)
        if len(self.slots) > MAX_SLOTS:
            self._drop_slot(self.slots.popleft())
            self.counters.inc("queue_overflow")

    def _drop_slot(self, slot: _Slot) -> None:
        for txn in slot.txns[slot.index:]:
            if not txn.ignored:
                self.counters.inc("unmatched_requests")
            self.open -= 1
        slot.index = len(slot.txns)

    def _drop_all(self) -> None:
        while self.slots:
            self._drop_slot(self.slots.popleft())
        self.failed = False
        self.copy_in = None
        self.carry_bytes = 0
        self.carry_names = None
        self.resp_ts = None

    def _new_txn(self, ts_ns: int, query: str, client_bytes: int) -> _Txn:
        self.open += 1
        return _Txn(ts_ns, query, client_bytes, self.keep_rows)

    def _statement(self, name: str, ts_ns: int) -> _Statement | None:
        if not name:
            return self.unnamed
        found = self.store.get(self.conn_key, name, ts_ns)
        return found if isinstance(found, _Statement) else None

    # -- client messages ----------------------------------------------------------------------------------------

    def _client(self, msg: Message) -> None:
        if isinstance(msg, Frontend):
            self._frontend(msg)
        elif isinstance(msg, Startup):
            if msg.kind == "startup":
                self.store.drop_connection(self.conn_key)  # a new connection on this 4-tuple
            elif msg.kind in ("ssl", "gss"):
                self.counters.inc("encryption_requests")

    def _frontend(self, msg: Frontend) -> None:
        kind = msg.type
        if kind == "Q":
            self._query(msg)
            return
        if kind in "dcf":
            if self.copy_in is not None:
                self.copy_in.client_bytes += msg.size
            return
        if kind in "Xp":
            return
        if kind in "SH":
            if self.last_exec is not None:
                self.last_exec.client_bytes += msg.size
            else:
                self.pending_bytes += msg.size
            if kind == "S":
                self._push(_Slot(_SYNC))
                self.last_exec = None
                self.pending_bytes = 0
                self.batch_ts = None
            return
        if self.batch_ts is None:
            self.batch_ts = msg.ts_ns
        if kind == "E":
            self._execute(msg)
            return
        self.pending_bytes += msg.size
        if kind == "P":
            stmt = _Statement(msg.sql, msg.param_oids)
            if msg.name:
                self.store.put(self.conn_key, msg.name, stmt, len(msg.sql) + 64, msg.ts_ns)
            else:
                self.unnamed = stmt
            self._push(_Slot(_PARSE, stmt=stmt))
        elif kind == "B":
            bound = self._statement(msg.statement, msg.ts_ns)
            params = None
            if msg.params:
                oids = bound.oids if bound is not None else ()
                params = values.bind_params(msg.params, msg.param_formats, oids, self.config.max_row_length)
            portal = _Portal(bound, params)
            if msg.name not in self.portals and len(self.portals) >= MAX_PORTALS:
                self.portals.pop(next(iter(self.portals)))
            self.portals[msg.name] = portal
            self._push(_Slot(_BIND, portal=portal))
        elif kind == "D":
            target_stmt = self._statement(msg.name, msg.ts_ns) if msg.kind == "S" else None
            target_portal = self.portals.get(msg.name) if msg.kind == "P" else None
            self._push(_Slot(_DESCRIBE, stmt=target_stmt, portal=target_portal))
        elif kind == "C":
            if msg.kind == "S":
                if msg.name:
                    self.store.delete(self.conn_key, msg.name)
                else:
                    self.unnamed = None
            else:
                self.portals.pop(msg.name, None)
            self._push(_Slot(_CLOSE))
        elif kind == "F":
            self._push(_Slot(_FUNCTION))

    def _query(self, msg: Frontend) -> None:
        txns = []
        for statement in values.split_statements(msg.sql):
            txn = self._new_txn(msg.ts_ns, statement, msg.size)
            if msg.truncated:
                txn.notes.append(TRUNCATED_QUERY)
            txns.append(txn)
        self._push(_Slot(_QUERY, txns))

    def _execute(self, msg: Frontend) -> None:
        portal = self.portals.get(msg.name)
        stmt = portal.stmt if portal is not None else None
        client_bytes = self.pending_bytes + msg.size
        ts = self.batch_ts if self.batch_ts is not None else msg.ts_ns
        self.pending_bytes = 0
        self.batch_ts = None
        if stmt is None:
            txn = self._new_txn(ts, EXECUTE_UNKNOWN, client_bytes)
            txn.method = "EXECUTE"
            txn.notes.append(UNKNOWN_STATEMENT)
        else:
            txn = self._new_txn(ts, stmt.sql.strip(), client_bytes)
            txn.ignored = stmt.sql.startswith("SET ")
        if portal is not None:
            txn.params = portal.params
            if portal.names is not None:
                txn.fields(portal.names)
        self.last_exec = txn
        self._push(_Slot(_EXECUTE, [txn], portal=portal))

    # -- server messages ----------------------------------------------------------------------------------------

    def _server(self, msg: Message) -> None:
        if isinstance(msg, EncryptionReply):
            if msg.tls:  # 'S' to an SSLRequest: the rest of the connection is TLS
                self.counters.inc("tls_hand_overs")
                self.ctx.hand_over("tls", msg.ts_ns, to_server=self.parser.take_rest(Direction.TO_SERVER),
                                   to_client=self.parser.take_rest(Direction.TO_CLIENT))
            return
        slots = self.slots
        if not slots:
            if isinstance(msg, ErrorNotice) and msg.type == "E":
                self.counters.inc("unmatched_responses")
            elif isinstance(msg, (DataRows, RowDescription)) or \
                    (isinstance(msg, Backend) and msg.type in "CI12"):
                self.counters.inc("unexpected_messages")
            return
        if self.resp_ts is None and not (isinstance(msg, Backend) and msg.type in "SAKv"):
            self.resp_ts = msg.ts_ns
        head = slots[0]
        if isinstance(msg, DataRows):
            txn = head.txn
            if txn is None:
                self.counters.inc("unexpected_messages")
                return
            self._rows(txn, msg, head)
            return
        if isinstance(msg, RowDescription):
            self._row_description(head, msg)
            return
        if isinstance(msg, ErrorNotice):
            if msg.type == "N":
                txn = head.txn
                if txn is not None:
                    txn.server_bytes += msg.size
                    if len(txn.notes) < MAX_NOTES:
                        txn.notes.append(f"{msg.severity} {msg.code}: {msg.message}")
                else:
                    self.counters.inc("notices_without_statement")
                return
            self._error(head, msg)
            return
        if isinstance(msg, ParameterDescription):
            if head.kind == _DESCRIBE:
                self.carry_bytes += msg.size
                if head.stmt is not None and msg.oids and not head.stmt.oids:
                    head.stmt.oids = msg.oids
            return
        if isinstance(msg, Backend):
            self._backend(head, msg)

    def _rows(self, txn: _Txn, msg: DataRows, head: _Slot) -> None:
        if head.kind == _EXECUTE:
            self._take_carry(txn)  # the Describe's RowDescription heads the rows
        txn.num_rows += msg.count
        txn.server_bytes += msg.size
        txn.started = True
        text = txn.text
        if text is not None and msg.rows:
            limit = self.config.max_row_length
            for row in msg.rows:
                if not text.wants_rows:
                    break
                text.add_row(truncate_row(list(row), limit, None))

    def _row_description(self, head: _Slot, msg: RowDescription) -> None:
        if head.kind == _DESCRIBE:
            if head.stmt is not None:
                head.stmt.names = msg.names
            if head.portal is not None:
                head.portal.names = msg.names
            self.carry_names = msg.names
            self.carry_bytes += msg.size
            self.slots.popleft()
            return
        txn = head.txn
        if txn is None:
            self.counters.inc("unexpected_messages")
            return
        txn.server_bytes += msg.size
        txn.started = True
        txn.fields(msg.names)

    def _take_carry(self, txn: _Txn) -> None:
        if self.carry_bytes:
            txn.server_bytes += self.carry_bytes
            self.carry_bytes = 0
        if self.carry_names is not None:
            if not txn.names:
                txn.fields(self.carry_names)
            self.carry_names = None

    def _backend(self, head: _Slot, msg: Backend) -> None:
        kind = msg.type
        if kind in "CIs":
            txn = head.txn
            if txn is None:
                self.counters.inc("unexpected_messages")
                return
            txn.server_bytes += msg.size
            if kind == "C" and msg.text.startswith("COPY "):
                count = msg.text[5:].strip()
                if count.isdigit() and not txn.num_rows:
                    txn.num_rows = int(count)
            self._complete(head, txn)
            return
        if kind == "Z":
            while self.slots:
                slot = self.slots.popleft()
                self._drop_slot(slot)
                if slot.kind in (_SYNC, _QUERY):
                    break
            self.failed = False
            self.resp_ts = None
            self.carry_bytes = 0
            self.carry_names = None
            return
        if (kind == "1" and head.kind == _PARSE) or (kind == "2" and head.kind == _BIND) or \
                (kind == "3" and head.kind == _CLOSE) or (kind == "n" and head.kind == _DESCRIBE) or \
                (kind == "V" and head.kind == _FUNCTION):
            self.slots.popleft()
            return
        if kind in "GHW":
            txn = head.txn
            if txn is not None:
                txn.server_bytes += msg.size
                txn.started = True
                if kind == "G":
                    self.copy_in = txn
                elif kind == "W":  # replication: the stream never ends; report the command now
                    self._complete(head, txn)
            return
        if kind == "c":
            txn = head.txn
            if txn is not None:
                txn.server_bytes += msg.size
            return
        if kind in "123nV":
            self.counters.inc("unexpected_messages")

    def _error(self, head: _Slot, msg: ErrorNotice) -> None:
        txn = head.txn
        error = (msg.code, msg.message, msg.severity)
        if head.kind == _QUERY:
            if txn is None:
                self.counters.inc("unmatched_responses")
                return
            txn.error = error
            txn.server_bytes += msg.size
            self._complete(head, txn)
            self._drop_slot(head)  # the rest of the Query is not executed
            return
        # extended protocol: the error belongs to the first Execute of the batch; the rest is skipped
        target: _Txn | None = None
        parse_stmt: _Statement | None = None
        while self.slots:
            slot = self.slots[0]
            if slot.kind in (_SYNC, _QUERY):
                break
            self.slots.popleft()
            if slot.kind == _PARSE and parse_stmt is None:
                parse_stmt = slot.stmt
            if slot.kind == _EXECUTE and target is None and slot.txn is not None:
                target = slot.txn
                slot.index = 1
                continue
            self._drop_slot(slot)
        if target is None:
            if parse_stmt is None:
                self.counters.inc("unmatched_responses")
                return
            target = self._new_txn(msg.ts_ns, parse_stmt.sql.strip(), 0)
        target.error = error
        target.server_bytes += msg.size
        self._take_carry(target)
        self._publish(target)

    def _complete(self, slot: _Slot, txn: _Txn) -> None:
        if slot.kind == _EXECUTE:
            self._take_carry(txn)
        slot.index += 1
        if slot.kind == _EXECUTE and self.slots and self.slots[0] is slot:
            self.slots.popleft()
        if self.copy_in is txn:
            self.copy_in = None
        if self.last_exec is txn:
            self.last_exec = None
        self._publish(txn)

    def _publish(self, txn: _Txn) -> None:
        self.open -= 1
        if txn.end_ns is None:
            txn.end_ns = self.resp_ts if self.resp_ts is not None else txn.ts_ns
        self.resp_ts = None
        if txn.ignored:
            return
        pgsql: dict[str, Any] = {"num_rows": txn.num_rows, "num_fields": txn.num_fields}
        fields: dict[str, Any] = {"method": txn.method, "query": txn.query, "pgsql": pgsql}
        out = Transaction(type="pgsql", conn=self.ctx.conn, ts_ns=txn.ts_ns, end_ns=txn.end_ns,
                          client_bytes=txn.client_bytes, server_bytes=txn.server_bytes, notes=txn.notes,
                          fields=fields)
        if txn.error is not None:
            code, message, severity = txn.error
            pgsql.update(error_code=code, error_message=message, error_severity=severity)
            out.status = "Error"
        if txn.params:
            fields["params"] = txn.params
        if self.config.send_request:
            fields["request"] = txn.query
        if txn.text is not None:
            fields["response"] = txn.text.text()
        self.ctx.emit(out)


def _session(ctx: SessionContext) -> PgsqlSession:
    return PgsqlSession(ctx)


SPEC = ProtocolSpec(
    name="pgsql",
    config_class=PgsqlConfig,
    tcp=_session,
    description="PostgreSQL: simple and extended queries, COPY, errors and notices",
    counters=("unmatched_requests", "unmatched_responses", "parse_errors", "queue_overflow",
              "unexpected_messages", "notices_without_statement", "resync_skipped_bytes", "malformed_rows",
              "encryption_requests", "tls_hand_overs", "statements_expired", "statements_evicted",
              "statement_connections_evicted"),
)
