"""Memcache transactions over TCP (FIFO, binary replies matched by opaque) and UDP (by request id).

TCP: requests queue in order.  A reply pairs with the oldest request (text)
or with the oldest request of the same opaque and opcode (binary); quiet
requests skipped on the way got no reply and are published alone.  VALUE
and STAT replies are merged until END (binary: until the empty stat).

UDP: each datagram starts with memcache's 8-byte frame header; the
datagrams of a message are gathered (duplicates dropped) and a request
meets its reply by request id.  A request still alone after
`udptransactiontimeout` is published alone.  Decision (Packetbeat waits the
timeout for these too): a request that gets no reply when it succeeds
(text noreply, binary quiet writes) is published as soon as it is complete,
on TCP as on UDP.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import Emit, ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.correlation import RequestQueue
from agent.protocols.errors import ParseError
from agent.protocols.memcache import codes
from agent.protocols.memcache.fields import (
    FIELDS,
    NOTE_NO_REQUEST,
    NOTE_NON_QUIET_RESPONSE_ONLY,
    NOTE_UNFINISHED,
    build_transaction,
)
from agent.protocols.memcache.parser import (
    UDP_HEADER_SIZE,
    McMessage,
    McParser,
    ParserOptions,
    merge_replies,
    parse_udp_header,
    parse_udp_message,
)
from agent.protocols.stream import SessionBase, StartResync
from agent.transport.types import ConnectionInfo, Direction, Endpoint

COUNTERS = ("unmatched_requests", "unmatched_responses", "unfinished_transactions", "parse_errors",
            "queue_overflow", "gaps", "gaps_skipped", "resync_dropped_bytes", "udp_duplicates",
            "udp_dropped_messages", "udp_table_overflow", "udp_oversized")

MAX_UDP_TRANSACTIONS = 65536  # pending UDP exchanges, all clients together
MAX_UDP_MESSAGE_BYTES = 4 << 20  # datagrams gathered for one message


@dataclass(frozen=True)
class MemcacheConfig(ProtocolConfig):
    # Packetbeat's names, without underscores.
    maxvalues: int = opt(0, bounds=(-(2**31), 2**31 - 1))  # values kept per message: 0 none, -1 all
    maxbytespervalue: int = opt(0, bounds=(-(2**31), 2**31 - 1))  # <= 0: no limit (pktbeat keeps 1 MiB per value)
    udptransactiontimeout: float = opt(10.0, kind="duration")
    parseunknown: bool = opt(False)

    def parser_options(self) -> ParserOptions:
        return ParserOptions(self.maxvalues, self.maxbytespervalue, self.parseunknown)


_REQUEST_START = frozenset(b"\x80abcdefghijklmnopqrstuvwxyz")
_REPLY_START = frozenset(b"\x81ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


class MemcacheSession(SessionBase[MemcacheConfig]):
    """One TCP connection."""

    def __init__(self, ctx: SessionContext[MemcacheConfig]) -> None:
        super().__init__(ctx)
        options = self.config.parser_options()
        self.max_values = options.max_values
        self.parsers = (McParser(Direction.TO_SERVER, options), McParser(Direction.TO_CLIENT, options))
        self.requests: RequestQueue[McMessage] = RequestQueue(ctx.counters)
        self.partial: McMessage | None = None  # a reply that later replies extend
        self.resync = StartResync(_REQUEST_START, _REPLY_START, ctx.counters)

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if not self.resync.accepts(direction, data):
            return
        for msg in self.parsers[direction].feed(data, ts_ns):
            if msg.is_request:
                self._on_request(msg)
            else:
                self._on_reply(msg)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        if self.parsers[direction].gap(nbytes, ts_ns).in_sync:
            self.counters["gaps_skipped"] += 1
            return
        self.lose_sync(direction)

    # fin: nothing (as Packetbeat: what is pending goes out when the connection expires); recover: lose_sync.

    def expire(self, ts_ns: int) -> None:
        self._push_all()

    def pending(self) -> int:
        return len(self.requests)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered + self.requests.held

    # -- messages ------------------------------------------------------------------

    def _on_request(self, msg: McMessage) -> None:
        if msg.expects_no_reply and not msg.is_binary:
            self._emit(msg, None)  # noreply: the server stays silent
            return
        if msg.command.is_quit and (not msg.is_binary or msg.opcode == codes.OP_QUITQ):
            self._emit(msg, None)
            return
        for old in self.requests.push(msg):
            self._emit_alone(old)

    def _on_reply(self, msg: McMessage) -> None:
        partial = self.partial
        if partial is not None:
            merged = merge_replies(partial, msg, self.max_values)
            if merged is not None:
                msg = merged
            else:
                self.partial = None
                self._correlate(partial)
        if not msg.done:
            self.partial = msg
            return
        self.partial = None
        self._correlate(msg)

    def _correlate(self, reply: McMessage) -> None:
        requests = self.requests
        while requests:
            request = requests.pop()
            assert request is not None
            if request.is_binary == reply.is_binary and (
                    not request.is_binary or (request.opaque == reply.opaque and request.opcode == reply.opcode)):
                self._emit(request, reply)
                return
            self._emit_alone(request)
        self.counters["unmatched_responses"] += 1
        self._emit(None, reply, (NOTE_NO_REQUEST,))

    def _emit_alone(self, request: McMessage) -> None:
        """A request passed over by a later reply: quiet ones simply got none."""
        if request.is_binary and not request.quiet:
            self.counters["unmatched_requests"] += 1
            self._emit(request, None, (NOTE_NON_QUIET_RESPONSE_ONLY,))
        else:
            self._emit(request, None)

    def _emit(self, request: McMessage | None, reply: McMessage | None, notes: tuple[str, ...] = ()) -> None:
        self.ctx.emit(build_transaction(self.ctx.conn, request, reply, notes))

    # -- loss and expiry --------------------------------------------------------------

    def _push_all(self) -> None:
        if self.partial is not None:
            partial, self.partial = self.partial, None
            self._correlate(partial)
        for request in self.requests.drain():
            if request.quiet or request.noreply:
                self._emit(request, None)
            else:
                self.counters["unfinished_transactions"] += 1
                self._emit(request, None, (NOTE_UNFINISHED,))

    def lose_sync(self, lost: Direction) -> None:
        """Publish what is pending and start over; the direction that lost bytes resyncs on a later segment."""
        self._push_all()
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            if direction is lost or not self.parsers[direction].idle:
                self.resync.lose(direction)
            self.parsers[direction].reset()


# -- UDP -----------------------------------------------------------------------------------


class _Gathering:
    """The datagrams of one message."""

    __slots__ = ("count", "datagrams", "done", "size")

    def __init__(self, count: int) -> None:
        self.count = count
        self.datagrams: dict[int, bytes] = {}
        self.done = False
        self.size = 0


class _UdpExchange:
    __slots__ = ("conn", "parts", "request", "response", "ts_ns")

    def __init__(self, conn: ConnectionInfo, ts_ns: int) -> None:
        self.conn = conn
        self.ts_ns = ts_ns
        self.parts: list[_Gathering | None] = [None, None]
        self.request: McMessage | None = None
        self.response: McMessage | None = None


_UdpKey = tuple[Endpoint, Endpoint, int]


class MemcacheUdp:
    """Every memcache UDP exchange, keyed by client, server and request id."""

    def __init__(self, config: MemcacheConfig, emit: Emit, counters: Counters) -> None:
        self.emit = emit
        self.counters = counters
        self.options = config.parser_options()
        self.timeout_ns = int(config.udptransactiontimeout * 1e9)
        self.exchanges: OrderedDict[_UdpKey, _UdpExchange] = OrderedDict()

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        header = parse_udp_header(data, direction)
        key = (conn.client, conn.server, header.request_id)
        exchange = self.exchanges.get(key)
        if exchange is None:
            exchange = _UdpExchange(conn, ts_ns)
            self.exchanges[key] = exchange
            while len(self.exchanges) > MAX_UDP_TRANSACTIONS:
                self.counters["udp_table_overflow"] += 1
                _, old = self.exchanges.popitem(last=False)
                self._publish(old)
        part = exchange.parts[direction]
        if part is None:
            part = exchange.parts[direction] = _Gathering(header.count)
        elif part.count != header.count:
            # The datagram count changed within a message: the exchange is garbled.
            self.counters["udp_dropped_messages"] += 1
            del self.exchanges[key]
            raise ParseError("memcache", direction, 4, "number of datagrams changed within a message")
        if part.done or header.seq in part.datagrams:
            self.counters["udp_duplicates"] += 1
            return
        body = data[UDP_HEADER_SIZE:]
        part.size += len(body)
        if part.size > MAX_UDP_MESSAGE_BYTES:
            self.counters["udp_oversized"] += 1
            del self.exchanges[key]
            return
        part.datagrams[header.seq] = body
        if len(part.datagrams) < part.count:
            return
        part.done = True
        payload = b"".join(part.datagrams[i] for i in range(part.count))
        part.datagrams = {}
        try:
            msg = parse_udp_message(payload, direction, ts_ns, self.options)
        except ParseError:
            self.counters["udp_dropped_messages"] += 1
            del self.exchanges[key]
            raise
        if msg.is_request:
            exchange.request = msg
            if msg.expects_no_reply or (msg.command.is_quit and (not msg.is_binary or msg.opcode == codes.OP_QUITQ)):
                del self.exchanges[key]
                self.emit(build_transaction(exchange.conn, msg, None))
                return
        else:
            exchange.response = msg
        if exchange.request is not None and exchange.response is not None:
            del self.exchanges[key]
            self.emit(build_transaction(exchange.conn, exchange.request, exchange.response))

    def tick(self, now_ns: int) -> None:
        deadline = now_ns - self.timeout_ns
        exchanges = self.exchanges
        while exchanges:
            key = next(iter(exchanges))
            exchange = exchanges[key]
            if exchange.ts_ns > deadline:
                break
            del exchanges[key]
            self._publish(exchange)

    def pending(self) -> int:
        return sum(1 for e in self.exchanges.values() if e.request is not None)

    def _publish(self, exchange: _UdpExchange) -> None:
        if exchange.request is None and exchange.response is None:
            self.counters["udp_dropped_messages"] += 1  # datagrams of a message never completed
            return
        request = exchange.request
        if request is not None and exchange.response is None and not (request.quiet or request.noreply):
            self.counters["unmatched_requests"] += 1
        elif request is None:
            self.counters["unmatched_responses"] += 1
        self.emit(build_transaction(exchange.conn, exchange.request, exchange.response))


SPEC = ProtocolSpec(
    name="memcache",
    config_class=MemcacheConfig,
    fields=FIELDS,
    tcp=MemcacheSession,
    udp=MemcacheUdp,
    description="memcache text and binary protocols over TCP and UDP",
    counters=COUNTERS,
)
