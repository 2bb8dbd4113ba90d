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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.correlation import KeyedRequests
from agent.protocols.dns.fields import dns_fields, message_text, query_text
from agent.protocols.dns.names import opcode_name
from agent.protocols.dns.parser import DnsMessage, TcpFramer, parse_message
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction

ORPHANED_RESPONSE = "Response: received without an associated Query"
DUPLICATE_QUERY = ("Another query with the same DNS ID from this client was received so this query was closed "
                   "without receiving a response")
NO_RESPONSE = "No response to this query was received"
NON_DNS = "Message's data could not be decoded as DNS"
ZERO_LENGTH = "Message's length was set to zero"
INCOMPLETE = "Message's data is incomplete"
OVERSIZE = "Non-EDNS packet has size greater than 512"
EDNS_NOT_SUPPORTED = "Responder does not support EDNS"
EDNS_UNEXPECTED = "Unexpected EDNS answer"
RESPONSE_PREFIX = "Response: "

MAX_NON_EDNS_UDP = 512  # RFC 1035 §4.2.1: larger UDP messages need EDNS0
MAX_PENDING_UDP = 65536  # queries awaiting a response, over all UDP clients
MAX_PENDING_TCP = 1024  # per TCP connection
TCP_PREFIX = 2

COUNTERS = ("unmatched_requests", "unmatched_responses", "duplicate_queries", "parse_errors", "zero_length",
            "incomplete_responses", "table_overflow")


@dataclass(frozen=True)
class DnsConfig(ProtocolConfig):
    include_authorities: bool = opt(False, doc="list the authority section (its count is always there)")
    include_additionals: bool = opt(False, doc="list the additional section (its count is always there)")


class _Seen:
    """One decoded message and when and how big it was on the wire."""

    __slots__ = ("msg", "size", "ts_ns")

    def __init__(self, msg: DnsMessage, ts_ns: int, size: int) -> None:
        self.msg = msg
        self.ts_ns = ts_ns
        self.size = size


class _Query:
    __slots__ = ("conn", "notes", "seen")

    def __init__(self, conn: ConnectionInfo, seen: _Seen, notes: list[str]) -> None:
        self.conn = conn
        self.seen = seen
        self.notes = notes


_Key = tuple[bytes, int, bytes, int, int]


class _Transactions:
    """Queries waiting for their response, and the events both make."""

    def __init__(self, config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters,
                 max_pending: int) -> None:
        self.config = config
        self.emit = emit
        self.counters = counters
        self.include_authorities = bool(getattr(config, "include_authorities", False))
        self.include_additionals = bool(getattr(config, "include_additionals", False))
        self.queries: KeyedRequests[_Key, _Query] = KeyedRequests(
            counters, int(config.transaction_timeout * 1e9), max_pending)

    @staticmethod
    def key(conn: ConnectionInfo, ident: int) -> _Key:
        return (conn.client.ip, conn.client.port, conn.server.ip, conn.server.port, ident)

    def query(self, conn: ConnectionInfo, seen: _Seen, notes: list[str]) -> _Key:
        key = self.key(conn, seen.msg.id)
        previous, evicted = self.queries.put(key, _Query(conn, seen, notes), seen.ts_ns)
        if previous is not None:
            self.counters.inc("duplicate_queries")
            previous.notes.append(DUPLICATE_QUERY)
            self.publish(previous.conn, previous.seen, None, previous.notes)
        for query in evicted:
            self.unanswered(query)
        return key

    def response(self, conn: ConnectionInfo, seen: _Seen, notes: list[str], udp: bool) -> None:
        query = self.queries.pop(self.key(conn, seen.msg.id))
        if query is None:
            self.counters.inc("unmatched_responses")
            all_notes = [ORPHANED_RESPONSE]
        else:
            all_notes = query.notes
            conn = query.conn
        all_notes.extend(notes)
        if udp:
            self._udp_notes(query.seen.msg if query is not None else None, seen, all_notes)
        self.publish(conn, query.seen if query is not None else None, seen, all_notes)

    @staticmethod
    def _udp_notes(request: DnsMessage | None, seen: _Seen, notes: list[str]) -> None:
        response_edns = seen.msg.edns is not None
        if not response_edns and seen.size > MAX_NON_EDNS_UDP:
            notes.append(RESPONSE_PREFIX + OVERSIZE)
        if request is not None:
            request_edns = request.edns is not None
            if request_edns and not response_edns:
                notes.append(EDNS_NOT_SUPPORTED)
            elif response_edns and not request_edns:
                notes.append(EDNS_UNEXPECTED)

    def close_with(self, key: _Key | None, note: str) -> None:
        """The response to `key` failed: publish its query with `note`."""
        if key is None:
            return
        query = self.queries.pop(key)
        if query is not None:
            query.notes.append(note)
            self.publish(query.conn, query.seen, None, query.notes)

    def unanswered(self, query: _Query) -> None:
        self.counters.inc("unmatched_requests")
        query.notes.append(NO_RESPONSE)
        self.publish(query.conn, query.seen, None, query.notes)

    def expire(self, now_ns: int) -> None:
        for query in self.queries.expire(now_ns):
            self.unanswered(query)

    def expire_all(self) -> None:
        for query in self.queries.drain():
            self.unanswered(query)

    def publish(self, conn: ConnectionInfo, request: _Seen | None, response: _Seen | None, notes: list[str]) -> None:
        config = self.config
        first = request if request is not None else response
        assert first is not None
        txn = Transaction(type="dns", conn=conn, ts_ns=first.ts_ns, has_request=request is not None, notes=notes)
        fields: dict[str, Any] = {}
        shown = response if response is not None else first
        head = first.msg
        fields["method"] = opcode_name(head.opcode)
        if head.questions:
            fields["query"] = query_text(head.questions[0])
            fields["resource"] = head.questions[0].name
        dns, resolved = dns_fields(shown.msg, self.include_authorities, self.include_additionals)
        dns["type"] = "answer" if response is not None else "query"
        fields["dns"] = dns
        if request is not None:
            txn.client_bytes = request.size
            if config.send_request:
                fields["request"] = message_text(request.msg)
        if response is not None:
            txn.server_bytes = response.size
            txn.end_ns = response.ts_ns
            if config.send_response:
                fields["response"] = message_text(response.msg)
        if resolved:
            fields["related"] = {"ip": list(resolved)}
        txn.status = "OK" if request is not None and response is not None and response.msg.rcode == 0 else "Error"
        txn.fields = fields
        self.emit(txn)

    def __contains__(self, key: _Key) -> bool:
        return self.queries.get(key) is not None

    def __len__(self) -> int:
        return len(self.queries)


