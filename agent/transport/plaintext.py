"""TLS plaintext streams: what applications gave to, or got from, their TLS library, fed to protocol sessions.

The kernel (bpf/tls.bpf.c) sends the plaintext of each SSL call with the
local socket's addresses, the direction (sent or received), which end the
local process is (client or server: the end whose port is a plaintext port
is the server) and the position of the bytes in that direction's stream.
Here each connection gets a session of the protocol that decodes its server
port, made by the same `StreamBinding` the dispatcher uses for wire payload,
and is fed through the same session interface: bytes in order per
direction, lost bytes (a full ring, a call larger than the kernel copies)
as a gap of that many bytes, the end of the SSL object as FIN both ways.

One connection, one source.  The first library stream (process, SSL object)
seen for a connection is the one decoded; another one, the other end of a
connection whose two ends are both traced, is counted (`other_side`) and
ignored.  The kernel already drops the server's side when the client is
traced, so the events of such a connection are the client's.

Connections are keyed by (client, server) endpoints, without the network
namespace: the two ends of a connection between namespaces, and the wire
packets the dispatcher sees, name it the same way.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent import metrics
from agent.capture.tlsrecord import F_LAST_CHUNK, ROLE_CLIENT, SENT, PlaintextRecord
from agent.transport.session import NullSession, ParseError, StreamBinding, StreamSession
from agent.transport.types import ConnectionInfo, Direction, Endpoint

log = logging.getLogger("pktbeat.transport")

PLAINTEXT_COUNTERS = (
    "records",
    "bytes",
    "connections",
    "connections_evicted",
    "connections_expired",
    "closed",
    "unrouted",
    "other_side",
    "gaps",
    "gap_bytes",
    "overlaps_trimmed",
    "parse_errors",
    "internal_errors",
)
FIRST_CONN_ID = 1 << 40  # above any wire connection's id in the same worker

ConnKey = tuple[bytes, int, bytes, int]  # client ip, client port, server ip, server port


@dataclass(frozen=True, slots=True)
class PlaintextLimits:
    max_connections: int = 16384  # connections followed at once; the least recently active is closed first


class PlainConnection:
    __slots__ = ("info", "key", "last_ns", "next_offset", "protocol", "session", "source", "timeout_ns")

    def __init__(self, key: ConnKey, info: ConnectionInfo, binding: StreamBinding, source: tuple[int, int],
                 ts_ns: int) -> None:
        self.key = key
        self.info = info
        self.protocol = binding.protocol
        self.session: StreamSession = binding.new_session(info)
        self.timeout_ns = binding.timeout_ns
        self.source = source  # (tgid, SSL object): the one library stream decoded
        self.next_offset = [0, 0]  # by Direction: the next byte expected
        self.last_ns = ts_ns


class PlaintextStreams:
    """Every TLS connection whose plaintext a worker decodes."""

    def __init__(self, bindings: Mapping[int, StreamBinding], limits: PlaintextLimits | None = None,
                 counters: metrics.Counters | None = None) -> None:
        self.bindings = dict(bindings)  # server port -> protocol
        self.limits = limits or PlaintextLimits()
        self.counters = counters if counters is not None else metrics.register("tls_plaintext", PLAINTEXT_COUNTERS)
        self._conns: OrderedDict[ConnKey, PlainConnection] = OrderedDict()  # least recently active first
        self._next_id = FIRST_CONN_ID

    def __len__(self) -> int:
        return len(self._conns)

    def record(self, rec: PlaintextRecord) -> None:
        """One record of the kernel, its timestamp already on the wall clock."""
        local, remote = Endpoint(rec.laddr, rec.lport), Endpoint(rec.raddr, rec.rport)
        client_side = rec.role == ROLE_CLIENT
        client, server = (local, remote) if client_side else (remote, local)
        key = (client.ip, client.port, server.ip, server.port)
        source = (rec.tgid, rec.ssl)
        conn = self._conns.get(key)
        if conn is not None and conn.source != source:
            if not rec.closed:
                self.counters["other_side"] += 1
            return
        if rec.closed:
            if conn is not None:
                self.counters["closed"] += 1
                self._close(conn, rec.ts_ns)
            return
        if conn is None:
            conn = self._open(key, client, server, rec.family, source, rec.ts_ns)
            if conn is None:
                return
        else:
            conn.last_ns = rec.ts_ns
            self._conns.move_to_end(key)
        direction = Direction.TO_SERVER if (rec.direction == SENT) == client_side else Direction.TO_CLIENT
        self._data(conn, direction, rec)

    def _open(self, key: ConnKey, client: Endpoint, server: Endpoint, family: int, source: tuple[int, int],
              ts_ns: int) -> PlainConnection | None:
        binding = self.bindings.get(server.port)
        if binding is None:
            self.counters["unrouted"] += 1
            return None
        if len(self._conns) >= self.limits.max_connections:
            _, oldest = next(iter(self._conns.items()))
            self.counters["connections_evicted"] += 1
            self._close(oldest, oldest.last_ns)
        info = ConnectionInfo(client, server, family, "tcp", self._next_id)
        self._next_id += 1
        conn = PlainConnection(key, info, binding, source, ts_ns)
        self._conns[key] = conn
        self.counters["connections"] += 1
        return conn

    def _data(self, conn: PlainConnection, direction: Direction, rec: PlaintextRecord) -> None:
        counters = self.counters
        counters["records"] += 1
        data = rec.data
        expected = conn.next_offset[direction]
        if rec.offset > expected:
            self._gap(conn, direction, rec.offset - expected, rec.ts_ns)
        elif rec.offset < expected:  # cannot happen with one writer per SSL object; never feed a byte twice
            cut = expected - rec.offset
            if cut >= len(data):
                return
            counters["overlaps_trimmed"] += 1
            data = data[cut:]
        end = rec.offset + len(rec.data)
        if data:
            self._feed(conn, direction, data, rec.ts_ns)
        if rec.flags & F_LAST_CHUNK and rec.missing:
            self._gap(conn, direction, rec.missing, rec.ts_ns)
            end += rec.missing
        conn.next_offset[direction] = max(end, expected)

    # -- time and the end ----------------------------------------------------------------

    def expire(self, now_ns: int) -> None:
        """Close connections idle past their protocol's transaction_timeout."""
        stale = []
        for conn in self._conns.values():
            if conn.last_ns + conn.timeout_ns > now_ns:
                break  # the rest were active more recently
            stale.append(conn)
        for conn in stale:
            self.counters["connections_expired"] += 1
            self._close(conn, now_ns)

    def close_all(self, now_ns: int) -> None:
        for conn in list(self._conns.values()):
            self._close(conn, now_ns)

    def pending(self) -> int:
        total = 0
        for conn in self._conns.values():
            try:
                total += conn.session.pending()
            except Exception:
                pass
        return total

    def _close(self, conn: PlainConnection, ts_ns: int) -> None:
        if self._conns.pop(conn.key, None) is None:
            return
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            self._fin(conn, direction, ts_ns)
        try:
            conn.session.expire(ts_ns)
        except ParseError:
            self.counters["parse_errors"] += 1
        except Exception:
            self._internal_error(conn, "expire")

    # -- the error boundary, as the TCP layer's ----------------------------------------------

    def _feed(self, conn: PlainConnection, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.counters["bytes"] += len(data)
        self._guarded(conn, "feed", direction, ts_ns, lambda: conn.session.feed(direction, data, ts_ns))

    def _gap(self, conn: PlainConnection, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        self.counters["gap_bytes"] += nbytes
        self._guarded(conn, "gap", direction, ts_ns, lambda: conn.session.gap(direction, nbytes, ts_ns))

    def _fin(self, conn: PlainConnection, direction: Direction, ts_ns: int) -> None:
        self._guarded(conn, "fin", direction, ts_ns, lambda: conn.session.fin(direction, ts_ns))

    def _guarded(self, conn: PlainConnection, where: str, direction: Direction, ts_ns: int,
                 call: Callable[[], None]) -> None:
        try:
            call()
        except ParseError as exc:
            self.counters["parse_errors"] += 1
            log.debug("%s %s (TLS plaintext): %s", conn.protocol, conn.info.client, exc)
            try:
                conn.session.recover(direction, exc, ts_ns)
            except Exception:
                self._internal_error(conn, "recover")
        except Exception:
            self._internal_error(conn, where)

    def _internal_error(self, conn: PlainConnection, where: str) -> None:
        self.counters["internal_errors"] += 1
        log.exception("bug in the %s parser (%s, TLS plaintext); its connection state is dropped", conn.protocol,
                      where)
        conn.session = NullSession()
