"""DNS transactions over UDP and TCP: a query and its response, paired by client and DNS id.

The QR bit, not the port, says which message is the query, so resolvers
talking port 53 to port 53 pair correctly.  Anomalies become Packetbeat's
notes in `error.message`:

- a response without a query is published at once, as an error;
- a second query with the same id from the same client closes the first;
- a query without a response is published when `transaction_timeout` passes;
- over TCP, a response that is empty, not DNS, or cut by a gap or FIN
  closes the pending query with a "Response: ..." note;
- over UDP, EDNS mismatches between query and response, and non-EDNS
  messages over 512 bytes, are noted.

The pairing itself and the UDP handler are in transactions.py, compiled with
mypyc; this module keeps the config (which extends the uncompiled
ProtocolConfig, so it cannot be compiled) and the TCP session.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import Emit, ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.dns.fields import FIELDS, EventSettings, Seen
from agent.protocols.dns.parser import TcpFramer, parse_message
from agent.protocols.dns.transactions import (  # noqa: F401  (the notes are this protocol's public names)
    DUPLICATE_QUERY,
    EDNS_NOT_SUPPORTED,
    EDNS_UNEXPECTED,
    MAX_NON_EDNS_UDP,
    MAX_PENDING_UDP,
    NO_RESPONSE,
    ORPHANED_RESPONSE,
    OVERSIZE,
    RESPONSE_PREFIX,
    DnsDatagrams,
    QueryKey,
    Transactions,
    orient,
    query_key,
)
from agent.protocols.errors import ParseError
from agent.protocols.stream import SessionBase
from agent.transport.types import Direction

NON_DNS = "Message's data could not be decoded as DNS"
ZERO_LENGTH = "Message's length was set to zero"
INCOMPLETE = "Message's data is incomplete"

MAX_PENDING_TCP = 1024  # per TCP connection
TCP_PREFIX = 2

COUNTERS = ("unmatched_requests", "unmatched_responses", "duplicate_queries", "parse_errors", "zero_length",
            "incomplete_responses", "table_overflow")


@dataclass(frozen=True)
class DnsConfig(ProtocolConfig):
    include_authorities: bool = opt(False, doc="list the authority section (its count is always there)")
    include_additionals: bool = opt(False, doc="list the additional section (its count is always there)")


def _settings(config: DnsConfig) -> EventSettings:
    return EventSettings(config.send_request, config.send_response, config.include_authorities,
                         config.include_additionals, config.keep_null)


def _transactions(config: DnsConfig, emit: Emit, counters: Counters, max_pending: int) -> Transactions:
    return Transactions(_settings(config), emit, counters, int(config.transaction_timeout * 1e9), max_pending)


# -- UDP ------------------------------------------------------------------------------

def datagrams(config: DnsConfig, emit: Emit, counters: Counters) -> DnsDatagrams:
    """The UDP handler (transactions.py: compiled, as it runs for every datagram)."""
    return DnsDatagrams(_settings(config), emit, counters, int(config.transaction_timeout * 1e9))


# -- TCP ------------------------------------------------------------------------------

class DnsStream(SessionBase[DnsConfig]):
    """One TCP connection: length-prefixed messages both ways, any number per segment."""

    def __init__(self, ctx: SessionContext[DnsConfig]) -> None:
        super().__init__(ctx)
        self.transactions = _transactions(ctx.config, ctx.emit, ctx.counters, MAX_PENDING_TCP)
        self.framers = (TcpFramer(), TcpFramer())
        self.last_query: QueryKey | None = None  # the query a failed response closes

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.transactions.expire(ts_ns)
        for payload, start_ns in self.framers[direction].feed(data, ts_ns):
            self._message(direction, payload, start_ns)

    def _message(self, direction: Direction, payload: bytes, ts_ns: int) -> None:
        if not payload:
            self.counters.inc("zero_length")
            self._failed(direction, payload, ZERO_LENGTH)
            return
        try:
            msg = parse_message(payload, direction)
        except ParseError:
            self.counters.inc("parse_errors")
            self._failed(direction, payload, NON_DNS)
            return
        exchange = orient(self.ctx.conn, direction, msg)
        seen = Seen(msg, ts_ns, len(payload) + TCP_PREFIX)
        if msg.response:
            self.transactions.response(exchange, seen, [], False)
            self.last_query = None
        else:
            self.last_query = self.transactions.query(exchange, seen, [])

    def _failed(self, direction: Direction, head: bytes, reason: str) -> None:
        """A response that cannot be decoded closes its query with a note; a broken query is dropped quietly.

        The query is found by the response's DNS id when enough of it
        arrived; otherwise it is the last query seen, as in Packetbeat.
        """
        if direction is not Direction.TO_CLIENT:
            return
        key = self.last_query
        if len(head) >= 2:
            by_id = query_key(self.ctx.conn, head[0] << 8 | head[1])
            if by_id in self.transactions or reason != NON_DNS:
                key = by_id
        self.transactions.close_with(key, RESPONSE_PREFIX + reason)
        if key == self.last_query:
            self.last_query = None

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        for head in self.framers[direction].gap(nbytes, ts_ns).messages:
            self._cut(direction, head)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        head = self.framers[direction].close()
        if head is not None:
            self._cut(direction, head)

    def _cut(self, direction: Direction, head: bytes) -> None:
        if direction is Direction.TO_CLIENT:
            self.counters.inc("incomplete_responses")
        self._failed(direction, head, INCOMPLETE)

    def lose_sync(self, direction: Direction) -> None:
        self.framers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        self.transactions.expire_all()

    def pending(self) -> int:
        return len(self.transactions)

    def buffered(self) -> int:
        return self.framers[0].buffered + self.framers[1].buffered


SPEC = ProtocolSpec(
    name="dns",
    config_class=DnsConfig,
    fields=FIELDS,
    tcp=DnsStream,
    udp=datagrams,
    description="DNS over UDP and TCP (EDNS0, DNSSEC records), queries paired with responses by id",
    counters=COUNTERS,
)
