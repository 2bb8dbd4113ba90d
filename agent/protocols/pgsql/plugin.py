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
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolSpec, SessionContext
from agent.protocols.errors import ParseError
from agent.protocols.pgsql import values
from agent.protocols.pgsql.fields import FIELDS, Request, transaction
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
from agent.protocols.sql.text import truncate_row
from agent.protocols.stream import SessionBase, completed
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


class SlotKind(IntEnum):
    """What a client message waits for from the server: the kind of its slot in the FIFO."""

    PARSE = 0  # ParseComplete
    BIND = 1  # BindComplete
    DESCRIBE = 2  # ParameterDescription / RowDescription / NoData
    EXECUTE = 3  # rows, then CommandComplete (its transaction)
    CLOSE = 4  # CloseComplete
    SYNC = 5  # ReadyForQuery ends the batch
    QUERY = 6  # a simple Query: one transaction per statement, then ReadyForQuery
    FUNCTION = 7  # FunctionCallResponse


class _Slot:
    __slots__ = ("index", "kind", "portal", "stmt", "txns")

    def __init__(self, kind: SlotKind, txns: list[Request] | None = None, stmt: _Statement | None = None,
                 portal: _Portal | None = None) -> None:
        self.kind = kind
        self.txns = txns or []
        self.index = 0
        self.stmt = stmt
        self.portal = portal

    @property
    def txn(self) -> Request | None:
        return self.txns[self.index] if self.index < len(self.txns) else None


