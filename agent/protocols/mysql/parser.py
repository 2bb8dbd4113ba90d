"""MySQL/MariaDB client/server protocol, sans-IO: both directions of one connection in, typed messages out.

A reply cannot be read without knowing the command it answers (a prepare
reply, a text or binary result set, a statistics string...), so one parser
follows both directions: it keeps the commands waiting for a reply, in
order, and reads each reply as its command says.

What it follows:
- the connection phase when it is seen: greeting, login (capabilities,
  user, schema), the authentication exchange, a TLS upgrade (after which the
  connection is left alone), and compression (zlib or zstd), which starts
  after the server's OK to the login;
- a connection seen mid-stream: the client side is taken when a segment
  starts with a plausible command, the server side once a command was seen;
  compression is recognised from the frame headers;
- the command phase: every command; replies as OK, ERR, EOF, result sets
  (text and binary rows, several result sets, CLIENT_DEPRECATE_EOF or not,
  learnt from the first result when the login was not seen), prepare
  replies, LOCAL INFILE, statistics, cursors (COM_STMT_FETCH) and binlog
  streams (skipped).

Rows stream past: only `max_rows` rows are decoded (for the response text),
the others are counted from their first byte.  Every logical packet keeps
at most `MAX_KEPT` bytes; every buffer is bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from agent.protocols.mysql import values, wire
from agent.protocols.mysql.framing import FrameError, Framer, Inflater, Packet
from agent.protocols.mysql.wire import Reader, Short
from agent.protocols.sql.text import RowText, truncate_row
from agent.transport.session import ParseError
from agent.transport.types import Direction

PROTOCOL = "mysql"

MAX_KEPT = 1 << 20  # payload bytes kept of one logical packet (a longer query is truncated)
MAX_PENDING = 1024  # commands waiting for a reply
MAX_STATEMENT_COLUMNS = 256  # statements whose result columns are remembered (binary rows, cached metadata)
MAX_TABLES = 64  # distinct tables listed in `path`
MAX_RESULT_SETS = 1024
PROBE_MAX = 128  # bytes held while deciding whether a stream picked up mid-way starts at a boundary

LOST_RESPONSE = "Packet loss while capturing the response"

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    ts_ns: int
    server_version: str
    connection_id: int
    capabilities: int


@dataclass(frozen=True, slots=True)
class Login:
    ts_ns: int
    user: str
    database: str
    capabilities: int
    tls: bool
    compression: str  # "", "zlib" or "zstd"


@dataclass(frozen=True, slots=True)
class AuthResult:
    ts_ns: int
    ok: bool
    error_code: int = 0
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    serial: int
    ts_ns: int
    code: int
    size: int  # wire bytes (uncompressed packet headers included)
    text: str  # SQL of COM_QUERY / COM_STMT_PREPARE, schema of COM_INIT_DB, table of COM_FIELD_LIST...
    stmt_id: int  # COM_STMT_EXECUTE / CLOSE / RESET / FETCH / SEND_LONG_DATA
    body: bytes  # payload after the command byte (kept prefix)
    truncated: bool
    expects_reply: bool


@dataclass(frozen=True, slots=True)
class Column:
    schema: str
    table: str
    org_table: str
    name: str
    type: int
    flags: int


@dataclass(frozen=True, slots=True)
class Reply:
    serial: int  # the Command it answers; -1 for a server packet nobody asked for
    command: int
    ts_ns: int  # the first packet of the reply
    size: int
    error: bool
    affected_rows: int = 0
    insert_id: int = 0
    num_fields: int = 0
    num_rows: int = 0
    tables: tuple[str, ...] = ()
    response: str = ""  # CSV rows (or the statistics text); "" unless asked for
    error_code: int = 0
    error_message: str = ""  # "SQLSTATE: message"
    stmt_id: int = 0
    num_params: int = 0
    client_extra: int = 0  # client bytes that belong to the command (LOCAL INFILE data, auth exchange)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lost:
    """Commands whose replies cannot be read any more (gap, desynchronisation, overflow)."""

    serials: tuple[int, ...]


Message = Greeting | Login | AuthResult | Command | Reply | Lost


# -- reply reading state ------------------------------------------------------------------------

_FIRST = 0  # the first packet of a reply (or of the next result set)
_COLUMNS = 1  # column definitions
_AFTER_COLUMNS = 2  # an EOF separator may come (classic) or rows (CLIENT_DEPRECATE_EOF)
_ROWS = 3
_PREP_DEFS = 4  # a prepare reply's parameter and column definitions
_AUTH = 6  # COM_CHANGE_USER: until OK or ERR
_INFILE = 7  # LOCAL INFILE: the client sends the file, then OK or ERR
_STATS = 8
_FIELD_LIST = 9

_RESULT_KINDS = frozenset({wire.COM_QUERY, wire.COM_STMT_EXECUTE, wire.COM_PROCESS_INFO, wire.COM_STMT_BULK_EXECUTE})


@dataclass
class _Pending:
    cmd: Command
    client_extra: int = 0


@dataclass
class _Reply:
    pending: _Pending
    ts_ns: int
    binary: bool
    state: int = _FIRST
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


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _is_terminator(first: int, length: int) -> bool:
    """EOF (classic) or an OK with the 0xfe header (CLIENT_DEPRECATE_EOF) ends rows.

    A row can begin with 0xfe only as an 8-byte length, i.e. a packet of at
    least 16 MiB, so the length tells them apart in both modes.
    """
    return first == 0xFE and length < wire.MAX_PACKET


class MysqlParser:
    """Both directions of one MySQL connection; `feed` returns what became complete."""

    def __init__(self, *, max_rows: int = 10, max_row_length: int = 1024, keep_response: bool = False) -> None:
        self.max_rows = max_rows
        self.max_row_length = max_row_length
        self.keep_response = keep_response
        self._framers = (Framer(), Framer())
        self._inflaters: list[Inflater | None] = [None, None]
        self.compression = ""
        self.phase = "start"  # start, login, auth, command, tls, dump
        self.capabilities = 0
        self.server_capabilities = 0
        self.deprecate_eof: bool | None = None
        self._pending: deque[_Pending] = deque()
        self._reply: _Reply | None = None
        self._serial = 0
        # Both sides start by probing: the client side for a login or a command at a segment start, the
        # server side for a greeting, or (mid-stream) for a reply after a command was seen.
        self._hunting = [True, True]
        self._probe_held = [b"", b""]  # bytes too few to judge a boundary yet
        self._resync_server = False
        self._maybe_eof = False  # an EOF may trail a prepare reply (mode not known yet)
        self._stmt_columns: OrderedDict[int, list[Column]] = OrderedDict()
        self._last_prepared = 0
        self.counters: dict[str, int] = {}

    # -- public ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held for packets not yet complete, both directions."""
        return sum(f.buffered for f in self._framers) + sum(i.buffered for i in self._inflaters if i is not None)

    def pending(self) -> int:
        return len(self._pending)

    def feed(self, direction: Direction, data: bytes, ts_ns: int, out: list[Message]) -> None:
        """Parse `data`; complete messages are appended to `out` (also when ParseError is raised)."""
        if not data or (self.phase in ("tls", "dump") and direction == S2C):
            if data and self.phase == "dump":
                self._count("binlog_bytes", len(data))
            return
        if self.phase == "tls":
            return
        side = int(direction)
        framer = self._framers[side]
        if self._hunting[side]:
            held = self._probe_held[side]
            if held:
                data = held + data
            verdict = self._probe(direction, data)
            if verdict is None and len(data) < PROBE_MAX:
                self._probe_held[side] = data
                return
            self._probe_held[side] = b""
            if not verdict:
                self._count("resync_skipped_bytes", len(data))
                return
        pushed = False
        try:
            while self.phase != "tls":
                inflater = self._inflaters[side]
                if inflater is None:
                    if pushed:
                        break
                    framer.push(data, ts_ns)
                    pushed = True
                    self._drain(direction, out)
                    continue  # compression may have started: the rest of the buffer moved to the inflater
                if not pushed:
                    inflater.push(data)
                    pushed = True
                chunk = inflater.pull()
                if not chunk:
                    break
                framer.push(chunk, ts_ns)
                self._drain(direction, out)
        except FrameError as exc:
            self._lose_side(direction, out)
            raise ParseError(PROTOCOL, direction, 0, str(exc)) from None
        except Short:
            self._lose_side(direction, out)
            raise ParseError(PROTOCOL, direction, 0, "packet shorter than its fields") from None

    def gap(self, direction: Direction, nbytes: int, ts_ns: int, out: list[Message]) -> None:
        if self.phase == "tls":
            return
        if direction == S2C and self.phase == "dump":
            return
        self._lose_side(direction, out, gap=True)

    def take_rest(self, direction: Direction) -> bytes:
        """The bytes of `direction` buffered and not parsed (after the SSL request: the start of TLS)."""
        framer = self._framers[int(direction)]
        rest = framer.peek()
        framer.reset()
        return rest

    def recover(self, direction: Direction) -> None:
        """After a ParseError: this side's state was dropped already; wait for a clean boundary."""
        self._hunting[int(direction)] = True

    # -- framing ------------------------------------------------------------------------------

    def _drain(self, direction: Direction, out: list[Message]) -> None:
        framer = self._framers[int(direction)]
        if direction == C2S:
            keep = self._client_keep
            handle = self._client_packet
        else:
            keep = self._server_keep
            handle = self._server_packet
        while True:
            pkt = framer.next(keep)
            if pkt is None:
                return
            handle(pkt, out)
            if self.phase == "tls":
                return

    def _client_keep(self, first: int, length: int) -> int:
        if first == wire.COM_STMT_SEND_LONG_DATA:
            return min(MAX_KEPT, 7 + self.max_row_length)
        return MAX_KEPT

    def _server_keep(self, first: int, length: int) -> int:
        reply = self._reply
        if reply is not None and reply.state == _ROWS and first not in (0xFE, 0xFF):
            if reply.text is not None and reply.text.wants_rows:
                return min(MAX_KEPT, 2 * self.max_row_length + 16 * len(reply.columns) + 64)
            return 1
        return MAX_KEPT

    # -- probing (mid-stream, resynchronisation) ------------------------------------------------

    def _probe(self, direction: Direction, data: bytes) -> bool | None:
        """Whether `data` starts at a packet boundary we can trust (None: too few bytes to tell yet)."""
        side = int(direction)
        if direction == S2C:
            if self.phase == "start":
                verdict = _looks_like_greeting(data)
            elif self.phase in ("login", "auth"):
                verdict = None if len(data) < 5 else (data[0] | data[1] << 8 | data[2] << 16) > 0
            elif not self._resync_server:
                return False
            elif self._inflaters[side] is not None:
                verdict = _plausible_compressed(data, 1)
            else:
                verdict = _plausible_plain(data, server=True)
            if verdict:
                self._hunting[side] = False
                if self.phase not in ("start", "login", "auth"):
                    self._resync_server = False
                self._framers[side].reset()
            return verdict
        if self.phase == "start":
            login = _plausible_login(data)
            if login is None:
                return None
            if login:
                self.phase = "login"
                self._hunting[side] = False
                return True
        compressed = self._inflaters[side] is not None
        verdict = _plausible_compressed(data, 0) if compressed else _plausible_plain(data, server=False)
        if verdict is None:
            return None
        if not verdict:
            if compressed or self.phase not in ("start", "command"):
                return False
            detected = _plausible_compressed(data, 0)
            if not detected:
                return detected
            self._start_compression("zstd" if data[7:11] == b"\x28\xb5\x2f\xfd" else "zlib")
            self._count("compression_detected")
        if self.phase == "start":
            self.phase = "command"
        self._hunting[side] = False
        self._framers[side].reset()
        inflater = self._inflaters[side]
        if inflater is not None:
            inflater.reset()
        return True

    def _start_compression(self, kind: str) -> None:
        """From here on both directions are compressed; bytes already buffered move to the inflaters."""
        self.compression = kind
        inflaters = [Inflater(zstd=kind == "zstd"), Inflater(zstd=kind == "zstd")]
        self._inflaters = list(inflaters)
        for framer, inflater in zip(self._framers, inflaters, strict=True):
            rest = framer.peek()
            framer.reset()
            if rest:
                inflater.push(rest)

    # -- client packets -----------------------------------------------------------------------

    def _client_packet(self, pkt: Packet, out: list[Message]) -> None:
        phase = self.phase
        if phase in ("command", "start"):
            if pkt.seq != 0 or not pkt.payload:
                if self._pending:  # LOCAL INFILE data, authentication of COM_CHANGE_USER
                    self._pending[-1].client_extra += pkt.wire
                return
            self.phase = "command"
            self._command(pkt, out)
            return
        if pkt.seq == 0 and pkt.payload and pkt.payload[0] in wire.COMMAND_NAMES:
            self.phase = "command"  # the end of the authentication was not seen
            self._command(pkt, out)
            return
        if phase == "login":
            self._login(pkt, out)
        # auth phase: the client's authentication data is not reported

    def _login(self, pkt: Packet, out: list[Message]) -> None:
        reader = Reader(pkt.payload)
        try:
            caps = reader.u32()
            if not caps & wire.CLIENT_PROTOCOL_41:
                self.phase = "auth"
                return
            reader.skip(4 + 1)  # max packet size, character set
            filler = reader.take(23)
            if not self.server_capabilities & wire.CLIENT_MYSQL:
                caps |= int.from_bytes(filler[19:23], "little") << 32
            if pkt.length == 32 and caps & wire.CLIENT_SSL:
                self.capabilities = caps
                self.phase = "tls"
                out.append(Login(pkt.ts_ns, "", "", caps, True, ""))
                return
            user = _text(reader.cstring())
            if caps & wire.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
                reader.lenenc_bytes()
            elif caps & wire.CLIENT_SECURE_CONNECTION:
                reader.take(reader.u8())
            else:
                reader.cstring()
            database = _text(reader.cstring()) if caps & wire.CLIENT_CONNECT_WITH_DB and reader.remaining else ""
        except Short:
            user = database = ""
            caps = self.capabilities or 0
        if self.server_capabilities:
            caps &= self.server_capabilities | (0xFFFFFFFF << 32)
        self.capabilities = caps
        self.deprecate_eof = bool(caps & wire.CLIENT_DEPRECATE_EOF)
        compression = ""
        if caps & wire.CLIENT_COMPRESS:
            compression = "zlib"
        elif caps & wire.CLIENT_ZSTD_COMPRESSION_ALGORITHM:
            compression = "zstd"
        self.compression = compression
        self.phase = "auth"
        out.append(Login(pkt.ts_ns, user, database, caps, False, compression))

    def _command(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        code = payload[0]
        body = payload[1:]
        text = ""
        stmt_id = 0
        if code == wire.COM_QUERY:
            text = _text(self._query_text(body))
        elif code in (wire.COM_STMT_PREPARE, wire.COM_INIT_DB, wire.COM_CREATE_DB, wire.COM_DROP_DB):
            text = _text(body)
        elif code == wire.COM_FIELD_LIST:
            text = _text(body.split(b"\0", 1)[0])
        elif code in (wire.COM_STMT_EXECUTE, wire.COM_STMT_CLOSE, wire.COM_STMT_RESET, wire.COM_STMT_FETCH,
                      wire.COM_STMT_SEND_LONG_DATA, wire.COM_STMT_BULK_EXECUTE):
            if len(body) >= 4:
                stmt_id = int.from_bytes(body[:4], "little")
                if stmt_id == 0xFFFFFFFF:  # MariaDB: the statement prepared just before (pipelined)
                    stmt_id = self._last_prepared
        elif code == wire.COM_PROCESS_KILL and len(body) >= 4:
            text = str(int.from_bytes(body[:4], "little"))
        expects = code not in wire.NO_REPLY
        self._serial += 1
        cmd = Command(self._serial, pkt.ts_ns, code, pkt.wire, text, stmt_id, body, pkt.truncated, expects)
        out.append(cmd)
        if code == wire.COM_STMT_CLOSE:
            self._stmt_columns.pop(stmt_id, None)
        if expects:
            self._pending.append(_Pending(cmd))
            if len(self._pending) > MAX_PENDING:
                old = self._pending.popleft()
                self._count("pending_overflow")
                out.append(Lost((old.cmd.serial,)))
        if self._hunting[1] and not self._resync_server:
            self._resync_server = True
            self._probe_held[1] = b""  # what was held belongs to an older reply: the next one starts afresh

    def _query_text(self, body: bytes) -> bytes:
        if not self.capabilities & wire.CLIENT_QUERY_ATTRIBUTES:
            return body
        reader = Reader(body)
        try:
            count = reader.lenenc() or 0
            reader.lenenc()  # parameter set count (always 1)
            if count:
                reader.skip((count + 7) // 8)
                if reader.u8() == 1:
                    types = []
                    for _ in range(count):
                        typ = reader.u8()
                        flag = reader.u8()
                        reader.lenenc_bytes()
                        types.append((typ, flag))
                    for typ, flag in types:
                        values.read_value(reader, typ, bool(flag & 0x80))
            return reader.rest()
        except Short:
            return body

    # -- server packets -----------------------------------------------------------------------------

    def _server_packet(self, pkt: Packet, out: list[Message]) -> None:
        phase = self.phase
        if phase == "start":
            self._greeting(pkt, out)
            return
        if phase in ("login", "auth"):
            self._auth_packet(pkt, out)
            return
        if self._maybe_eof:
            self._maybe_eof = False
            if pkt.payload[:1] == b"\xfe" and pkt.length == 5:
                self.deprecate_eof = False
                return
            self.deprecate_eof = True
        reply = self._reply
        if reply is None:
            if not self._pending:
                self._unsolicited(pkt, out)
                return
            pending = self._pending[0]
            reply = self._reply = self._new_reply(pending, pkt.ts_ns)
        self._reply_packet(reply, pkt, out)

    def _greeting(self, pkt: Packet, out: list[Message]) -> None:
        reader = Reader(pkt.payload)
        try:
            if reader.u8() != 10:
                raise Short
            version = _text(reader.cstring())
            conn_id = reader.u32()
            reader.skip(8 + 1)
            caps = reader.u16()
            if reader.remaining:
                reader.skip(1 + 2)  # character set, status
                caps |= reader.u16() << 16
                reader.skip(1 + 6)  # auth data length, reserved
                if not caps & wire.CLIENT_MYSQL:
                    caps |= reader.u32() << 32  # MariaDB extended capabilities
        except Short:
            self.phase = "command"
            self._hunting[1] = True
            return
        self.server_capabilities = caps
        self.phase = "login"
        self._hunting[0] = False  # the connection is seen from its start: the client side is on a boundary
        out.append(Greeting(pkt.ts_ns, version, conn_id, caps))

    def _auth_packet(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        if not payload:
            return
        first = payload[0]
        if first == 0x00 and self.phase == "auth":
            self.phase = "command"
            out.append(AuthResult(pkt.ts_ns, True))
            if self.compression:
                self._start_compression(self.compression)
            return
        if first == 0xFF:
            code, message = _error(payload)
            out.append(AuthResult(pkt.ts_ns, False, code, message))
            self.phase = "command"  # the server closes the connection; nothing else is expected

    def _unsolicited(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        if payload[:1] == b"\xff":
            code, message = _error(payload)
            out.append(Reply(-1, -1, pkt.ts_ns, pkt.wire, True, error_code=code, error_message=message))
        else:
            self._count("unsolicited_packets")

    def _new_reply(self, pending: _Pending, ts_ns: int) -> _Reply:
        code = pending.cmd.code
        reply = _Reply(pending, ts_ns, binary=code in (wire.COM_STMT_EXECUTE, wire.COM_STMT_FETCH,
                                                        wire.COM_STMT_BULK_EXECUTE))
        if self.keep_response and code in _RESULT_KINDS | {wire.COM_STMT_FETCH, wire.COM_FIELD_LIST}:
            reply.text = RowText(self.max_rows)
        if code == wire.COM_STMT_FETCH:
            reply.state = _ROWS
            reply.columns = self._stmt_columns.get(pending.cmd.stmt_id, [])
        elif code == wire.COM_STATISTICS:
            reply.state = _STATS
        elif code == wire.COM_FIELD_LIST:
            reply.state = _FIELD_LIST
        elif code == wire.COM_CHANGE_USER:
            reply.state = _AUTH
        return reply

    def _reply_packet(self, reply: _Reply, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        first = payload[0] if payload else -1
        reply.size += pkt.wire
        state = reply.state
        code = reply.pending.cmd.code
        if first == 0xFF and state not in (_STATS,):
            err_code, message = _error(payload)
            if err_code == 0xFFFF:  # MariaDB progress report, not an error
                reply.size -= pkt.wire
                return
            reply.error = True
            reply.error_code = err_code
            reply.error_message = message
            self._finish(out)
            return
        if state == _ROWS:
            if _is_terminator(first, pkt.length):
                status = _terminator_status(payload)
                self._end_result_set(reply, status, out)
                return
            reply.num_rows += 1
            text = reply.text
            if text is not None and text.wants_rows:
                if reply.binary:
                    row = values.binary_row(payload, [(c.type, c.flags) for c in reply.columns])
                else:
                    row = values.text_row(payload)
                text.add_row(truncate_row(row, self.max_row_length, b"NULL"))
            return
        if state == _FIRST:
            if code == wire.COM_STMT_PREPARE and first == 0x00:
                self._prepare_ok(reply, payload, out)
                return
            if code in (wire.COM_BINLOG_DUMP, wire.COM_BINLOG_DUMP_GTID):
                self._finish(out)
                self.phase = "dump"
                return
            if first == 0x00 or (first == 0xFE and pkt.length < 9):
                status = 0
                if first == 0x00:
                    affected, insert_id, status = _ok(payload)
                    reply.affected += affected
                    if insert_id:
                        reply.insert_id = insert_id
                elif pkt.length >= 5:
                    status = payload[3] | payload[4] << 8
                if status & wire.SERVER_MORE_RESULTS_EXISTS and code in _RESULT_KINDS:
                    reply.result_sets += 1
                    if reply.result_sets < MAX_RESULT_SETS:
                        return
                self._finish(out)
                return
            if first == 0xFB and code == wire.COM_QUERY:
                reply.state = _INFILE
                return
            if code not in _RESULT_KINDS and code != wire.COM_STMT_PREPARE:
                self._count("unexpected_reply_packets")
                self._finish(out)
                return
            self._column_count(reply, payload)
            return
        if state in (_COLUMNS, _FIELD_LIST):
            if _is_terminator(first, pkt.length):
                if state == _FIELD_LIST:
                    self._finish(out)
                else:  # fewer definitions than announced: take what came
                    reply.state = _ROWS
                    self._columns_done(reply)
                return
            reply.columns.append(_column(payload, self.capabilities))
            if state == _FIELD_LIST:
                return
            reply.columns_left -= 1
            if reply.columns_left <= 0:
                self._columns_done(reply)
                if self.deprecate_eof:
                    reply.state = _ROWS
                else:
                    reply.state = _AFTER_COLUMNS
            return
        if state == _AFTER_COLUMNS:
            if first == 0xFE and pkt.length == 5:
                if self.deprecate_eof is None:
                    self.deprecate_eof = False
                status = payload[3] | payload[4] << 8
                if status & wire.SERVER_STATUS_CURSOR_EXISTS and code == wire.COM_STMT_EXECUTE:
                    self._finish(out)  # rows come with COM_STMT_FETCH
                    return
                reply.state = _ROWS
                return
            if self.deprecate_eof is None:
                self.deprecate_eof = True
            reply.state = _ROWS
            reply.size -= pkt.wire
            self._reply_packet(reply, pkt, out)
            return
        if state == _PREP_DEFS:
            self._prepare_packet(reply, pkt, first, out)
            return
        if state == _STATS:
            if self.keep_response:
                reply.text = RowText(0)
                reply.text.parts.append(_text(payload))
            self._finish(out)
            return
        if state in (_AUTH, _INFILE):
            if first == 0x00:
                affected, insert_id, _ = _ok(payload)
                reply.affected += affected
                reply.insert_id = insert_id or reply.insert_id
                self._finish(out)
            return
        self._finish(out)

    def _column_count(self, reply: _Reply, payload: bytes) -> None:
        reader = Reader(payload)
        if self.capabilities & wire.CLIENT_OPTIONAL_RESULTSET_METADATA:
            metadata = reader.u8()
            count = reader.lenenc() or 0
        else:
            count = reader.lenenc() or 0
            metadata = reader.u8() if self.capabilities & wire.MARIADB_CLIENT_CACHE_METADATA and reader.remaining \
                else 1
        if reply.num_fields < 0:
            reply.num_fields = count
        reply.columns = []
        if not metadata:
            cached = self._stmt_columns.get(reply.pending.cmd.stmt_id, [])
            reply.columns = list(cached)
            self._columns_done(reply)
            reply.state = _AFTER_COLUMNS if not self.deprecate_eof else _ROWS
            return
        reply.columns_left = count
        reply.state = _COLUMNS if count else _AFTER_COLUMNS

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
        self._stmt_columns[stmt_id] = list(columns)
        self._stmt_columns.move_to_end(stmt_id)
        while len(self._stmt_columns) > MAX_STATEMENT_COLUMNS:
            self._stmt_columns.popitem(last=False)

    def _end_result_set(self, reply: _Reply, status: int, out: list[Message]) -> None:
        if status & wire.SERVER_MORE_RESULTS_EXISTS:
            reply.result_sets += 1
            if reply.result_sets < MAX_RESULT_SETS:
                reply.state = _FIRST
                return
        self._finish(out)

    def _prepare_ok(self, reply: _Reply, payload: bytes, out: list[Message]) -> None:
        reader = Reader(payload, 1)
        reply.stmt_id = reader.u32()
        columns = reader.u16()
        params = reader.u16()
        reply.num_params = params
        reply.num_fields = columns
        self._last_prepared = reply.stmt_id
        reply.columns = []
        reply.groups = [(False, params), (True, columns)]
        reply.state = _PREP_DEFS
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
        self._finish(out)

    def _prepare_packet(self, reply: _Reply, pkt: Packet, first: int, out: list[Message]) -> None:
        if first == 0xFE and pkt.length == 5:  # the classic EOF closing a group
            self.deprecate_eof = False
            reply.columns_left = 0
            self._prepare_advance(reply, out)
            return
        if reply.columns_left <= 0:  # a definition where an EOF could have been: no EOFs here
            self.deprecate_eof = True
            self._prepare_advance(reply, out)
            if self._reply is not reply:
                self._count("unexpected_reply_packets")
                return
        column = _column(pkt.payload, self.capabilities)
        if reply.in_columns:
            reply.columns.append(column)
        reply.columns_left -= 1
        if reply.columns_left > 0:
            return
        if self.deprecate_eof:
            self._prepare_advance(reply, out)
        elif self.deprecate_eof is None and not any(count for _, count in reply.groups):
            self._maybe_eof = True  # the last group: finish now, swallow an EOF if one follows
            self._prepare_advance(reply, out)
        # otherwise the EOF (or, when the mode is unknown, the next definition) comes next

    def _finish(self, out: list[Message], notes: tuple[str, ...] = ()) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        if self._pending and self._pending[0] is reply.pending:
            self._pending.popleft()
        cmd = reply.pending.cmd
        out.append(Reply(
            cmd.serial, cmd.code, reply.ts_ns, reply.size, reply.error,
            affected_rows=reply.affected, insert_id=reply.insert_id, num_fields=max(reply.num_fields, 0),
            num_rows=reply.num_rows, tables=tuple(reply.tables),
            response=reply.text.text() if reply.text is not None else "",
            error_code=reply.error_code, error_message=reply.error_message, stmt_id=reply.stmt_id,
            num_params=reply.num_params, client_extra=reply.pending.client_extra, notes=notes))

    # -- loss ------------------------------------------------------------------------------------------

    def _lose_side(self, direction: Direction, out: list[Message], gap: bool = False) -> None:
        side = int(direction)
        self._framers[side].reset()
        inflater = self._inflaters[side]
        if inflater is not None:
            inflater.reset()
        self._hunting[side] = True
        if direction == C2S:
            return
        self._resync_server = False
        reply = self._reply
        if reply is not None and gap and reply.state in (_COLUMNS, _AFTER_COLUMNS, _ROWS, _FIELD_LIST):
            self._finish(out, (LOST_RESPONSE,))
        self._reply = None
        if self._pending:
            lost = tuple(p.cmd.serial for p in self._pending)
            self._pending.clear()
            out.append(Lost(lost))

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


# -- packet bodies -----------------------------------------------------------------------------------


def _error(payload: bytes) -> tuple[int, str]:
    """(code, "SQLSTATE: message") of an ERR packet."""
    if len(payload) < 3:
        return 0, ""
    code = payload[1] | payload[2] << 8
    if len(payload) >= 9 and payload[3:4] == b"#":
        return code, f"{_text(payload[4:9])}: {_text(payload[9:])}"
    return code, _text(payload[3:])


def _ok(payload: bytes) -> tuple[int, int, int]:
    """(affected rows, last insert id, status flags) of an OK packet."""
    reader = Reader(payload, 1)
    try:
        affected = reader.lenenc() or 0
        insert_id = reader.lenenc() or 0
        status = reader.u16() if reader.remaining >= 2 else 0
    except Short:
        return 0, 0, 0
    return affected, insert_id, status


def _terminator_status(payload: bytes) -> int:
    if len(payload) == 5:  # classic EOF: 0xfe, warnings, status
        return payload[3] | payload[4] << 8
    return _ok(payload)[2]


def _column(payload: bytes, capabilities: int) -> Column:
    """A column definition (protocol 4.1); an invalid one gives an empty column, not an error."""
    reader = Reader(payload)
    try:
        reader.lenenc_bytes()  # catalog
        schema = reader.lenenc_bytes() or b""
        table = reader.lenenc_bytes() or b""
        org_table = reader.lenenc_bytes() or b""
        name = reader.lenenc_bytes() or b""
    except Short:
        return Column("", "", "", "", wire.T_VAR_STRING, 0)
    typ, flags = wire.T_VAR_STRING, 0
    try:
        reader.lenenc_bytes()  # original name
        if capabilities & wire.MARIADB_CLIENT_EXTENDED_TYPE_INFO:
            reader.lenenc_bytes()
        reader.lenenc()  # length of the fixed fields (0x0c)
        reader.skip(2 + 4)  # character set, column length
        typ = reader.u8()
        flags = reader.u16()
    except Short:
        pass
    return Column(_text(schema), _text(table), _text(org_table), _text(name), typ, flags)


# -- plausibility checks for a connection picked up mid-stream ----------------------------------------


def _looks_like_greeting(data: bytes) -> bool | None:
    if len(data) < 5:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if data[3] != 0 or data[4] != 10 or not 20 <= length < 1024:
        return False
    if data.find(b"\0", 5, 5 + 64) != -1:
        return True
    return None if len(data) < 5 + 64 else False


def _plausible_login(data: bytes) -> bool | None:
    if len(data) >= 4 and data[3] != 1:
        return False
    if len(data) < 36:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if not 32 <= length <= 65536:
        return False
    caps = int.from_bytes(data[4:8], "little")
    return bool(caps & wire.CLIENT_PROTOCOL_41) and data[13:32] == bytes(19)


def _plausible_plain(data: bytes, server: bool) -> bool | None:
    """A packet header at the start of `data`: a reply's first packet, or a command."""
    if len(data) < 5:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if length == 0:
        return False
    if server:
        return data[3] != 0  # a reply continues the command's sequence numbers
    if data[3] != 0 or data[4] not in wire.COMMAND_NAMES:
        return False
    end = 4 + length
    if end >= len(data) or length == wire.MAX_PACKET:
        return True
    # more bytes after the packet: pipelined commands also start with sequence 0 and a known command
    nxt = data[end:end + 5]
    if len(nxt) < 5:
        return None
    return nxt[3] == 0 and nxt[4] in wire.COMMAND_NAMES


def _plausible_compressed(data: bytes, expect_seq: int) -> bool | None:
    if len(data) < 11:
        return None
    clen = data[0] | data[1] << 8 | data[2] << 16
    ulen = data[4] | data[5] << 8 | data[6] << 16
    if clen == 0:
        return False
    if ulen == 0:
        inner = data[7:7 + clen]
        if len(inner) < 5:
            return None if len(data) < 7 + clen else False
        length = inner[0] | inner[1] << 8 | inner[2] << 16
        if length + 4 != clen:
            return False
        if expect_seq == 1:
            return inner[3] == 1
        return inner[3] == 0 and inner[4] in wire.COMMAND_NAMES
    if data[7:11] == b"\x28\xb5\x2f\xfd":
        return True
    return data[7] == 0x78 and (data[7] << 8 | data[8]) % 31 == 0
