"""MySQL/MariaDB replies, read as the command they answer says: an explicit state machine per reply.

A reply starts in `ReplyState.FIRST` (or the state its command implies:
rows for COM_STMT_FETCH, a text for COM_STATISTICS ...).  Each server packet
goes to the handler of the current state (`Replies._handlers`), which may
move the reply to another state or finish it:

    FIRST ──OK/EOF/ERR──▶ finished (or FIRST again: more result sets)
      │──column count──▶ COLUMNS ──last definition──▶ AFTER_COLUMNS ──EOF──▶ ROWS
      │                            (CLIENT_DEPRECATE_EOF: straight to ROWS)
      │──prepare OK──▶ PREP_DEFS ──last definition group──▶ finished
      │──0xFB (LOCAL INFILE)──▶ INFILE ──OK/ERR──▶ finished
    ROWS ──EOF/OK terminator──▶ finished (or FIRST: more result sets)
    AUTH (COM_CHANGE_USER), STATS, FIELD_LIST ──their end──▶ finished

An ERR packet finishes a reply in any state but STATS.  Rows stream past:
only `max_rows` are decoded for the response text.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from agent.metrics import Counters
from agent.protocols.cursor import Cursor
from agent.protocols.errors import ShortRead
from agent.protocols.mysql import values, wire
from agent.protocols.mysql.framing import Packet
from agent.protocols.mysql.messages import Column, Command, Lost, Message, Reply
from agent.protocols.mysql.wire import lenenc, lenenc_bytes
from agent.protocols.sql.text import RowText, truncate_row

MAX_PENDING = 1024  # commands waiting for a reply
MAX_STATEMENT_COLUMNS = 256  # statements whose result columns are remembered (binary rows, cached metadata)
MAX_TABLES = 64  # distinct tables listed in `path`
MAX_RESULT_SETS = 1024

LOST_RESPONSE = "Packet loss while capturing the response"

_RESULT_KINDS = frozenset({wire.COM_QUERY, wire.COM_STMT_EXECUTE, wire.COM_PROCESS_INFO, wire.COM_STMT_BULK_EXECUTE})


class ReplyState(IntEnum):  # an IntEnum: the dispatch dict then hashes it as an int, in C
    FIRST = 0  # the first packet of a reply (or of the next result set)
    COLUMNS = 1  # column definitions
    AFTER_COLUMNS = 2  # an EOF separator may come (classic) or rows (CLIENT_DEPRECATE_EOF)
    ROWS = 3
    PREP_DEFS = 4  # a prepare reply's parameter and column definitions
    AUTH = 5  # COM_CHANGE_USER: until OK or ERR
    INFILE = 6  # LOCAL INFILE: the client sends the file, then OK or ERR
    STATS = 7
    FIELD_LIST = 8


# States in which a gap leaves the reply publishable (its result is known, only rows or definitions are lost).
_CUT_SHORT_STATES = frozenset({ReplyState.COLUMNS, ReplyState.AFTER_COLUMNS, ReplyState.ROWS,
                               ReplyState.FIELD_LIST})


@dataclass
class Pending:
    cmd: Command
    client_extra: int = 0


@dataclass
class _Reply:
    pending: Pending
    ts_ns: int
    binary: bool
    state: ReplyState = ReplyState.FIRST
    size: int = 0
    error: bool = False
    affected: int = 0
    insert_id: int = 0
    num_fields: int = -1
    num_rows: int = 0
    tables: list[str] = field(default_factory=list)
    text: RowText | None = None
    error_code: int = 0
    error_message: str = ""
    stmt_id: int = 0
    num_params: int = 0
    columns_left: int = 0
    columns: list[Column] = field(default_factory=list)
    result_sets: int = 0
    groups: list[tuple[bool, int]] = field(default_factory=list)  # (columns?, count) still to read
    in_columns: bool = False


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _is_terminator(first: int, length: int) -> bool:
    """EOF (classic) or an OK with the 0xfe header (CLIENT_DEPRECATE_EOF) ends rows.

    A row can begin with 0xfe only as an 8-byte length, i.e. a packet of at
    least 16 MiB, so the length tells them apart in both modes.
    """
    return first == 0xFE and length < wire.MAX_PACKET


class Replies:
    """The commands waiting for a reply, in order, and the reply being read."""

    # One handler per state, called with the instance (a class-level table: no bound methods per Replies).
    _HANDLERS: ClassVar[dict[ReplyState, Callable[[Replies, _Reply, Packet, int, list[Message]], None]]]

    def __init__(self, counters: Counters, max_rows: int, max_row_length: int, keep_response: bool) -> None:
        self.counters = counters
        self.max_rows = max_rows
        self.max_row_length = max_row_length
        self.keep_response = keep_response
        self.capabilities = 0
        self.deprecate_eof: bool | None = None
        self.pending: deque[Pending] = deque()
        self.reply: _Reply | None = None
        self.maybe_eof = False  # an EOF may trail a prepare reply (mode not known yet)
        self.stmt_columns: OrderedDict[int, list[Column]] = OrderedDict()
        self.last_prepared = 0
        self.dump_started = False  # a COM_BINLOG_DUMP was answered: the server now streams the binlog

    # -- commands ---------------------------------------------------------------------------------

    def expect(self, cmd: Command, out: list[Message]) -> None:
        """`cmd` waits for its reply (the oldest is dropped past MAX_PENDING)."""
        self.pending.append(Pending(cmd))
        if len(self.pending) > MAX_PENDING:
            old = self.pending.popleft()
            self.counters["pending_overflow"] += 1
            out.append(Lost((old.cmd.serial,)))

    # -- server packets -----------------------------------------------------------------------------

    def packet(self, pkt: Packet, out: list[Message]) -> None:
        """A server packet of the command phase: to the handler of its reply's state."""
        if self.maybe_eof:
            self.maybe_eof = False
            if pkt.payload[:1] == b"\xfe" and pkt.length == 5:
                self.deprecate_eof = False
                return
            self.deprecate_eof = True
        reply = self.reply
        if reply is None:
            if not self.pending:
                self._unsolicited(pkt, out)
                return
            reply = self.reply = self._new_reply(self.pending[0], pkt.ts_ns)
        payload = pkt.payload
        first = payload[0] if payload else -1
        reply.size += pkt.wire
        if first == 0xFF and reply.state != ReplyState.STATS:
            self._error(reply, pkt, out)
            return
        self._HANDLERS[reply.state](self, reply, pkt, first, out)

    def _unsolicited(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        if payload[:1] == b"\xff":
            code, message = error_fields(payload)
            out.append(Reply(-1, -1, pkt.ts_ns, pkt.wire, True, error_code=code, error_message=message))
        else:
            self.counters["unsolicited_packets"] += 1

    def _new_reply(self, pending: Pending, ts_ns: int) -> _Reply:
        code = pending.cmd.code
        reply = _Reply(pending, ts_ns, binary=code in (wire.COM_STMT_EXECUTE, wire.COM_STMT_FETCH,
                                                        wire.COM_STMT_BULK_EXECUTE))
        if self.keep_response and code in _RESULT_KINDS | {wire.COM_STMT_FETCH, wire.COM_FIELD_LIST}:
            reply.text = RowText(self.max_rows)
        if code == wire.COM_STMT_FETCH:
            reply.state = ReplyState.ROWS
            reply.columns = self.stmt_columns.get(pending.cmd.stmt_id, [])
        elif code == wire.COM_STATISTICS:
            reply.state = ReplyState.STATS
        elif code == wire.COM_FIELD_LIST:
            reply.state = ReplyState.FIELD_LIST
        elif code == wire.COM_CHANGE_USER:
            reply.state = ReplyState.AUTH
        return reply

    def _error(self, reply: _Reply, pkt: Packet, out: list[Message]) -> None:
        err_code, message = error_fields(pkt.payload)
        if err_code == 0xFFFF:  # MariaDB progress report, not an error
            reply.size -= pkt.wire
            return
        reply.error = True
        reply.error_code = err_code
        reply.error_message = message
        self.finish(out)

    # -- state handlers ------------------------------------------------------------------------------

    def _rows(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        payload = pkt.payload
        if _is_terminator(first, pkt.length):
            self._end_result_set(reply, _terminator_status(payload), out)
            return
        reply.num_rows += 1
        rows = reply.text
        if rows is not None and rows.wants_rows:
            if reply.binary:
                row = values.binary_row(payload, [(c.type, c.flags) for c in reply.columns])
            else:
                row = values.text_row(payload)
            rows.add_row(truncate_row(row, self.max_row_length, b"NULL"))

    def _first(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        payload = pkt.payload
        code = reply.pending.cmd.code
        if code == wire.COM_STMT_PREPARE and first == 0x00:
            self._prepare_ok(reply, payload, out)
        elif code in (wire.COM_BINLOG_DUMP, wire.COM_BINLOG_DUMP_GTID):
            self.finish(out)
            self.dump_started = True
        elif first == 0x00 or (first == 0xFE and pkt.length < 9):
            self._ok_or_eof(reply, pkt, first, out)
        elif first == 0xFB and code == wire.COM_QUERY:
            reply.state = ReplyState.INFILE
        elif code not in _RESULT_KINDS and code != wire.COM_STMT_PREPARE:
            self.counters["unexpected_reply_packets"] += 1
            self.finish(out)
        else:
            self._column_count(reply, payload)

    def _ok_or_eof(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        """A reply without a result set (or the end of one result set of several)."""
        payload = pkt.payload
        status = 0
        if first == 0x00:
            affected, insert_id, status = ok_fields(payload)
            reply.affected += affected
            if insert_id:
                reply.insert_id = insert_id
        elif pkt.length >= 5:
            status = payload[3] | payload[4] << 8
        if status & wire.SERVER_MORE_RESULTS_EXISTS and reply.pending.cmd.code in _RESULT_KINDS:
            reply.result_sets += 1
            if reply.result_sets < MAX_RESULT_SETS:
                return
        self.finish(out)

    def _columns(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        state = reply.state
        if _is_terminator(first, pkt.length):
            if state is ReplyState.FIELD_LIST:
                self.finish(out)
            else:  # fewer definitions than announced: take what came
                reply.state = ReplyState.ROWS
                self._columns_done(reply)
            return
        reply.columns.append(column_definition(pkt.payload, self.capabilities))
        if state is ReplyState.FIELD_LIST:
            return
        reply.columns_left -= 1
        if reply.columns_left <= 0:
            self._columns_done(reply)
            reply.state = ReplyState.ROWS if self.deprecate_eof else ReplyState.AFTER_COLUMNS

    def _after_columns(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        if first == 0xFE and pkt.length == 5:
            if self.deprecate_eof is None:
                self.deprecate_eof = False
            status = pkt.payload[3] | pkt.payload[4] << 8
            if status & wire.SERVER_STATUS_CURSOR_EXISTS and reply.pending.cmd.code == wire.COM_STMT_EXECUTE:
                self.finish(out)  # rows come with COM_STMT_FETCH
                return
            reply.state = ReplyState.ROWS
            return
        if self.deprecate_eof is None:
            self.deprecate_eof = True
        reply.state = ReplyState.ROWS
        reply.size -= pkt.wire
        self.packet(pkt, out)

    def _statistics(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        if self.keep_response:
            reply.text = RowText(0)
            reply.text.parts.append(text(pkt.payload))
        self.finish(out)

    def _ok_ends(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        """AUTH and INFILE: packets go by until the OK (an ERR was handled before)."""
        if first == 0x00:
            affected, insert_id, _ = ok_fields(pkt.payload)
            reply.affected += affected
            reply.insert_id = insert_id or reply.insert_id
            self.finish(out)

    # -- result sets ----------------------------------------------------------------------------------

    def _column_count(self, reply: _Reply, payload: bytes) -> None:
        reader = Cursor(payload, 0, -1, "mysql")
        if self.capabilities & wire.CLIENT_OPTIONAL_RESULTSET_METADATA:
            metadata = reader.u8()
            count = lenenc(reader) or 0
        else:
            count = lenenc(reader) or 0
            metadata = reader.u8() if self.capabilities & wire.MARIADB_CLIENT_CACHE_METADATA and reader.remaining() \
                else 1
        if reply.num_fields < 0:
            reply.num_fields = count
        reply.columns = []
        if not metadata:
            cached = self.stmt_columns.get(reply.pending.cmd.stmt_id, [])
            reply.columns = list(cached)
            self._columns_done(reply)
            reply.state = ReplyState.AFTER_COLUMNS if not self.deprecate_eof else ReplyState.ROWS
            return
        reply.columns_left = count
        reply.state = ReplyState.COLUMNS if count else ReplyState.AFTER_COLUMNS

    def _add_tables(self, reply: _Reply) -> None:
        for column in reply.columns:
            table = column.org_table or column.table
            if not table:
                continue
            name = f"{column.schema}.{table}" if column.schema else table
            if name not in reply.tables and len(reply.tables) < MAX_TABLES:
                reply.tables.append(name)

    def _columns_done(self, reply: _Reply) -> None:
        self._add_tables(reply)
        if reply.text is not None:
            reply.text.header([c.name for c in reply.columns])
        cmd = reply.pending.cmd
        if reply.binary and cmd.code == wire.COM_STMT_EXECUTE and reply.columns:
            self._remember_columns(cmd.stmt_id, reply.columns)

    def _remember_columns(self, stmt_id: int, columns: list[Column]) -> None:
        self.stmt_columns[stmt_id] = list(columns)
        self.stmt_columns.move_to_end(stmt_id)
        while len(self.stmt_columns) > MAX_STATEMENT_COLUMNS:
            self.stmt_columns.popitem(last=False)

    def _end_result_set(self, reply: _Reply, status: int, out: list[Message]) -> None:
        if status & wire.SERVER_MORE_RESULTS_EXISTS:
            reply.result_sets += 1
            if reply.result_sets < MAX_RESULT_SETS:
                reply.state = ReplyState.FIRST
                return
        self.finish(out)

    # -- prepared statements --------------------------------------------------------------------------

    def _prepare_ok(self, reply: _Reply, payload: bytes, out: list[Message]) -> None:
        reader = Cursor(payload, 1, -1, "mysql")
        reply.stmt_id = reader.u32le()
        columns = reader.u16le()
        params = reader.u16le()
        reply.num_params = params
        reply.num_fields = columns
        self.last_prepared = reply.stmt_id
        reply.columns = []
        reply.groups = [(False, params), (True, columns)]
        reply.state = ReplyState.PREP_DEFS
        self._prepare_advance(reply, out)

    def _prepare_advance(self, reply: _Reply, out: list[Message]) -> None:
        """Start the next group of definitions, or finish the reply after the last."""
        while reply.groups:
            in_columns, count = reply.groups.pop(0)
            if count:
                reply.in_columns = in_columns
                reply.columns_left = count
                return
        self._add_tables(reply)
        if reply.columns:
            self._remember_columns(reply.stmt_id, reply.columns)
        self.finish(out)

    def _prepare_packet(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        if first == 0xFE and pkt.length == 5:  # the classic EOF closing a group
            self.deprecate_eof = False
            reply.columns_left = 0
            self._prepare_advance(reply, out)
            return
        if reply.columns_left <= 0:  # a definition where an EOF could have been: no EOFs here
            self.deprecate_eof = True
            self._prepare_advance(reply, out)
            if self.reply is not reply:
                self.counters["unexpected_reply_packets"] += 1
                return
        column = column_definition(pkt.payload, self.capabilities)
        if reply.in_columns:
            reply.columns.append(column)
        reply.columns_left -= 1
        if reply.columns_left > 0:
            return
        if self.deprecate_eof:
            self._prepare_advance(reply, out)
        elif self.deprecate_eof is None and not any(count for _, count in reply.groups):
            self.maybe_eof = True  # the last group: finish now, swallow an EOF if one follows
            self._prepare_advance(reply, out)
        # otherwise the EOF (or, when the mode is unknown, the next definition) comes next

    # -- ends -------------------------------------------------------------------------------------------

    def finish(self, out: list[Message], notes: tuple[str, ...] = ()) -> None:
        reply = self.reply
        if reply is None:
            return
        self.reply = None
        if self.pending and self.pending[0] is reply.pending:
            self.pending.popleft()
        cmd = reply.pending.cmd
        out.append(Reply(
            cmd.serial, cmd.code, reply.ts_ns, reply.size, reply.error,
            affected_rows=reply.affected, insert_id=reply.insert_id, num_fields=max(reply.num_fields, 0),
            num_rows=reply.num_rows, tables=tuple(reply.tables),
            response=reply.text.text() if reply.text is not None else "",
            error_code=reply.error_code, error_message=reply.error_message, stmt_id=reply.stmt_id,
            num_params=reply.num_params, client_extra=reply.pending.client_extra, notes=notes))

    def lose(self, out: list[Message], gap: bool) -> None:
        """The server side lost sync: a reply cut by a gap after its result was known is published, with a
        note; every command still waiting is lost."""
        reply = self.reply
        if reply is not None and gap and reply.state in _CUT_SHORT_STATES:
            self.finish(out, (LOST_RESPONSE,))
        self.reply = None
        if self.pending:
            lost = tuple(p.cmd.serial for p in self.pending)
            self.pending.clear()
            out.append(Lost(lost))


# -- packet bodies -----------------------------------------------------------------------------------


def error_fields(payload: bytes) -> tuple[int, str]:
    """(code, "SQLSTATE: message") of an ERR packet."""
    if len(payload) < 3:
        return 0, ""
    code = payload[1] | payload[2] << 8
    if len(payload) >= 9 and payload[3:4] == b"#":
        return code, f"{text(payload[4:9])}: {text(payload[9:])}"
    return code, text(payload[3:])


def ok_fields(payload: bytes) -> tuple[int, int, int]:
    """(affected rows, last insert id, status flags) of an OK packet."""
    reader = Cursor(payload, 1, -1, "mysql")
    try:
        affected = lenenc(reader) or 0
        insert_id = lenenc(reader) or 0
        status = reader.u16le() if reader.remaining() >= 2 else 0
    except ShortRead:
        return 0, 0, 0
    return affected, insert_id, status


def _terminator_status(payload: bytes) -> int:
    if len(payload) == 5:  # classic EOF: 0xfe, warnings, status
        return payload[3] | payload[4] << 8
    return ok_fields(payload)[2]


def column_definition(payload: bytes, capabilities: int) -> Column:
    """A column definition (protocol 4.1); an invalid one gives an empty column, not an error."""
    reader = Cursor(payload, 0, -1, "mysql")
    try:
        lenenc_bytes(reader)  # catalog
        schema = lenenc_bytes(reader) or b""
        table = lenenc_bytes(reader) or b""
        org_table = lenenc_bytes(reader) or b""
        name = lenenc_bytes(reader) or b""
    except ShortRead:
        return Column("", "", "", "", wire.T_VAR_STRING, 0)
    typ, flags = wire.T_VAR_STRING, 0
    try:
        lenenc_bytes(reader)  # original name
        if capabilities & wire.MARIADB_CLIENT_EXTENDED_TYPE_INFO:
            lenenc_bytes(reader)
        lenenc(reader)  # length of the fixed fields (0x0c)
        reader.skip(2 + 4)  # character set, column length
        typ = reader.u8()
        flags = reader.u16le()
    except ShortRead:
        pass
    return Column(text(schema), text(table), text(org_table), text(name), typ, flags)


Replies._HANDLERS = {
    ReplyState.FIRST: Replies._first,
    ReplyState.COLUMNS: Replies._columns,
    ReplyState.FIELD_LIST: Replies._columns,
    ReplyState.AFTER_COLUMNS: Replies._after_columns,
    ReplyState.ROWS: Replies._rows,
    ReplyState.PREP_DEFS: Replies._prepare_packet,
    ReplyState.STATS: Replies._statistics,
    ReplyState.AUTH: Replies._ok_ends,
    ReplyState.INFILE: Replies._ok_ends,
}