class PgsqlSession(SessionBase[PgsqlConfig]):
    def __init__(self, ctx: SessionContext[PgsqlConfig]) -> None:
        super().__init__(ctx)
        config = self.config
        self.parser = PgsqlParser(max_row_length=config.max_row_length, counters=ctx.counters)
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
        self.last_exec: Request | None = None
        self.carry_bytes = 0  # Describe's answer, counted with the Execute that follows
        self.carry_names: tuple[str, ...] | None = None
        self.resp_ts: int | None = None
        self.copy_in: Request | None = None
        self.failed = False  # an error: the server skips the rest of the batch until Sync

    # -- StreamSession -------------------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        messages, error = completed(lambda: self.parser.feed(direction, data, ts_ns))
        handle = self._client if direction == Direction.TO_SERVER else self._server
        for msg in messages:
            handle(msg)
        if error is not None:
            raise error

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.parser.gap(direction, nbytes, ts_ns)
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

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.parser.reset(direction)  # counted by the transport layer, as before
        if direction == Direction.TO_CLIENT:
            self._drop_all()

    def expire(self, ts_ns: int) -> None:
        self._drop_all()

    def pending(self) -> int:
        return self.open

    def buffered(self) -> int:
        return self.parser.buffered

    # -- helpers ---------------------------------------------------------------------------------------------

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

    def _new_txn(self, ts_ns: int, query: str, client_bytes: int) -> Request:
        self.open += 1
        return Request(ts_ns, query, client_bytes, self.keep_rows)

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
            self._sync_or_flush(msg)
            return
        if self.batch_ts is None:
            self.batch_ts = msg.ts_ns
        if kind == "E":
            self._execute(msg)
            return
        self.pending_bytes += msg.size
        handler = _FRONTEND.get(kind)
        if handler is not None:
            handler(self, msg)

    def _sync_or_flush(self, msg: Frontend) -> None:
        if self.last_exec is not None:
            self.last_exec.client_bytes += msg.size
        else:
            self.pending_bytes += msg.size
        if msg.type == "S":
            self._push(_Slot(SlotKind.SYNC))
            self.last_exec = None
            self.pending_bytes = 0
            self.batch_ts = None

    def _parse(self, msg: Frontend) -> None:
        stmt = _Statement(msg.sql, msg.param_oids)
        if msg.name:
            self.store.put(self.conn_key, msg.name, stmt, len(msg.sql) + 64, msg.ts_ns)
        else:
            self.unnamed = stmt
        self._push(_Slot(SlotKind.PARSE, stmt=stmt))

    def _bind(self, msg: Frontend) -> None:
        bound = self._statement(msg.statement, msg.ts_ns)
        params = None
        if msg.params:
            oids = bound.oids if bound is not None else ()
            params = values.bind_params(msg.params, msg.param_formats, oids, self.config.max_row_length)
        portal = _Portal(bound, params)
        if msg.name not in self.portals and len(self.portals) >= MAX_PORTALS:
            self.portals.pop(next(iter(self.portals)))
        self.portals[msg.name] = portal
        self._push(_Slot(SlotKind.BIND, portal=portal))

    def _describe(self, msg: Frontend) -> None:
        target_stmt = self._statement(msg.name, msg.ts_ns) if msg.kind == "S" else None
        target_portal = self.portals.get(msg.name) if msg.kind == "P" else None
        self._push(_Slot(SlotKind.DESCRIBE, stmt=target_stmt, portal=target_portal))

    def _close(self, msg: Frontend) -> None:
        if msg.kind == "S":
            if msg.name:
                self.store.delete(self.conn_key, msg.name)
            else:
                self.unnamed = None
        else:
            self.portals.pop(msg.name, None)
        self._push(_Slot(SlotKind.CLOSE))

    def _function(self, msg: Frontend) -> None:
        self._push(_Slot(SlotKind.FUNCTION))

    def _query(self, msg: Frontend) -> None:
        txns = []
        for statement in values.split_statements(msg.sql):
            txn = self._new_txn(msg.ts_ns, statement, msg.size)
            if msg.truncated:
                txn.notes.append(TRUNCATED_QUERY)
            txns.append(txn)
        self._push(_Slot(SlotKind.QUERY, txns))

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
        self._push(_Slot(SlotKind.EXECUTE, [txn], portal=portal))

    # -- server messages ----------------------------------------------------------------------------------------

    def _server(self, msg: Message) -> None:
        if isinstance(msg, EncryptionReply):
            self._encryption_reply(msg)
            return
        slots = self.slots
        if not slots:  # a server message no client message waits for
            if isinstance(msg, ErrorNotice) and msg.type == "E":
                self.counters.inc("unmatched_responses")
            elif isinstance(msg, (DataRows, RowDescription)) or (isinstance(msg, Backend) and msg.type in "CI12"):
                self.counters.inc("unexpected_messages")
            return
        if self.resp_ts is None and not (isinstance(msg, Backend) and msg.type in "SAKv"):
            self.resp_ts = msg.ts_ns
        head = slots[0]
        if isinstance(msg, DataRows):
            txn = self._answer(head, msg.size, "unexpected_messages")
            if txn is not None:
                self._rows(txn, msg, head)
        elif isinstance(msg, RowDescription):
            self._row_description(head, msg)
        elif isinstance(msg, ErrorNotice):
            if msg.type == "N":
                self._notice(head, msg)
            else:
                self._error(head, msg)
        elif isinstance(msg, ParameterDescription):
            if head.kind == SlotKind.DESCRIBE:
                self.carry_bytes += msg.size
                if head.stmt is not None and msg.oids and not head.stmt.oids:
                    head.stmt.oids = msg.oids
        elif isinstance(msg, Backend):
            self._backend(head, msg)

    def _encryption_reply(self, msg: EncryptionReply) -> None:
        if msg.tls:  # 'S' to an SSLRequest: the rest of the connection is TLS
            self.counters.inc("tls_hand_overs")
            self.ctx.hand_over("tls", msg.ts_ns, to_server=self.parser.take_rest(Direction.TO_SERVER),
                               to_client=self.parser.take_rest(Direction.TO_CLIENT))

    def _answer(self, head: _Slot, size: int, orphan_counter: str = "") -> Request | None:
        """The head slot's transaction, `size` more server bytes to its account; None (counted) if it has none."""
        txn = head.txn
        if txn is None:
            if orphan_counter:
                self.counters.inc(orphan_counter)
            return None
        txn.server_bytes += size
        return txn

    def _notice(self, head: _Slot, msg: ErrorNotice) -> None:
        txn = self._answer(head, msg.size, "notices_without_statement")
        if txn is not None and len(txn.notes) < MAX_NOTES:
            txn.notes.append(f"{msg.severity} {msg.code}: {msg.message}")

    def _rows(self, txn: Request, msg: DataRows, head: _Slot) -> None:
        """DataRows (their bytes counted by `_answer`): the row count, and the rows kept for the event."""
        if head.kind == SlotKind.EXECUTE:
            self._take_carry(txn)  # the Describe's RowDescription heads the rows
        txn.num_rows += msg.count
        txn.started = True
        text = txn.text
        if text is not None and msg.rows:
            limit = self.config.max_row_length
            for row in msg.rows:
                if not text.wants_rows:
                    break
                text.add_row(truncate_row(list(row), limit, None))

    def _row_description(self, head: _Slot, msg: RowDescription) -> None:
        if head.kind == SlotKind.DESCRIBE:
            if head.stmt is not None:
                head.stmt.names = msg.names
            if head.portal is not None:
                head.portal.names = msg.names
            self.carry_names = msg.names
            self.carry_bytes += msg.size
            self.slots.popleft()
            return
        txn = self._answer(head, msg.size, "unexpected_messages")
        if txn is not None:
            txn.started = True
            txn.fields(msg.names)

    def _take_carry(self, txn: Request) -> None:
        if self.carry_bytes:
            txn.server_bytes += self.carry_bytes
            self.carry_bytes = 0
        if self.carry_names is not None:
            if not txn.names:
                txn.fields(self.carry_names)
            self.carry_names = None

    def _backend(self, head: _Slot, msg: Backend) -> None:
        kind = msg.type
        handler = _BACKEND.get(kind)
        if handler is not None:
            handler(self, head, msg)
        elif _COMPLETES.get(kind) == head.kind:  # ParseComplete, BindComplete... answer their slot
            self.slots.popleft()
        elif kind in _COMPLETES:
            self.counters.inc("unexpected_messages")

    def _command_end(self, head: _Slot, msg: Backend) -> None:
        """CommandComplete, EmptyQueryResponse, PortalSuspended: the transaction is done."""
        txn = self._answer(head, msg.size, "unexpected_messages")
        if txn is None:
            return
        if msg.type == "C" and msg.text.startswith("COPY "):
            count = msg.text[5:].strip()
            if count.isdigit() and not txn.num_rows:
                txn.num_rows = int(count)
        self._complete(head, txn)

    def _ready(self, head: _Slot, msg: Backend) -> None:
        """ReadyForQuery: the batch (or Query) is over; what was skipped after an error is dropped."""
        while self.slots:
            slot = self.slots.popleft()
            self._drop_slot(slot)
            if slot.kind in (SlotKind.SYNC, SlotKind.QUERY):
                break
        self.failed = False
        self.resp_ts = None
        self.carry_bytes = 0
        self.carry_names = None

    def _copy_or_replication(self, head: _Slot, msg: Backend) -> None:
        txn = self._answer(head, msg.size)
        if txn is None:
            return
        txn.started = True
        if msg.type == "G":
            self.copy_in = txn
        elif msg.type == "W":  # replication: the stream never ends; report the command now
            self._complete(head, txn)

    def _copy_done(self, head: _Slot, msg: Backend) -> None:
        self._answer(head, msg.size)

    def _error(self, head: _Slot, msg: ErrorNotice) -> None:
        txn = head.txn
        error = (msg.code, msg.message, msg.severity)
        if head.kind == SlotKind.QUERY:
            if txn is None:
                self.counters.inc("unmatched_responses")
                return
            txn.error = error
            txn.server_bytes += msg.size
            self._complete(head, txn)
            self._drop_slot(head)  # the rest of the Query is not executed
            return
        # extended protocol: the error belongs to the first Execute of the batch; the rest is skipped
        target: Request | None = None
        parse_stmt: _Statement | None = None
        while self.slots:
            slot = self.slots[0]
            if slot.kind in (SlotKind.SYNC, SlotKind.QUERY):
                break
            self.slots.popleft()
            if slot.kind == SlotKind.PARSE and parse_stmt is None:
                parse_stmt = slot.stmt
            if slot.kind == SlotKind.EXECUTE and target is None and slot.txn is not None:
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

    def _complete(self, slot: _Slot, txn: Request) -> None:
        if slot.kind == SlotKind.EXECUTE:
            self._take_carry(txn)
        slot.index += 1
        if slot.kind == SlotKind.EXECUTE and self.slots and self.slots[0] is slot:
            self.slots.popleft()
        if self.copy_in is txn:
            self.copy_in = None
        if self.last_exec is txn:
            self.last_exec = None
        self._publish(txn)

    def _publish(self, txn: Request) -> None:
        self.open -= 1
        if txn.end_ns is None:
            txn.end_ns = self.resp_ts if self.resp_ts is not None else txn.ts_ns
        self.resp_ts = None
        if txn.ignored:
            return
        self.ctx.emit(transaction(self.ctx.conn, self.config, txn))