def _orient(conn: ConnectionInfo, direction: Direction, msg: DnsMessage) -> ConnectionInfo:
    """The exchange seen from the querier: the sender of a query, the receiver of a response, is the client."""
    sender_is_client = direction is Direction.TO_SERVER
    if msg.response:
        sender_is_client = not sender_is_client
    return conn if sender_is_client else conn.reversed()


# -- UDP ------------------------------------------------------------------------------

class DnsDatagrams:
    def __init__(self, config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> None:
        self.transactions = _Transactions(config, emit, counters, MAX_PENDING_UDP)

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        try:
            msg = parse_message(data, direction)
        except ParseError:
            # Not DNS: dropped, as Packetbeat drops it; the dispatcher counts it too.
            self.transactions.counters.inc("parse_errors")
            raise
        exchange = _orient(conn, direction, msg)
        seen = _Seen(msg, ts_ns, len(data))
        if msg.response:
            self.transactions.response(exchange, seen, [], udp=True)
            return
        notes = []
        if msg.edns is None and len(data) > MAX_NON_EDNS_UDP:
            notes.append(OVERSIZE)
        self.transactions.query(exchange, seen, notes)

    def tick(self, now_ns: int) -> None:
        self.transactions.expire(now_ns)

    def pending(self) -> int:
        return len(self.transactions)


# -- TCP ------------------------------------------------------------------------------

class DnsStream:
    """One TCP connection: length-prefixed messages both ways, any number per segment."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.counters = ctx.counters
        self.transactions = _Transactions(ctx.config, ctx.emit, ctx.counters, MAX_PENDING_TCP)
        self.framers = (TcpFramer(), TcpFramer())
        self.last_query: _Key | None = None  # the query a failed response closes

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
        exchange = _orient(self.ctx.conn, direction, msg)
        seen = _Seen(msg, ts_ns, len(payload) + TCP_PREFIX)
        if msg.response:
            self.transactions.response(exchange, seen, [], udp=False)
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
            by_id = self.transactions.key(self.ctx.conn, head[0] << 8 | head[1])
            if by_id in self.transactions or reason != NON_DNS:
                key = by_id
        self.transactions.close_with(key, RESPONSE_PREFIX + reason)
        if key == self.last_query:
            self.last_query = None

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        head = self.framers[direction].gap(nbytes)
        if head is not None:
            self._cut(direction, head)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        head = self.framers[direction].close()
        if head is not None:
            self._cut(direction, head)

    def _cut(self, direction: Direction, head: bytes) -> None:
        if direction is Direction.TO_CLIENT:
            self.counters.inc("incomplete_responses")
        self._failed(direction, head, INCOMPLETE)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.framers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        self.transactions.expire_all()

    def pending(self) -> int:
        return len(self.transactions)

    def buffered(self) -> int:
        return self.framers[0].buffered + self.framers[1].buffered


def _datagrams(config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> DnsDatagrams:
    return DnsDatagrams(config, emit, counters)


SPEC = ProtocolSpec(
    name="dns",
    config_class=DnsConfig,
    tcp=DnsStream,
    udp=_datagrams,
    description="DNS over UDP and TCP (EDNS0, DNSSEC records), queries paired with responses by id",
    counters=COUNTERS,
)
