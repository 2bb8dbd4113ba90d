"""MySQL/MariaDB transactions: commands paired with their replies, prepared statements remembered.

Events follow Packetbeat: `method` (the first word of the SQL), `query`,
`path` (the tables of the result columns), `params` (bound parameters of
an execute), `mysql.{affected_rows, insert_id, num_fields, num_rows,
error_code, error_message}`, `request`/`response` on request.

Where pktbeat goes further (Packetbeat reports none of these): the SQL of
a prepared statement is the `query` of its COM_STMT_PREPARE event (method
PREPARE) and of every execute; parameters are decoded for every type;
binary result rows are decoded; compressed connections and several result
sets are read; with `all_commands: true` every other command (ping,
init_db, quit, statistics, stmt_close...) is an event whose method is the
command's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolSpec, SessionContext
from agent.protocols.errors import ParseError
from agent.protocols.mysql import values, wire
from agent.protocols.mysql.fields import FIELDS, Request, transaction
from agent.protocols.mysql.parser import (
    AuthResult,
    Command,
    Greeting,
    Login,
    Lost,
    Message,
    MysqlParser,
    Reply,
)
from agent.protocols.sql import SqlConfig
from agent.protocols.sql.statements import StatementStore, shared_store
from agent.protocols.sql.text import sql_method, sql_trim
from agent.protocols.stream import SessionBase, completed
from agent.transport.types import Direction

UNKNOWN_STATEMENT = "The actual query being used is unknown"
EXECUTE_UNKNOWN = "Request Execute Statement"
CLOSE_UNKNOWN = "Request Close Statement"
TRUNCATED_QUERY = "The query was truncated"

MAX_LONG_DATA_STATEMENTS = 64  # statements with COM_STMT_SEND_LONG_DATA values waiting for their execute
MAX_LONG_DATA_PARAMS = 256



@dataclass(frozen=True)
class MysqlConfig(SqlConfig):
    statement_timeout: float = opt(3600.0, kind="duration")
    # pktbeat: publish every command, not only queries, prepares and executes (Packetbeat's set).
    all_commands: bool = opt(False)


class _Statement:
    __slots__ = ("num_params", "sql", "types")

    def __init__(self, sql: str, num_params: int) -> None:
        self.sql = sql
        self.num_params = num_params
        self.types: tuple[tuple[int, bool], ...] | None = None


_QUERY_LIKE = frozenset({wire.COM_QUERY, wire.COM_STMT_PREPARE, wire.COM_STMT_EXECUTE})


class MysqlSession(SessionBase[MysqlConfig]):
    def __init__(self, ctx: SessionContext[MysqlConfig]) -> None:
        super().__init__(ctx)
        config = self.config
        self.parser = MysqlParser(max_rows=config.max_rows, max_row_length=config.max_row_length,
                                  keep_response=config.send_response, counters=ctx.counters)
        conn = ctx.conn
        self.conn_key = (conn.client.ip, conn.client.port, conn.server.ip, conn.server.port)
        self.store: StatementStore[Any] = shared_store(config, ctx.counters, int(config.statement_timeout * 1e9))
        self.open: dict[int, Request] = {}
        self.long_data: dict[int, dict[int, bytes]] = {}

    # -- StreamSession ---------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        messages, error = completed(lambda: self.parser.feed(direction, data, ts_ns))
        self._handle(messages)
        if error is not None:
            raise error

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self._handle(self.parser.gap(direction, nbytes, ts_ns).messages)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self.store.drop_connection(self.conn_key)  # statement ids die with the connection

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.parser.reset(direction)  # counted by the transport layer, as before

    def expire(self, ts_ns: int) -> None:
        if self.open:
            self.counters.inc("unmatched_requests", len(self.open))
            self.open.clear()

    def pending(self) -> int:
        return len(self.open)

    def buffered(self) -> int:
        return self.parser.buffered

    # -- messages ----------------------------------------------------------------------------------

    def _handle(self, out: list[Message]) -> None:
        for msg in out:
            if isinstance(msg, Reply):
                self._reply(msg)
            elif isinstance(msg, Command):
                self._command(msg)
            elif isinstance(msg, Lost):
                lost = [serial for serial in msg.serials if self.open.pop(serial, None) is not None]
                if lost:
                    self.counters.inc("unmatched_requests", len(lost))
            elif isinstance(msg, Greeting):
                self.store.drop_connection(self.conn_key)  # a new connection on this 4-tuple
            elif isinstance(msg, Login):
                if msg.tls:  # the SSL request: everything after it is TLS
                    self.counters.inc("tls_connections")
                    self.ctx.hand_over("tls", msg.ts_ns, to_server=self.parser.take_rest(Direction.TO_SERVER),
                                       to_client=self.parser.take_rest(Direction.TO_CLIENT))
                    break
                if msg.compression:
                    self.counters.inc("compressed_connections")
            elif isinstance(msg, AuthResult) and not msg.ok:
                self.counters.inc("failed_logins")

    def _command(self, cmd: Command) -> None:
        code = cmd.code
        config = self.config
        if code == wire.COM_STMT_SEND_LONG_DATA:
            self._long_data(cmd)
            return
        if code == wire.COM_STMT_CLOSE:
            stmt = self._statement(cmd.stmt_id, cmd.ts_ns)
            self.store.delete(self.conn_key, cmd.stmt_id)
            self.long_data.pop(cmd.stmt_id, None)
            if config.all_commands:
                query = stmt.sql if stmt is not None else CLOSE_UNKNOWN
                txn = Request(cmd, "STMT_CLOSE", query, query)
                if stmt is None:
                    txn.notes.append(UNKNOWN_STATEMENT)
                self._publish(txn, None)
            return
        if code not in _QUERY_LIKE and not config.all_commands:
            return
        if code in (wire.COM_QUERY, wire.COM_STMT_PREPARE):
            query = sql_trim(cmd.text)
            txn = Request(cmd, sql_method(query) if code == wire.COM_QUERY else "PREPARE", query, cmd.text)
            if cmd.truncated:
                txn.notes.append(TRUNCATED_QUERY)
        elif code == wire.COM_STMT_EXECUTE:
            txn = self._execute(cmd)
        else:
            txn = self._other(cmd)
        if not cmd.expects_reply:
            self._publish(txn, None)
            return
        self.open[cmd.serial] = txn

    def _statement(self, stmt_id: int, ts_ns: int) -> _Statement | None:
        found = self.store.get(self.conn_key, stmt_id, ts_ns)
        return found if isinstance(found, _Statement) else None

    def _execute(self, cmd: Command) -> Request:
        stmt = self._statement(cmd.stmt_id, cmd.ts_ns)
        if stmt is None:
            txn = Request(cmd, "EXECUTE", EXECUTE_UNKNOWN, "")
            txn.notes.append(UNKNOWN_STATEMENT)
            return txn
        query = sql_trim(stmt.sql)
        txn = Request(cmd, sql_method(query), query, stmt.sql)
        long_data = self.long_data.pop(cmd.stmt_id, None)
        params, types = values.execute_params(
            cmd.body, stmt.num_params, stmt.types, long_data,
            query_attributes=bool(self.parser.capabilities & wire.CLIENT_QUERY_ATTRIBUTES))
        stmt.types = types
        if params is None:
            self.counters.inc("undecoded_params")
        elif params:
            txn.params = params
        return txn

    def _long_data(self, cmd: Command) -> None:
        body = cmd.body
        if len(body) < 6:
            return
        param = int.from_bytes(body[4:6], "little")
        per_stmt = self.long_data.get(cmd.stmt_id)
        if per_stmt is None:
            if len(self.long_data) >= MAX_LONG_DATA_STATEMENTS:
                self.long_data.pop(next(iter(self.long_data)))
                self.counters.inc("long_data_dropped")
            per_stmt = self.long_data[cmd.stmt_id] = {}
        if param not in per_stmt and len(per_stmt) >= MAX_LONG_DATA_PARAMS:
            self.counters.inc("long_data_dropped")
            return
        limit = self.config.max_row_length
        kept = per_stmt.get(param, b"")
        if len(kept) < limit:
            per_stmt[param] = kept + body[6:6 + limit - len(kept)]

    def _other(self, cmd: Command) -> Request:
        name = wire.COMMAND_NAMES.get(cmd.code, f"COMMAND_{cmd.code:#04x}")
        if cmd.code in (wire.COM_STMT_RESET, wire.COM_STMT_FETCH, wire.COM_STMT_BULK_EXECUTE):
            stmt = self._statement(cmd.stmt_id, cmd.ts_ns)
            if cmd.code == wire.COM_STMT_RESET:
                self.long_data.pop(cmd.stmt_id, None)
            query = stmt.sql if stmt is not None else f"COM_{name} {cmd.stmt_id}"
            return Request(cmd, name, sql_trim(query), query)
        query = f"COM_{name} {cmd.text}" if cmd.text else f"COM_{name}"
        return Request(cmd, name, query, cmd.text)

    def _reply(self, reply: Reply) -> None:
        if reply.serial < 0:
            self.counters.inc("unmatched_responses")
            return
        txn = self.open.pop(reply.serial, None)
        if txn is None:
            return  # a command this configuration does not report
        if reply.command == wire.COM_STMT_PREPARE and not reply.error:
            stmt = _Statement(txn.request, reply.num_params)
            self.store.put(self.conn_key, reply.stmt_id, stmt, len(stmt.sql) + 64, reply.ts_ns)
            self.long_data.pop(reply.stmt_id, None)
        self._publish(txn, reply)

    def _publish(self, txn: Request, reply: Reply | None) -> None:
        self.ctx.emit(transaction(self.ctx.conn, self.config, txn, reply))


SPEC = ProtocolSpec(
    name="mysql",
    config_class=MysqlConfig,
    fields=FIELDS,
    tcp=MysqlSession,
    description="MySQL and MariaDB: queries, prepared statements, compressed connections",
    counters=("unmatched_requests", "unmatched_responses", "parse_errors", "queue_overflow", "pending_overflow",
              "resync_skipped_bytes", "unsolicited_packets", "unexpected_reply_packets", "binlog_bytes",
              "tls_connections", "compressed_connections", "compression_detected", "failed_logins",
              "undecoded_params", "long_data_dropped", "statements_expired", "statements_evicted",
              "statement_connections_evicted"),
)