# The server messages that answer one client message: type letter -> the slot it closes.
_COMPLETES = {"1": SlotKind.PARSE, "2": SlotKind.BIND, "3": SlotKind.CLOSE, "n": SlotKind.DESCRIBE,
              "V": SlotKind.FUNCTION}


# How each client message of the extended protocol is followed, by its type letter (the others wait for nothing).
_FRONTEND: dict[str, Callable[[PgsqlSession, Frontend], None]] = {
    "P": PgsqlSession._parse, "B": PgsqlSession._bind, "D": PgsqlSession._describe, "C": PgsqlSession._close,
    "F": PgsqlSession._function,
}
# Server messages handled by type letter (the rest answer their slot: _COMPLETES).
_BACKEND: dict[str, Callable[[PgsqlSession, _Slot, Backend], None]] = {
    "C": PgsqlSession._command_end, "I": PgsqlSession._command_end, "s": PgsqlSession._command_end,
    "Z": PgsqlSession._ready, "G": PgsqlSession._copy_or_replication, "H": PgsqlSession._copy_or_replication,
    "W": PgsqlSession._copy_or_replication, "c": PgsqlSession._copy_done,
}


SPEC = ProtocolSpec(
    name="pgsql",
    config_class=PgsqlConfig,
    fields=FIELDS,
    tcp=PgsqlSession,
    description="PostgreSQL: simple and extended queries, COPY, errors and notices",
    counters=("unmatched_requests", "unmatched_responses", "parse_errors", "queue_overflow",
              "unexpected_messages", "notices_without_statement", "resync_skipped_bytes", "malformed_rows",
              "encryption_requests", "tls_hand_overs", "statements_expired", "statements_evicted",
              "statement_connections_evicted"),
)
