"""SIP events: one per message, requests and responses alike (no pairing), as Packetbeat reports them.

SIP runs over UDP by default, or over TCP with `transport_protocol: tcp`;
the configured ports are claimed for that transport only (`ports_for`).
Source is the message's sender, destination its receiver.  As in
Packetbeat, `network.transport` is the configured transport and
`network.iana_number` is always "17"; `event.start` = `event.end` = the
message time.  Over TCP a message cut by a gap or FIN is still published,
with a note saying so; a gap inside a body keeps the framing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.sip.fields import message_fields
from agent.protocols.sip.parser import SipMessage, SipStreamParser, parse_datagram
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction

CUT_BY_GAP = "Message was cut short by a gap in the TCP stream"
CUT_BY_FIN = "Message was cut short by the end of the TCP stream"
CUT_BY_TIMEOUT = "Message was still incomplete when the connection timed out"
TRANSPORTS = ("udp", "tcp")
EVENT_TYPE = ("info", "protocol")

COUNTERS = ("messages", "parse_errors", "truncated_messages", "gaps", "resync_dropped_bytes", "body_bytes_skipped")


def _check_transport(value: str) -> str | None:
    return None if value.lower() in TRANSPORTS else f"must be one of {', '.join(TRANSPORTS)}, got {value!r}"


@dataclass(frozen=True)
class SipConfig(ProtocolConfig):
    parse_authorization: bool = opt(True, doc="sip.auth.* and user.name from the Authorization header")
    parse_body: bool = opt(True, doc="sip.sdp.* from application/sdp bodies")
    keep_original: bool = opt(True, doc="the whole message in event.original")
    transport_protocol: str = opt("udp", check=_check_transport, doc="udp or tcp: where SIP is decoded")

    @property
    def transport(self) -> str:
        return self.transport_protocol.lower()

    def ports_for(self, transport: str) -> tuple[int, ...]:
        """The ports SIP claims for `transport`: all of them for the configured one, none otherwise."""
        return self.ports if transport == self.transport else ()


def build_transaction(config: SipConfig, conn: ConnectionInfo, msg: SipMessage, ts_ns: int,
                      notes: Iterable[str] = ()) -> Transaction:
    """The event of one message; `conn` runs from its sender (client) to its receiver (server)."""
    sip, event, related, user_name = message_fields(
        msg, parse_authorization=config.parse_authorization, parse_body=config.parse_body,
        keep_original=config.keep_original)
    fields: dict[str, Any] = {
        "sip": sip,
        "event": event,
        "network": {"application": "sip", "iana_number": "17", "transport": config.transport},
    }
    if related:
        fields["related"] = related
    if user_name:
        fields["user"] = {"name": user_name}
    txn = Transaction(type="sip", conn=conn, ts_ns=ts_ns, end_ns=ts_ns, fields=fields, event_type=EVENT_TYPE,
                      status="Error" if msg.start.code >= 400 else "OK")
    txn.notes.extend(notes)
    if msg.truncated:
        txn.notes.append(msg.truncated)
    return txn


class SipDatagramHandler:
    def __init__(self, config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> None:
        assert isinstance(config, SipConfig)
        self.config = config
        self.emit = emit
        self.counters = counters

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        try:
            msg = parse_datagram(data, direction)
        except ParseError:
            self.counters.inc("parse_errors")
            raise
        self.counters.inc("messages")
        if msg.truncated:
            self.counters.inc("truncated_messages")
        # The dispatcher orients `conn` by port; the event runs from the datagram's sender.
        sender = conn if direction is Direction.TO_SERVER else conn.reversed()
        self.emit(build_transaction(self.config, sender, msg, ts_ns))

    def tick(self, now_ns: int) -> None:
        pass  # nothing waits: every message is published when it arrives

    def pending(self) -> int:
        return 0


class SipSession:
    """One TCP connection: each direction framed on its own, every message published."""

    def __init__(self, ctx: SessionContext) -> None:
        assert isinstance(ctx.config, SipConfig)
        self.config = ctx.config
        self.ctx = ctx
        self.counters = ctx.counters
        self.parsers = (SipStreamParser(Direction.TO_SERVER), SipStreamParser(Direction.TO_CLIENT))

    def _publish(self, direction: Direction, msg: SipMessage, ts_ns: int) -> None:
        self.counters.inc("messages")
        if msg.truncated:
            self.counters.inc("truncated_messages")
        conn = self.ctx.conn if direction is Direction.TO_SERVER else self.ctx.conn.reversed()
        self.ctx.emit(build_transaction(self.config, conn, msg, ts_ns))

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        parser = self.parsers[direction]
        dropped = parser.dropped_bytes
        skipped = parser.skipped_body
        try:
            for msg in parser.feed(data):
                self._publish(direction, msg, ts_ns)
        finally:
            self.counters.inc("resync_dropped_bytes", parser.dropped_bytes - dropped)
            self.counters.inc("body_bytes_skipped", parser.skipped_body - skipped)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters.inc("gaps")
        parser = self.parsers[direction]
        in_sync, done = parser.gap(nbytes)
        if done is not None:
            self._publish(direction, done, ts_ns)
        if in_sync:
            return
        cut = parser.flush(CUT_BY_GAP)
        if cut is not None:
            self._publish(direction, cut, ts_ns)
        parser.lose_sync()

    def fin(self, direction: Direction, ts_ns: int) -> None:
        cut = self.parsers[direction].flush(CUT_BY_FIN)
        if cut is not None:
            self._publish(direction, cut, ts_ns)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters.inc("parse_errors")
        self.parsers[direction].lose_sync()

    def expire(self, ts_ns: int) -> None:
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            cut = self.parsers[direction].flush(CUT_BY_TIMEOUT)
            if cut is not None:
                self._publish(direction, cut, ts_ns)

    def pending(self) -> int:
        return 0

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered


def _datagram_handler(config: ProtocolConfig, emit: Callable[[Transaction], None],
                      counters: Counters) -> SipDatagramHandler:
    return SipDatagramHandler(config, emit, counters)


SPEC = ProtocolSpec(
    name="sip",
    config_class=SipConfig,
    tcp=SipSession,
    udp=_datagram_handler,
    description="SIP requests and responses (one event each) over UDP, or TCP with transport_protocol: tcp",
    counters=COUNTERS,
)
