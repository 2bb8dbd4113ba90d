"""MySQL/MariaDB client/server protocol, sans-IO: both directions of one connection in, typed messages out.

A reply cannot be read without knowing the command it answers (a prepare
reply, a text or binary result set, a statistics string...), so one parser
follows both directions: it keeps the commands waiting for a reply, in
order, and reads each reply as its command says (replies.py).

What it follows, phase by phase (`Phase`):
- the connection phase when it is seen: greeting (START), login
  (LOGIN: capabilities, user, schema), the authentication exchange (AUTH), a
  TLS upgrade (TLS: the connection is left alone), and compression (zlib or
  zstd), which starts after the server's OK to the login;
- a connection seen mid-stream: the client side is taken when a segment
  starts with a plausible command, the server side once a command was seen;
  compression is recognised from the frame headers (probe.py);
- the command phase (COMMAND): every command; replies as OK, ERR, EOF,
  result sets (text and binary rows, several result sets,
  CLIENT_DEPRECATE_EOF or not, learnt from the first result when the login
  was not seen), prepare replies, LOCAL INFILE, statistics, cursors
  (COM_STMT_FETCH) and binlog streams (DUMP: skipped).

Rows stream past: only `max_rows` rows are decoded (for the response text),
the others are counted from their first byte.  Every logical packet keeps
at most `MAX_KEPT` bytes; every buffer is bounded.
"""

from __future__ import annotations

from enum import Enum

from agent.metrics import Counters
from agent.protocols.cursor import Cursor
from agent.protocols.errors import ParseError, ShortRead
from agent.protocols.mysql import probe, values, wire
from agent.protocols.mysql.framing import FrameError, Framer, Inflater, Packet
from agent.protocols.mysql.messages import (
    AuthResult,
    Column,
    Command,
    Greeting,
    Login,
    Lost,
    Message,
    Reply,
)
from agent.protocols.mysql.replies import Replies, ReplyState, error_fields, text
from agent.protocols.mysql.wire import lenenc, lenenc_bytes
from agent.protocols.stream import CarryCompleted, Gap
from agent.transport.types import Direction

__all__ = ["AuthResult", "Column", "Command", "Greeting", "Login", "Lost", "Message", "MysqlParser", "Phase",
           "Reply"]

PROTOCOL = "mysql"

MAX_KEPT = 1 << 20  # payload bytes kept of one logical packet (a longer query is truncated)
PROBE_MAX = 128  # bytes held while deciding whether a stream picked up mid-way starts at a boundary

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT


class Phase(Enum):
    START = "start"  # nothing seen yet: a greeting, a login or (mid-stream) a command may come
    LOGIN = "login"  # the greeting was seen: the client's login comes next
    AUTH = "auth"  # the login was seen: the authentication exchange, until the server's OK or ERR
    COMMAND = "command"
    TLS = "tls"  # the connection was upgraded to TLS: nothing more can be read
    DUMP = "dump"  # a binlog dump: the server streams events, not replies


# Phases whose server packets are replies (the others: a greeting or the authentication exchange).
_REPLY_PHASES = (Phase.COMMAND, Phase.DUMP)


