"""The transport dispatcher: packets in, protocol sessions fed.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

It owns the TCP connection table, the UDP/ICMP handlers and IP fragment
reassembly.  A protocol is chosen by port, source port first and then
destination port (as Packetbeat does); the side whose port matched is the
server unless a SYN says otherwise.  Packets that came out of a tunnel are
keyed by their tunnel too: the same addresses and ports in two VXLAN
segments are two conversations.

TCP state is bounded four ways (`TcpLimits`, each drop counted): a
connection without payload is only a half-open record (halfopen.py) under its
own cap; connections with payload have theirs; the bytes that reordering
buffers and parsers hold for unfinished messages have one cap across all
connections (`max_buffered`: the sessions idle longest drop their partial
messages first); and an estimate of everything together has a budget
(`memory_budget`: the state idle longest is shed first).

A connection may change protocol part-way (`HandOvers`, see
agent/transport/session.py): the protocols it can be handed over to are
every protocol with a TCP binding, whatever its ports.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from agent import metrics
from agent.capture.packet import (
    F_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Packet,
)
from agent.capture.tunnel import TunnelInfo
from agent.transport.halfopen import HalfOpen, HalfOpenTable, Key
from agent.transport.ipfrag import FRAGMENT_COUNTERS, FragmentLimits, FragmentReassembler
from agent.transport.session import DatagramBinding, HandOvers, ParseError, StreamBinding
from agent.transport.tcp import TCP_COUNTERS, StreamReassembler, TcpConnection, TcpLimits, seq_diff
from agent.transport.types import ConnectionInfo, Direction, Endpoint

log: Final = logging.getLogger("pktbeat.transport")

SHED_REASON: Final = "partial message dropped: the worker's TCP buffers are full (packetbeat.tcp.max_buffered)"

UDP_COUNTERS: Final = ("datagrams", "bytes", "empty", "unclaimed", "parse_errors", "internal_errors")
UDP_ROUTE_CACHE = 65536  # 4-tuples whose protocol, direction and endpoints are remembered

# What `memory_budget` charges per entry, beside the bytes sessions report holding: measured with
# tracemalloc (bench/tcp_flood_bench.py --costs).  A connection with its session costs from 2.7 KB
# (MongoDB) to 5.5 KB (HTTP); a half-open one about 330 bytes with its two addresses.
CONNECTION_COST: Final = 5632
HALF_OPEN_COST: Final = 400
# Sessions are asked what they hold after this many bytes were fed to them (at most; a smaller
# max_buffered audits more often), and at every expiry tick.
AUDIT_BYTES: Final = 1024 * 1024
# Shedding for max_buffered goes down to this fraction of it, so that it does not run at every audit.
SHED_TARGET: Final = 0.75


class Dispatcher:
    def __init__(
        self,
        tcp_ports: Mapping[int, StreamBinding],
        udp_ports: Mapping[int, DatagramBinding],
        icmp: DatagramBinding | None = None,
        tcp_limits: TcpLimits | None = None,
        fragment_limits: FragmentLimits | None = None,
        decapsulate: Callable[[Packet], Packet | None] | None = None,
        hand_overs: HandOvers | None = None,
        stream_protocols: Mapping[str, StreamBinding] | None = None,
    ) -> None:
        self.tcp_ports = dict(tcp_ports)
        self.udp_ports = dict(udp_ports)
        self.icmp = icmp
        # Opens a reassembled datagram that carries a tunnel (FrameDecoder.reassembled), when tunnels are on.
        self.decapsulate = decapsulate
        self.tcp_limits = tcp_limits or TcpLimits()
        self.tcp_counters = metrics.register("tcp", TCP_COUNTERS)
        self.udp_counters = metrics.register("udp", UDP_COUNTERS)
        # The protocols a session may hand its connection to: the port bindings, and those bound to no port.
        protocols = {b.protocol: b for b in self.tcp_ports.values()}
        protocols.update(stream_protocols or {})
        self.hand_overs = hand_overs if hand_overs is not None else HandOvers()
        self.reassembler = StreamReassembler(self.tcp_counters, self.tcp_limits, self.hand_overs, protocols)
        self.fragments = FragmentReassembler(metrics.register("ip_fragments", FRAGMENT_COUNTERS),
                                             fragment_limits)
        # Both directions' keys map to the same connection; the LRU order
        # (least recently active first) drives expiry and eviction.
        # Keys are (src, sport, dst, dport), plus the tunnel's zone for decapsulated packets.
        self._conns: dict[tuple[object, ...], tuple[TcpConnection, Direction]] = {}
        self._lru: OrderedDict[int, tuple[tuple[object, ...], TcpConnection]] = OrderedDict()
        self._lru_newest = -1  # the connection last in _lru (most recently active)
        self._next_conn_id = 1
        self._half_open = HalfOpenTable(self.tcp_limits.max_half_open, self.tcp_counters)
        self._holders: dict[int, TcpConnection] = {}  # connections whose sessions held bytes at their last audit
        self._audit_bytes = max(4096, min(AUDIT_BYTES, self.tcp_limits.max_buffered // 16))
        self._udp_routes: dict[tuple[object, ...], tuple[DatagramBinding, Direction, ConnectionInfo]] = {}
        self._min_timeout_ns = min((b.timeout_ns for b in protocols.values()), default=10**10)
        self._datagram_handlers = list({id(b.handler): b for b in self.udp_ports.values()}.values())
        if icmp is not None:
            self._datagram_handlers.append(icmp)

    # -- packets -------------------------------------------------------------

    def handle(self, pkt: Packet) -> None:
        if pkt.flags & F_FRAGMENT:
            whole = self.fragments.add(pkt)
            if whole is None:
                return
            if self.decapsulate is not None:
                inner = self.decapsulate(whole)
                if inner is not None:  # a tunnel packet fragmented on the underlay
                    self.handle(inner)
                    return
            pkt = whole
        proto = pkt.l4proto
        if proto == IPPROTO_TCP:
            self.tcp(pkt.ts_ns, pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.tcp_flags, pkt.payload,
                     pkt.missing, pkt.family, pkt.tunnel)
        elif proto == IPPROTO_UDP:
            self._udp(pkt)
        elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and self.icmp is not None:
            transport = "icmp" if proto == IPPROTO_ICMP else "ipv6-icmp"
            conn = ConnectionInfo(Endpoint(pkt.src, 0), Endpoint(pkt.dst, 0), pkt.family, transport, 0, pkt.tunnel)
            self._datagram(self.icmp, Direction.TO_SERVER, conn, pkt.payload, pkt.ts_ns)

    def tcp(self, ts_ns: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
            payload: bytes, missing: int = 0, family: int = 4, tunnel: TunnelInfo | None = None) -> None:
        """One TCP segment, as fields: file replay calls this without building a Packet."""
        key: tuple[object, ...] = (src, sport, dst, dport) if tunnel is None else (src, sport, dst, dport, tunnel.zone)
        entry = self._conns.get(key)
        if entry is not None:
            conn, direction = entry
            if flags & TCP_SYN and not flags & TCP_ACK and all(s.closed for s in conn.streams):
                sender_next = conn.streams[direction].next_seq
                if sender_next is not None and seq_diff(seq, sender_next) < 0:
                    self.tcp_counters["retransmissions"] += 1  # a late duplicate of the old SYN
                    return
                self._close(conn)  # the 4-tuple is reused by a new connection
                entry = None
            else:
                conn.last_ns = ts_ns
                if conn.conn_id != self._lru_newest:  # consecutive segments of one connection: already last
                    self._lru.move_to_end(conn.conn_id)
                    self._lru_newest = conn.conn_id
        if entry is None:
            half = self._half_open.find(key) if self._half_open.entries else None
            if not payload and not missing and not flags & TCP_FIN:
                self._without_payload(ts_ns, key, sport, dport, seq, flags, tunnel, half)
                return
            opened = self._open(ts_ns, key, src, dst, sport, dport, flags, family, tunnel, half)
            if opened is None:
                return
            conn, direction = opened
        if flags & TCP_ACK and conn.streams[1 - direction].ooo:
            self.reassembler.acknowledged(conn, direction.other, ack, ts_ns)
        if payload or missing or flags & (TCP_SYN | TCP_FIN | TCP_RST):
            self.reassembler.segment(conn, direction, seq, flags, payload, missing, ts_ns)
            if self.reassembler.unaudited >= self._audit_bytes:
                self.audit(ts_ns)

    def _binding(self, sport: int, dport: int, flags: int) -> tuple[StreamBinding, bool] | None:
        """The protocol of a new connection, and whether the segment's sender is the server."""
        binding = self.tcp_ports.get(sport)
        server_is_src = binding is not None
        if binding is None:
            binding = self.tcp_ports.get(dport)
            if binding is None:
                return None
        if flags & TCP_SYN:
            # The SYN's sender is the client, whatever the ports say.
            server_is_src = bool(flags & TCP_ACK)
        return binding, server_is_src

    def _without_payload(self, ts_ns: int, key: Key, sport: int, dport: int, seq: int, flags: int,
                         tunnel: TunnelInfo | None, half: tuple[Key, HalfOpen, bool] | None) -> None:
        """A SYN, SYN-ACK, ACK or RST of a connection that has carried no payload: the half-open table."""
        if half is not None:
            key, entry, from_client = half
            if flags & TCP_RST:
                self.tcp_counters["rst"] += 1
                self._half_open.pop(key)
                return
            if flags & TCP_SYN:
                if from_client:
                    if entry.client_isn < 0:
                        entry.client_isn = seq
                elif entry.server_isn < 0:
                    entry.server_isn = seq
            self._half_open.touch(key, entry, ts_ns)
            return
        if not flags & TCP_SYN:
            return  # a bare ACK (or RST) of a connection we do not follow
        found = self._binding(sport, dport, flags)
        if found is None:
            return
        binding, server_is_src = found
        if server_is_src:  # a SYN-ACK: its destination is the client
            entry = self._half_open.add(reverse_key(key), binding, ts_ns, tunnel.reversed() if tunnel else None)
            entry.server_isn = seq
        else:
            self._half_open.add(key, binding, ts_ns, tunnel).client_isn = seq
        self.tcp_counters["connections"] += 1
        if self._estimate() > self.tcp_limits.memory_budget:
            self._shed_memory()

    def _open(self, ts_ns: int, key: Key, src: bytes, dst: bytes, sport: int, dport: int, flags: int, family: int,
              tunnel: TunnelInfo | None, half: tuple[Key, HalfOpen, bool] | None = None
              ) -> tuple[TcpConnection, Direction] | None:
        """A connection's first segment with payload (or FIN): its session starts now."""
        if half is not None:
            self._half_open.pop(half[0])
            binding, server_is_src, tunnel = half[1].binding, not half[2], half[1].tunnel
        else:
            found = self._binding(sport, dport, flags)
            if found is None:
                return None
            binding, server_is_src = found
            self.tcp_counters["connections"] += 1
            if tunnel is not None and server_is_src:
                tunnel = tunnel.reversed()  # seen from the client
        source, destination = Endpoint(src, sport), Endpoint(dst, dport)
        client, server = (destination, source) if server_is_src else (source, destination)
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        info = ConnectionInfo(client, server, family, "tcp", conn_id, tunnel)
        if len(self._lru) >= self.tcp_limits.max_connections:
            self._evict_oldest(ts_ns)
        session = binding.new_session(info)
        conn = TcpConnection(info, binding.protocol, session, binding.timeout_ns, ts_ns)
        if half is not None:
            # The handshake seen so far: the data that follows it is in order, not mid-stream.
            if half[1].client_isn >= 0:
                conn.streams[Direction.TO_SERVER].next_seq = (half[1].client_isn + 1) & 0xFFFFFFFF
            if half[1].server_isn >= 0:
                conn.streams[Direction.TO_CLIENT].next_seq = (half[1].server_isn + 1) & 0xFFFFFFFF
        rkey = reverse_key(key)
        # Each direction's key maps to the connection and the way its packets go.
        if key == rkey:  # a socket talking to itself: everything counts as a request, as before
            forward = (conn, Direction.TO_SERVER)
        else:
            forward = (conn, Direction.TO_CLIENT if server_is_src else Direction.TO_SERVER)
            self._conns[rkey] = (conn, forward[1].other)
        self._conns[key] = forward
        self._lru[conn_id] = (key, conn)
        self._lru_newest = conn_id
        if self._estimate() > self.tcp_limits.memory_budget:
            self._shed_memory()
        return forward

    def _close(self, conn: TcpConnection) -> None:
        entry = self._lru.pop(conn.conn_id, None)
        if entry is None:
            return
        key = entry[0]
        self._conns.pop(key, None)
        self._conns.pop(reverse_key(key), None)
        self.reassembler.flush_all(conn, conn.last_ns)
        self.reassembler.forget(conn)
        self._holders.pop(conn.conn_id, None)
        try:
            conn.session.expire(conn.last_ns)
        except ParseError:
            self.tcp_counters["parse_errors"] += 1
        except Exception:
            self.tcp_counters["internal_errors"] += 1
            log.exception("bug in the %s parser while expiring a connection", conn.protocol)
        self.hand_overs.take(conn.info)  # a connection going away is not handed over

    def _evict_oldest(self, now_ns: int) -> None:
        self.expire(now_ns)
        while len(self._lru) >= self.tcp_limits.max_connections:
            _, (_, conn) = next(iter(self._lru.items()))
            self.tcp_counters["connections_evicted"] += 1
            self._close(conn)

    def _udp(self, pkt: Packet) -> None:
        counters = self.udp_counters
        tunnel = pkt.tunnel
        # Each attribute read once: a Packet is an interpreted object, every read a dictionary-backed lookup.
        src, sport, dst, dport, payload = pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.payload
        key: tuple[object, ...] = ((src, sport, dst, dport) if tunnel is None
                                   else (src, sport, dst, dport, tunnel.zone))
        routes = self._udp_routes
        route = routes.get(key)
        if route is None:
            route = self._udp_route(src, sport, dst, dport, pkt.family, tunnel)
            if route is None:
                counters["unclaimed"] += 1
                return
            if len(routes) >= UDP_ROUTE_CACHE - 1:
                routes.clear()
            routes[key] = route
            if route[1] is Direction.TO_SERVER and tunnel is None:
                # The answer's route, decided now: its source port is the bound one, so it goes TO_CLIENT
                # between the same client and server (a resolver sees a new client port per query).
                reply_key = (dst, dport, src, sport)
                if reply_key not in routes:
                    routes[reply_key] = (route[0], Direction.TO_CLIENT, route[2])
        if not payload:
            counters["empty"] += 1
            return
        counters["datagrams"] += 1
        counters["bytes"] += len(payload)
        binding, direction, conn = route
        self._datagram(binding, direction, conn, payload, pkt.ts_ns)

    def _udp_route(self, src: bytes, sport: int, dst: bytes, dport: int, family: int, tunnel: TunnelInfo | None
                   ) -> tuple[DatagramBinding, Direction, ConnectionInfo] | None:
        """Which protocol, which way, which endpoints: the same for every datagram of a 4-tuple."""
        binding = self.udp_ports.get(sport)
        if binding is not None:
            direction = Direction.TO_CLIENT
            client, server = Endpoint(dst, dport), Endpoint(src, sport)
            if tunnel is not None:
                tunnel = tunnel.reversed()  # seen from the client
        else:
            binding = self.udp_ports.get(dport)
            if binding is None:
                return None
            direction = Direction.TO_SERVER
            client, server = Endpoint(src, sport), Endpoint(dst, dport)
        return binding, direction, ConnectionInfo(client, server, family, "udp", 0, tunnel)

    def _datagram(self, binding: DatagramBinding, direction: Direction, conn: ConnectionInfo, data: bytes,
                  ts_ns: int) -> None:
        try:
            binding.handler.datagram(direction, conn, data, ts_ns)
        except ParseError as exc:
            self.udp_counters["parse_errors"] += 1
            log.debug("%s: %s", binding.protocol, exc)
        except Exception:
            self.udp_counters["internal_errors"] += 1
            log.exception("bug in the %s parser; the datagram is dropped", binding.protocol)

    # -- time ------------------------------------------------------------------

    def expire(self, now_ns: int) -> None:
        """Close TCP connections idle past their protocol's transaction_timeout; tick handlers."""
        lru = self._lru
        horizon = now_ns - self._min_timeout_ns
        stale: list[TcpConnection] = []
        for _, conn in lru.values():
            if conn.last_ns > horizon:
                break
            if conn.last_ns + conn.timeout_ns <= now_ns:
                stale.append(conn)
        for conn in stale:
            self._close(conn)
        self._half_open.expire(now_ns, self._min_timeout_ns)
        self.audit(now_ns)
        for binding in self._datagram_handlers:
            try:
                binding.handler.tick(now_ns)
            except Exception:
                self.udp_counters["internal_errors"] += 1
                log.exception("bug in the %s handler's timer", binding.protocol)
        self.fragments.expire(now_ns)

    def flush_reordering(self, now_ns: int) -> None:
        """End of input: what waits behind a hole is delivered after a gap, as no more packets will come."""
        for _, conn in list(self._lru.values()):
            self.reassembler.flush_all(conn, now_ns)

    def pending(self) -> int:
        """Requests still waiting for a response, in every session and handler."""
        total = 0
        for _, conn in self._lru.values():
            try:
                total += conn.session.pending()
            except Exception:
                pass
        for binding in self._datagram_handlers:
            try:
                total += binding.handler.pending()
            except Exception:
                pass
        return total

    def close_all(self, now_ns: int) -> None:
        """Expire every connection (shutdown of a live capture)."""
        for _, conn in list(self._lru.values()):
            self._close(conn)
        for binding in self._datagram_handlers:
            try:
                binding.handler.tick(now_ns + 10**15)
            except Exception:
                log.exception("bug in the %s handler's timer", binding.protocol)

    @property
    def connection_count(self) -> int:
        """Connections that carried payload (half_open_count: those that have not yet)."""
        return len(self._lru)

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    # -- memory ------------------------------------------------------------------

    def _estimate(self) -> int:
        """What the TCP state of this worker costs, as `memory_budget` counts it."""
        r = self.reassembler
        return (len(self._lru) * CONNECTION_COST + len(self._half_open) * HALF_OPEN_COST + r.held_total
                + r.ooo_total)

    def audit(self, now_ns: int) -> None:
        """Ask the sessions fed since the last audit what they hold; enforce max_buffered and the budget."""
        r = self.reassembler
        dirty = r.dirty
        r.dirty = []
        r.unaudited = 0
        lru = self._lru
        for conn in dirty:
            conn.dirty = False
            if conn.conn_id in lru:
                self._account(conn)
        if r.held_total + r.ooo_total > self.tcp_limits.max_buffered:
            self._shed_buffers(now_ns)
        if self._estimate() > self.tcp_limits.memory_budget:
            self._shed_memory()

    def _account(self, conn: TcpConnection) -> int:
        try:
            held = conn.session.buffered()
        except Exception:
            self.tcp_counters["internal_errors"] += 1
            log.exception("bug in the %s parser while counting its buffered bytes", conn.protocol)
            held = 0
        self.reassembler.held_total += held - conn.held
        conn.held = held
        if held:
            self._holders[conn.conn_id] = conn
        else:
            self._holders.pop(conn.conn_id, None)
        return held

    def _shed_buffers(self, now_ns: int) -> None:
        """Over max_buffered: the sessions idle longest drop their unfinished messages, counted."""
        r = self.reassembler
        target = int(self.tcp_limits.max_buffered * SHED_TARGET)
        for conn in sorted(self._holders.values(), key=lambda c: c.last_ns):
            if r.held_total + r.ooo_total <= target:
                return
            before = conn.held + sum(s.ooo_bytes for s in conn.streams)
            r.flush_all(conn, now_ns)
            for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
                r.recover(conn, direction, ParseError(conn.protocol, direction, 0, SHED_REASON), now_ns)
            self.tcp_counters["buffer_shed"] += 1
            if self._account(conn):
                self._close(conn)  # a session that cannot let go of its bytes goes with them
            self.tcp_counters["buffer_shed_bytes"] += before - conn.held

    def _shed_memory(self) -> None:
        """Over memory_budget: shed the state idle longest, half-open or not, until under it, counted."""
        budget = self.tcp_limits.memory_budget
        counters = self.tcp_counters
        while self._estimate() > budget:
            oldest_half = self._half_open.oldest_ns()
            conn = next(iter(self._lru.values()))[1] if self._lru else None
            if oldest_half is None and (conn is None or len(self._lru) == 1):
                return  # nothing left to shed but the connection being served
            if conn is None or (oldest_half is not None and oldest_half <= conn.last_ns):
                self._half_open.shed_oldest()
            else:
                self._close(conn)
            counters["memory_shed"] += 1


def reverse_key(key: Key) -> Key:
    """The key of the other direction: (dst, dport, src, sport[, zone])."""
    return (key[2], key[3], key[0], key[1], *key[4:])
