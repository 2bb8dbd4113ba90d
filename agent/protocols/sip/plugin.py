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

from dataclasses import dataclass

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import Emit, ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.errors import ParseError
from agent.protocols.sip.fields import FIELDS, build_transaction
from agent.protocols.sip.parser import SipMessage, SipStreamParser, parse_datagram
from agent.protocols.stream import SessionBase
from agent.transport.types import ConnectionInfo, Direction

CUT_BY_GAP = "Message was cut short by a gap in the TCP stream"
CUT_BY_FIN = "Message was cut short by the end of the TCP stream"
CUT_BY_TIMEOUT = "Message was still incomplete when the connection timed out"
TRANSPORTS = ("udp", "tcp")

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


class SipDatagramHandler:
    def __init__(self, config: SipConfig, emit: Emit, counters: Counters) -> None:
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


class SipSession(SessionBase[SipConfig]):
    """One TCP connection: each direction framed on its own, every message published."""

    def __init__(self, ctx: SessionContext[SipConfig]) -> None:
        super().__init__(ctx)
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
            for msg in parser.feed(data, ts_ns):
                self._publish(direction, msg, ts_ns)
        finally:
            self.counters.inc("resync_dropped_bytes", parser.dropped_bytes - dropped)
            self.counters.inc("body_bytes_skipped", parser.skipped_body - skipped)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters.inc("gaps")
        parser = self.parsers[direction]
        outcome = parser.gap(nbytes, ts_ns)
        for done in outcome.messages:
            self._publish(direction, done, ts_ns)
        if outcome.in_sync:
            return
        cut = parser.flush(CUT_BY_GAP)
        if cut is not None:
            self._publish(direction, cut, ts_ns)
        parser.reset()

    def fin(self, direction: Direction, ts_ns: int) -> None:
        cut = self.parsers[direction].flush(CUT_BY_FIN)
        if cut is not None:
            self._publish(direction, cut, ts_ns)

    def lose_sync(self, direction: Direction) -> None:
        self.parsers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            cut = self.parsers[direction].flush(CUT_BY_TIMEOUT)
            if cut is not None:
                self._publish(direction, cut, ts_ns)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered


SPEC = ProtocolSpec(
    name="sip",
    config_class=SipConfig,
    fields=FIELDS,
    tcp=SipSession,
    udp=SipDatagramHandler,
    description="SIP requests and responses (one event each) over UDP, or TCP with transport_protocol: tcp",
    counters=COUNTERS,
)
