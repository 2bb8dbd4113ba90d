"""DNS correlation: queries waiting for their response, and the UDP handler that feeds them.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

This is the per-message part of plugin.py, which cannot be compiled itself
(its DnsConfig extends the uncompiled ProtocolConfig dataclass): the config
reaches it as plain values.  A query and its response are paired by client,
server and DNS id; the QR bit, not the port, says which message is the query.
"""

from __future__ import annotations

from typing import Final

from agent.metrics import Counters
from agent.protocols.base import Emit
from agent.protocols.correlation import KeyedRequests
from agent.protocols.dns.fields import EventSettings, Seen, transaction
from agent.protocols.dns.parser import DnsMessage, parse_message
from agent.protocols.errors import ParseError
from agent.transport.types import ConnectionInfo, Direction

ORPHANED_RESPONSE: Final = "Response: received without an associated Query"
DUPLICATE_QUERY = ("Another query with the same DNS ID from this client was received so this query was closed "
                   "without receiving a response")
NO_RESPONSE: Final = "No response to this query was received"
OVERSIZE: Final = "Non-EDNS packet has size greater than 512"
EDNS_NOT_SUPPORTED: Final = "Responder does not support EDNS"
EDNS_UNEXPECTED: Final = "Unexpected EDNS answer"
RESPONSE_PREFIX: Final = "Response: "

MAX_NON_EDNS_UDP: Final = 512  # RFC 1035 §4.2.1: larger UDP messages need EDNS0
MAX_PENDING_UDP: Final = 65536  # queries awaiting a response, over all UDP clients

QR_RESPONSE: Final = 0x8000  # the header's QR bit
QueryKey = tuple[bytes, int, bytes, int, int]  # client ip and port, server ip and port, DNS id


class Query:
    """A query waiting for its response: its exchange, message and notes so far."""

    __slots__ = ("conn", "notes", "seen")

    def __init__(self, conn: ConnectionInfo, seen: Seen, notes: list[str]) -> None:
        self.conn = conn
        self.seen = seen
        self.notes = notes


def query_key(conn: ConnectionInfo, ident: int) -> QueryKey:
    client, server = conn.client, conn.server
    return client.ip, client.port, server.ip, server.port, ident


class Transactions:
    """Queries waiting for their response (a bounded table), and the events both make."""

    __slots__ = ("counters", "emit", "queries", "settings")

    def __init__(self, settings: EventSettings, emit: Emit, counters: Counters, timeout_ns: int,
                 max_pending: int) -> None:
        self.emit = emit
        self.counters = counters
        self.settings = settings
        self.queries: KeyedRequests[QueryKey, Query] = KeyedRequests(counters, timeout_ns, max_pending)

    def query(self, conn: ConnectionInfo, seen: Seen, notes: list[str]) -> QueryKey:
        key = query_key(conn, seen.msg.id)
        previous, evicted = self.queries.put(key, Query(conn, seen, notes), seen.ts_ns)
        if previous is not None:
            self.counters.inc("duplicate_queries")
            previous.notes.append(DUPLICATE_QUERY)
            self.publish(previous.conn, previous.seen, None, previous.notes)
        for query in evicted:
            self.unanswered(query)
        return key

    def response(self, conn: ConnectionInfo, seen: Seen, notes: list[str], udp: bool) -> None:
        query = self.queries.pop(query_key(conn, seen.msg.id))
        request: Seen | None = None
        if query is None:
            self.counters.inc("unmatched_responses")
            all_notes = [ORPHANED_RESPONSE]
        else:
            all_notes = query.notes
            conn = query.conn
            request = query.seen
        all_notes.extend(notes)
        if udp:
            _udp_notes(request.msg if request is not None else None, seen, all_notes)
        self.publish(conn, request, seen, all_notes)

    def close_with(self, key: QueryKey | None, note: str) -> None:
        """The response to `key` failed: publish its query with `note`."""
        if key is None:
            return
        query = self.queries.pop(key)
        if query is not None:
            query.notes.append(note)
            self.publish(query.conn, query.seen, None, query.notes)

    def unanswered(self, query: Query) -> None:
        self.counters.inc("unmatched_requests")
        query.notes.append(NO_RESPONSE)
        self.publish(query.conn, query.seen, None, query.notes)

    def expire(self, now_ns: int) -> None:
        for query in self.queries.expire(now_ns):
            self.unanswered(query)

    def expire_all(self) -> None:
        for query in self.queries.drain():
            self.unanswered(query)

    def publish(self, conn: ConnectionInfo, request: Seen | None, response: Seen | None, notes: list[str]) -> None:
        self.emit(transaction(conn, self.settings, request, response, notes))

    def __contains__(self, key: QueryKey) -> bool:
        return self.queries.get(key) is not None

    def __len__(self) -> int:
        return len(self.queries)


def _udp_notes(request: DnsMessage | None, seen: Seen, notes: list[str]) -> None:
    response_edns = seen.msg.edns is not None
    if not response_edns and seen.size > MAX_NON_EDNS_UDP:
        notes.append(RESPONSE_PREFIX + OVERSIZE)
    if request is not None:
        request_edns = request.edns is not None
        if request_edns and not response_edns:
            notes.append(EDNS_NOT_SUPPORTED)
        elif response_edns and not request_edns:
            notes.append(EDNS_UNEXPECTED)


def orient(conn: ConnectionInfo, direction: Direction, msg: DnsMessage) -> ConnectionInfo:
    """The exchange seen from the querier: the sender of a query, the receiver of a response, is the client."""
    sender_is_client = direction is Direction.TO_SERVER
    if msg.flags & QR_RESPONSE:  # msg.response, without the property call
        sender_is_client = not sender_is_client
    return conn if sender_is_client else conn.reversed()


class DnsDatagrams:
    """DNS over UDP: each datagram is one whole message."""

    __slots__ = ("transactions",)

    def __init__(self, settings: EventSettings, emit: Emit, counters: Counters, timeout_ns: int) -> None:
        self.transactions = Transactions(settings, emit, counters, timeout_ns, MAX_PENDING_UDP)

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        try:
            msg = parse_message(data, direction)
        except ParseError:
            # Not DNS: dropped, as Packetbeat drops it; the dispatcher counts it too.
            self.transactions.counters.inc("parse_errors")
            raise
        exchange = orient(conn, direction, msg)
        seen = Seen(msg, ts_ns, len(data))
        if msg.flags & QR_RESPONSE:
            self.transactions.response(exchange, seen, [], True)
            return
        notes = []
        if msg.edns is None and len(data) > MAX_NON_EDNS_UDP:
            notes.append(OVERSIZE)
        self.transactions.query(exchange, seen, notes)

    def tick(self, now_ns: int) -> None:
        self.transactions.expire(now_ns)

    def pending(self) -> int:
        return len(self.transactions)