class MysqlParser:
    """Both directions of one MySQL connection; `feed` returns what became complete."""

    def __init__(self, *, max_rows: int = 10, max_row_length: int = 1024, keep_response: bool = False,
                 counters: Counters | None = None) -> None:
        self.counters = counters if counters is not None else Counters(PROTOCOL)
        self.replies = Replies(self.counters, max_rows, max_row_length, keep_response)
        self._framers = (Framer(C2S), Framer(S2C))
        self._inflaters: list[Inflater | None] = [None, None]
        self.compression = ""
        self.phase = Phase.START
        self.server_capabilities = 0
        self._serial = 0
        # Both sides start by probing: the client side for a login or a command at a segment start, the
        # server side for a greeting, or (mid-stream) for a reply after a command was seen.
        self._hunting = [True, True]
        self._probe_held = [b"", b""]  # bytes too few to judge a boundary yet
        self._resync_server = False

    @property
    def capabilities(self) -> int:
        return self.replies.capabilities

    @capabilities.setter
    def capabilities(self, value: int) -> None:
        self.replies.capabilities = value

    # -- public ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held for packets not yet complete, both directions."""
        return sum(f.buffered for f in self._framers) + sum(i.buffered for i in self._inflaters if i is not None)

    def pending(self) -> int:
        return len(self.replies.pending)

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Message]:
        """Parse `data`; the messages it completed.  A ParseError carries those completed before it
        (`error.messages`)."""
        out: list[Message] = []
        with CarryCompleted(out):
            self._feed(direction, data, ts_ns, out)
        return out

    def _feed(self, direction: Direction, data: bytes, ts_ns: int, out: list[Message]) -> None:
        phase = self.phase
        if not data or (phase in (Phase.TLS, Phase.DUMP) and direction == S2C):
            if data and phase is Phase.DUMP:
                self.counters["binlog_bytes"] += len(data)
            return
        if phase is Phase.TLS:
            return
        side = int(direction)
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
                self.counters["resync_skipped_bytes"] += len(data)
                return
        try:
            self._frames(direction, data, ts_ns, out)
        except FrameError as exc:
            self._lose_side(direction, out)
            raise ParseError(PROTOCOL, direction, 0, str(exc)) from None
        except ShortRead:
            self._lose_side(direction, out)
            raise ParseError(PROTOCOL, direction, 0, "packet shorter than its fields") from None

    def _frames(self, direction: Direction, data: bytes, ts_ns: int, out: list[Message]) -> None:
        side = int(direction)
        framer = self._framers[side]
        pushed = False
        while self.phase is not Phase.TLS:
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

    def take_rest(self, direction: Direction) -> bytes:
        """The bytes of `direction` buffered and not parsed (after the SSL request: the start of TLS)."""
        framer = self._framers[int(direction)]
        rest = framer.peek()
        framer.reset()
        return rest

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> Gap[Message]:
        """A gap loses the direction's framing (a reply cut after its result was known is published)."""
        out: list[Message] = []
        if self.phase is not Phase.TLS and not (direction == S2C and self.phase is Phase.DUMP):
            self._lose_side(direction, out, gap=True)
        return Gap(out, False)

    def reset(self, direction: Direction) -> None:
        """After a ParseError: this side's state was dropped already; wait for a clean boundary."""
        self._hunting[int(direction)] = True

    # -- framing ------------------------------------------------------------------------------

    def _drain(self, direction: Direction, out: list[Message]) -> None:
        framer = self._framers[int(direction)]
        client = direction == C2S
        if client:
            keep = self._client_keep
            handle = self._client_packet
        else:
            keep = self._server_keep
            handle = self._server_packet
        replies = self.replies
        while True:
            pkt = framer.next(keep)
            if pkt is None:
                return
            if client or self.phase not in _REPLY_PHASES:
                handle(pkt, out)
            else:  # the usual server packet: straight to the reply being read
                replies.packet(pkt, out)
                if replies.dump_started:
                    replies.dump_started = False
                    self.phase = Phase.DUMP
            if self.phase is Phase.TLS:
                return

    def _client_keep(self, first: int, length: int) -> int:
        if first == wire.COM_STMT_SEND_LONG_DATA:
            return min(MAX_KEPT, 7 + self.replies.max_row_length)
        return MAX_KEPT

    def _server_keep(self, first: int, length: int) -> int:
        replies = self.replies
        reply = replies.reply
        if reply is not None and reply.state is ReplyState.ROWS and first not in (0xFE, 0xFF):
            if reply.text is not None and reply.text.wants_rows:
                return min(MAX_KEPT, 2 * replies.max_row_length + 16 * len(reply.columns) + 64)
            return 1
        return MAX_KEPT

    # -- probing (mid-stream, resynchronisation) ------------------------------------------------

    def _probe(self, direction: Direction, data: bytes) -> bool | None:
        """Whether `data` starts at a packet boundary we can trust (None: too few bytes to tell yet)."""
        if direction == S2C:
            return self._probe_server(data)
        side = int(direction)
        if self.phase is Phase.START:
            login = probe.plausible_login(data)
            if login is None:
                return None
            if login:
                self.phase = Phase.LOGIN
                self._hunting[side] = False
                return True
        compressed = self._inflaters[side] is not None
        verdict = probe.plausible_compressed(data, 0) if compressed else probe.plausible_plain(data, server=False)
        if verdict is None:
            return None
        if not verdict:
            if compressed or self.phase not in (Phase.START, Phase.COMMAND):
                return False
            detected = probe.plausible_compressed(data, 0)
            if not detected:
                return detected
            self._start_compression("zstd" if data[7:11] == b"\x28\xb5\x2f\xfd" else "zlib")
            self.counters["compression_detected"] += 1
        if self.phase is Phase.START:
            self.phase = Phase.COMMAND
        self._hunting[side] = False
        self._framers[side].reset()
        inflater = self._inflaters[side]
        if inflater is not None:
            inflater.reset()
        return True

    def _probe_server(self, data: bytes) -> bool | None:
        side = int(S2C)
        phase = self.phase
        if phase is Phase.START:
            verdict = probe.looks_like_greeting(data)
        elif phase in (Phase.LOGIN, Phase.AUTH):
            verdict = None if len(data) < 5 else (data[0] | data[1] << 8 | data[2] << 16) > 0
        elif not self._resync_server:
            return False
        elif self._inflaters[side] is not None:
            verdict = probe.plausible_compressed(data, 1)
        else:
            verdict = probe.plausible_plain(data, server=True)
        if verdict:
            self._hunting[side] = False
            if phase not in (Phase.START, Phase.LOGIN, Phase.AUTH):
                self._resync_server = False
            self._framers[side].reset()
        return verdict

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
        pending = self.replies.pending
        if phase in (Phase.COMMAND, Phase.START):
            if pkt.seq != 0 or not pkt.payload:
                if pending:  # LOCAL INFILE data, authentication of COM_CHANGE_USER
                    pending[-1].client_extra += pkt.wire
                return
            self.phase = Phase.COMMAND
            self._command(pkt, out)
            return
        if pkt.seq == 0 and pkt.payload and pkt.payload[0] in wire.COMMAND_NAMES:
            self.phase = Phase.COMMAND  # the end of the authentication was not seen
            self._command(pkt, out)
            return
        if phase is Phase.LOGIN:
            self._login(pkt, out)
        # auth phase: the client's authentication data is not reported

    def _login(self, pkt: Packet, out: list[Message]) -> None:
        reader = Cursor(pkt.payload, 0, -1, PROTOCOL, C2S)
        try:
            caps = reader.u32le()
            if not caps & wire.CLIENT_PROTOCOL_41:
                self.phase = Phase.AUTH
                return
            reader.skip(4 + 1)  # max packet size, character set
            filler = reader.take(23)
            if not self.server_capabilities & wire.CLIENT_MYSQL:
                caps |= int.from_bytes(filler[19:23], "little") << 32
            if pkt.length == 32 and caps & wire.CLIENT_SSL:
                self.capabilities = caps
                self.phase = Phase.TLS
                out.append(Login(pkt.ts_ns, "", "", caps, True, ""))
                return
            user, database = _login_names(reader, caps)
        except ShortRead:
            user = database = ""
            caps = self.capabilities or 0
        if self.server_capabilities:
            caps &= self.server_capabilities | (0xFFFFFFFF << 32)
        self.capabilities = caps
        self.replies.deprecate_eof = bool(caps & wire.CLIENT_DEPRECATE_EOF)
        compression = ""
        if caps & wire.CLIENT_COMPRESS:
            compression = "zlib"
        elif caps & wire.CLIENT_ZSTD_COMPRESSION_ALGORITHM:
            compression = "zstd"
        self.compression = compression
        self.phase = Phase.AUTH
        out.append(Login(pkt.ts_ns, user, database, caps, False, compression))

    def _command(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        code = payload[0]
        body = payload[1:]
        sql = ""
        stmt_id = 0
        if code == wire.COM_QUERY:
            sql = text(self._query_text(body))
        elif code in (wire.COM_STMT_PREPARE, wire.COM_INIT_DB, wire.COM_CREATE_DB, wire.COM_DROP_DB):
            sql = text(body)
        elif code == wire.COM_FIELD_LIST:
            sql = text(body.split(b"\0", 1)[0])
        elif code in (wire.COM_STMT_EXECUTE, wire.COM_STMT_CLOSE, wire.COM_STMT_RESET, wire.COM_STMT_FETCH,
                      wire.COM_STMT_SEND_LONG_DATA, wire.COM_STMT_BULK_EXECUTE):
            if len(body) >= 4:
                stmt_id = int.from_bytes(body[:4], "little")
                if stmt_id == 0xFFFFFFFF:  # MariaDB: the statement prepared just before (pipelined)
                    stmt_id = self.replies.last_prepared
        elif code == wire.COM_PROCESS_KILL and len(body) >= 4:
            sql = str(int.from_bytes(body[:4], "little"))
        expects = code not in wire.NO_REPLY
        self._serial += 1
        cmd = Command(self._serial, pkt.ts_ns, code, pkt.wire, sql, stmt_id, body, pkt.truncated, expects)
        out.append(cmd)
        if code == wire.COM_STMT_CLOSE:
            self.replies.stmt_columns.pop(stmt_id, None)
        if expects:
            self.replies.expect(cmd, out)
        if self._hunting[1] and not self._resync_server:
            self._resync_server = True
            self._probe_held[1] = b""  # what was held belongs to an older reply: the next one starts afresh

    def _query_text(self, body: bytes) -> bytes:
        if not self.capabilities & wire.CLIENT_QUERY_ATTRIBUTES:
            return body
        reader = Cursor(body, 0, -1, PROTOCOL, C2S)
        try:
            count = lenenc(reader) or 0
            lenenc(reader)  # parameter set count (always 1)
            if count:
                reader.skip((count + 7) // 8)
                if reader.u8() == 1:
                    types = []
                    for _ in range(count):
                        typ = reader.u8()
                        flag = reader.u8()
                        lenenc_bytes(reader)
                        types.append((typ, flag))
                    for typ, flag in types:
                        values.read_value(reader, typ, bool(flag & 0x80))
            return reader.rest()
        except ShortRead:
            return body

    # -- server packets -----------------------------------------------------------------------------

    def _server_packet(self, pkt: Packet, out: list[Message]) -> None:
        """A server packet before the command phase (replies go to `Replies.packet`)."""
        if self.phase is Phase.START:
            self._greeting(pkt, out)
        else:
            self._auth_packet(pkt, out)

    def _greeting(self, pkt: Packet, out: list[Message]) -> None:
        reader = Cursor(pkt.payload, 0, -1, PROTOCOL, S2C)
        try:
            if reader.u8() != 10:
                raise reader.short("protocol version 10")
            version = text(reader.cstring())
            conn_id = reader.u32le()
            reader.skip(8 + 1)
            caps = reader.u16le()
            if reader.remaining():
                reader.skip(1 + 2)  # character set, status
                caps |= reader.u16le() << 16
                reader.skip(1 + 6)  # auth data length, reserved
                if not caps & wire.CLIENT_MYSQL:
                    caps |= reader.u32le() << 32  # MariaDB extended capabilities
        except ShortRead:
            self.phase = Phase.COMMAND
            self._hunting[1] = True
            return
        self.server_capabilities = caps
        self.phase = Phase.LOGIN
        self._hunting[0] = False  # the connection is seen from its start: the client side is on a boundary
        out.append(Greeting(pkt.ts_ns, version, conn_id, caps))

    def _auth_packet(self, pkt: Packet, out: list[Message]) -> None:
        payload = pkt.payload
        if not payload:
            return
        first = payload[0]
        if first == 0x00 and self.phase is Phase.AUTH:
            self.phase = Phase.COMMAND
            out.append(AuthResult(pkt.ts_ns, True))
            if self.compression:
                self._start_compression(self.compression)
            return
        if first == 0xFF:
            code, message = error_fields(payload)
            out.append(AuthResult(pkt.ts_ns, False, code, message))
            self.phase = Phase.COMMAND  # the server closes the connection; nothing else is expected

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
        self.replies.lose(out, gap)


def _login_names(reader: Cursor, caps: int) -> tuple[str, str]:
    """(user, database) of a protocol 4.1 login, after its fixed part."""
    user = text(reader.cstring())
    if caps & wire.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        lenenc_bytes(reader)
    elif caps & wire.CLIENT_SECURE_CONNECTION:
        reader.take(reader.u8())
    else:
        reader.cstring()
    database = text(reader.cstring()) if caps & wire.CLIENT_CONNECT_WITH_DB and reader.remaining() else ""
    return user, database
