"""Oracle TNS sessions: connect attempts and their outcome, then the SQL calls of the session.

The connection phase is read packet by packet: CONNECT (its descriptor in
the packet, or in the DATA packet after it), RESEND (the client sends its
CONNECT again), then ACCEPT, REFUSE or REDIRECT.  An accepted connect is
published once the logon that follows is answered (user, ORA- error),
when native network encryption is negotiated, or when the connection ends.

After ACCEPT, a DATA payload from the client starts a call and the
server's DATA payloads are its answer, which ends with an end-of-call block
(`ttc.end_of_call`).  A call is published when that block is seen, or when
the client starts its next call.  Cursors opened by OALL8 are remembered
(up to MAX_CURSORS) so re-executions carry their SQL too.

With ANO encryption or integrity on (the server's answer to 0xDEADBEEF),
or when the first call after ANO is not TTC, the session is flagged
encrypted and nothing more is decoded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from agent.config.typed import opt, positive
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.tns import ttc
from agent.protocols.tns.connect import parse_accept, parse_connect, parse_refuse, redirect_length
from agent.protocols.tns.fields import (
    FIELDS,
    NOTE_ENCRYPTED,
    NOTE_NO_END_OF_CALL,
    NOTE_NO_REPLY,
    OUTCOME_ACCEPTED,
    OUTCOME_REDIRECTED,
    OUTCOME_REFUSED,
    Attempt,
    CallState,
    call_transaction,
    connect_transaction,
)
from agent.protocols.tns.parser import (
    ACCEPT,
    CONNECT,
    DATA,
    NOTE_OOB_BREAK,
    REDIRECT,
    REFUSE,
    RESEND,
    PacketParser,
    TnsPacket,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_CURSORS = 1024
DATA_FLAG_EOF = 0x0040
COUNTERS = ("connects", "refused", "redirected", "encrypted_sessions", "calls", "calls_without_end",
            "unknown_calls", "parse_errors", "gaps", "cursor_map_full")


@dataclass(frozen=True)
class TnsConfig(ProtocolConfig):
    max_call_bytes: int = opt(256 * 1024, kind="size", check=positive,
                              doc="bytes of a client call kept to read its SQL text; longer calls are not decoded")


class Phase(Enum):
    CONNECTING = "connecting"
    SESSION = "session"  # accepted: DATA carries TTC
    OPAQUE = "opaque"  # encrypted, refused or redirected: nothing more is decoded


class TnsSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, TnsConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        self.parsers = (PacketParser(Direction.TO_SERVER), PacketParser(Direction.TO_CLIENT))
        self.phase = Phase.CONNECTING
        self.attempt: Attempt | None = None
        self.pending_connect_data = 0  # the descriptor follows in the client's next DATA packet
        self.pending_redirect = 0  # the redirect data follows in the server's next DATA packet
        self.ano_pending = False
        self.ano_done = False
        self.client_field_version: int | None = None
        self.server_field_version: int | None = None
        self.call: CallState | None = None
        self.cursors: OrderedDict[int, str] = OrderedDict()
        self.user: str | None = None
        self.finished: set[Direction] = set()

    @property
    def field_version(self) -> int | None:
        known = [v for v in (self.client_field_version, self.server_field_version) if v is not None]
        return min(known) if known else None

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for packet in self.parsers[direction].feed(data, ts_ns):
            if packet.skipped_break and self.call is not None:
                self._note(NOTE_OOB_BREAK)
            if direction is Direction.TO_SERVER:
                self._client_packet(packet)
            else:
                self._server_packet(packet)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        self.parsers[direction].gap()
        self._finish_call(ts_ns)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self.finished.add(direction)
        if len(self.finished) == 2:  # both sides closed: nothing more can answer
            self.expire(ts_ns)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        self.parsers[direction].reset()
        self._finish_call(ts_ns)

    def expire(self, ts_ns: int) -> None:
        self._finish_call(ts_ns)
        self._publish_attempt()

    def pending(self) -> int:
        return (self.call is not None) + (self.attempt is not None)

    def buffered(self) -> int:
        return self.parsers[0].buffer.buffered + self.parsers[1].buffer.buffered

    # -- client ------------------------------------------------------------------

    def _client_packet(self, packet: TnsPacket) -> None:
        if packet.type == CONNECT:
            self._on_connect(packet)
        elif packet.type == DATA:
            payload = packet.body[2:]
            if self.pending_connect_data and self.attempt is not None:
                self.attempt.descriptor = payload[:self.pending_connect_data].decode("utf-8", "replace")
                self.attempt.client_bytes += packet.size
                self.pending_connect_data = 0
            elif self.phase is Phase.SESSION:
                self._client_data(packet, payload)
        if self.attempt is not None and packet.type != DATA and self.phase is Phase.CONNECTING:
            self.attempt.client_bytes += packet.size

    def _on_connect(self, packet: TnsPacket) -> None:
        request = parse_connect(packet.body)
        if self.attempt is None or not self.attempt.resends or self.attempt.outcome is not None:
            self._publish_attempt()
            self.attempt = Attempt(packet.ts_ns)
            self.counters["connects"] += 1
        attempt = self.attempt
        attempt.version = request.version
        attempt.descriptor = request.data.decode("utf-8", "replace")
        self.pending_connect_data = request.data_length if len(request.data) < request.data_length else 0

    def _client_data(self, packet: TnsPacket, payload: bytes) -> None:
        flags = int.from_bytes(packet.body[:2], "big")
        if flags & DATA_FLAG_EOF and not payload:
            self._finish_call(packet.ts_ns)
            return
        if payload.startswith(ttc.ANO_MAGIC):
            self.ano_pending = True
            return
        call = self.call
        if call is not None and not call.answered:  # the same call, one more packet
            call.client_bytes += packet.size
            if len(call.request) + len(payload) <= self.config.max_call_bytes:
                call.request += payload
            return
        self._finish_call(packet.ts_ns)
        if self.ano_done and ttc.parse_call(payload, self.field_version) is None:
            self._encrypted(packet.ts_ns)
            return
        self.call = CallState(None, packet.ts_ns, bytearray(payload[:self.config.max_call_bytes]),
                              client_bytes=packet.size)
        if payload[:1] == bytes([ttc.MSG_DATA_TYPES]):
            self.client_field_version = ttc.client_field_version(payload)

    # -- server ------------------------------------------------------------------

    def _server_packet(self, packet: TnsPacket) -> None:
        attempt = self.attempt
        if attempt is not None and self.phase is Phase.CONNECTING:
            attempt.server_bytes += packet.size
        kind = packet.type
        if kind == DATA:
            self._server_data(packet, packet.body[2:])
        elif attempt is None or self.phase is not Phase.CONNECTING:
            return
        elif kind == ACCEPT:
            accept = parse_accept(packet.body)
            attempt.outcome, attempt.accept_version, attempt.accept_sdu = OUTCOME_ACCEPTED, accept.version, accept.sdu
            attempt.end_ns = packet.ts_ns
            self.phase = Phase.SESSION
            if accept.version >= 315:
                for parser in self.parsers:
                    parser.set_large(True)
        elif kind == REFUSE:
            refuse = parse_refuse(packet.body)
            attempt.outcome, attempt.end_ns = OUTCOME_REFUSED, packet.ts_ns
            attempt.refuse_reason = refuse.data.decode("utf-8", "replace")
            attempt.refuse_reasons = (refuse.user_reason, refuse.system_reason)
            self.counters["refused"] += 1
            self._publish_attempt()
        elif kind == REDIRECT:
            length = redirect_length(packet.body)
            if len(packet.body) >= 2 + length and length:
                self._redirected(packet.body[2:2 + length], packet.ts_ns)
            else:
                self.pending_redirect = length
        elif kind == RESEND:
            attempt.resends += 1

    def _server_data(self, packet: TnsPacket, payload: bytes) -> None:
        if self.pending_redirect:
            if self.attempt is not None:
                self.attempt.server_bytes += packet.size
            self._redirected(payload[:self.pending_redirect], packet.ts_ns)
            self.pending_redirect = 0
            return
        if self.phase is not Phase.SESSION:
            return
        if self.ano_pending:
            self.ano_pending = False
            self.ano_done = True
            if ttc.ano_encryption(payload):
                self._encrypted(packet.ts_ns)
            return
        call = self.call
        if call is None:
            return
        call.answered = True
        call.server_bytes += packet.size
        call.end_ns = packet.ts_ns
        call.tail += payload
        if len(call.tail) > ttc.MAX_OER_SCAN:
            del call.tail[:len(call.tail) - ttc.MAX_OER_SCAN]
        self._answered(call, payload)

    def _answered(self, call: CallState, payload: bytes) -> None:
        kind = call.request[:1]
        if kind == bytes([ttc.MSG_PROTOCOL]):
            banner = ttc.server_protocol(payload)
            if banner is not None:
                if self.attempt is not None:
                    self.attempt.banner = banner[0]
                self.server_field_version = banner[1]
            self.call = None
        elif kind == bytes([ttc.MSG_DATA_TYPES]):
            self.call = None
        else:
            end = ttc.end_of_call(bytes(call.tail), self.field_version)
            if end is not None:
                self._finish_call(call.end_ns or call.ts_ns, end)

    # -- outcomes ----------------------------------------------------------------

    def _redirected(self, data: bytes, ts_ns: int) -> None:
        attempt = self.attempt
        if attempt is None:
            return
        attempt.outcome, attempt.end_ns = OUTCOME_REDIRECTED, ts_ns
        attempt.redirect = data.decode("utf-8", "replace")
        self.counters["redirected"] += 1
        self._publish_attempt()

    def _encrypted(self, ts_ns: int) -> None:
        self.phase = Phase.OPAQUE
        self.call = None
        self.counters["encrypted_sessions"] += 1
        if self.attempt is not None:
            self.attempt.encrypted = True
            self.attempt.notes.append(NOTE_ENCRYPTED)
        self._publish_attempt()

    def _publish_attempt(self) -> None:
        attempt = self.attempt
        self.attempt = None
        if attempt is None:
            return
        if attempt.outcome in (OUTCOME_REFUSED, OUTCOME_REDIRECTED):
            self.phase = Phase.OPAQUE
        self._emit(connect_transaction(self.ctx.conn, attempt, self.config.send_request))

    def _finish_call(self, ts_ns: int, end: ttc.EndOfCall | None = None) -> None:
        state = self.call
        self.call = None
        if state is None or not state.request:
            return
        call = ttc.parse_call(bytes(state.request), self.field_version)
        if call is None:
            self.counters["unknown_calls"] += 1
            return
        state.call = call
        for cursor in call.closed_cursors:
            self.cursors.pop(cursor, None)
        if call.function in (ttc.FN_AUTH_ONE, ttc.FN_AUTH_TWO):
            self._logon(call, end)
            return
        sql = call.sql
        if call.function == ttc.FN_EXECUTE and sql is not None and end is not None and end.cursor_id:
            self._remember(end.cursor_id, sql)
        elif call.function in (ttc.FN_REEXECUTE, ttc.FN_REEXECUTE_FETCH):
            sql = self.cursors.get(call.cursor_id)
        if sql is None and call.function not in (ttc.FN_COMMIT, ttc.FN_ROLLBACK):
            return
        self.counters["calls"] += 1
        if self.attempt is not None and self.attempt.outcome is not None:
            self._publish_attempt()  # no logon was seen (or it is not understood): the connect comes first
        notes: list[str] = []
        if end is None:
            self.counters["calls_without_end"] += 1
            notes.append(NOTE_NO_END_OF_CALL if state.answered else NOTE_NO_REPLY)
        self._emit(call_transaction(self.ctx.conn, state, sql, end, self.user, notes, self.config.send_response))

    def _logon(self, call: ttc.Call, end: ttc.EndOfCall | None) -> None:
        attempt = self.attempt
        if call.user:
            self.user = call.user
        if attempt is None:
            return
        attempt.user = self.user
        attempt.pairs.update(call.pairs)
        if call.function == ttc.FN_AUTH_TWO or (end is not None and end.failed):
            attempt.logon = end
            self._publish_attempt()

    def _remember(self, cursor: int, sql: str) -> None:
        cursors = self.cursors
        cursors[cursor] = sql
        cursors.move_to_end(cursor)
        if len(cursors) > MAX_CURSORS:
            cursors.popitem(last=False)
            self.counters["cursor_map_full"] += 1

    def _note(self, note: str) -> None:
        if self.attempt is not None and note not in self.attempt.notes:
            self.attempt.notes.append(note)

    def _emit(self, txn: Transaction) -> None:
        self.ctx.emit(txn)


def _session(ctx: SessionContext) -> TnsSession:
    return TnsSession(ctx)


SPEC = ProtocolSpec(
    name="tns",
    config_class=TnsConfig,
    tcp=_session,
    description="Oracle TNS: connect attempts (accepted, refused, redirected), logons, SQL calls (TTC OALL8)",
    counters=COUNTERS,
)

__all__ = ["FIELDS", "SPEC", "TnsConfig", "TnsSession"]
