"""The transport dispatcher: packets in, protocol sessions fed.

It owns the TCP connection table, the UDP/ICMP handlers and IP fragment
reassembly.  A protocol is chosen by port, source port first and then
destination port (as Packetbeat does); the side whose port matched is the
server unless a SYN says otherwise.  Packets that came out of a tunnel are
keyed by their tunnel too: the same addresses and ports in two VXLAN
segments are two conversations.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

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
from agent.transport.ipfrag import FRAGMENT_COUNTERS, FragmentLimits, FragmentReassembler
from agent.transport.session import DatagramBinding, ParseError, StreamBinding
from agent.transport.tcp import TCP_COUNTERS, StreamReassembler, TcpConnection, TcpLimits, seq_diff
from agent.transport.types import ConnectionInfo, Direction, Endpoint

log = logging.getLogger("pktbeat.transport")

UDP_COUNTERS = ("datagrams", "bytes", "empty", "unclaimed", "parse_errors", "internal_errors")
UDP_ROUTE_CACHE = 65536  # 4-tuples whose protocol, direction and endpoints are remembered


class Dispatcher:
    def __init__(
        self,
        tcp_ports: Mapping[int, StreamBinding],
        udp_ports: Mapping[int, DatagramBinding],
        icmp: DatagramBinding | None = None,
        tcp_limits: TcpLimits | None = None,
        fragment_limits: FragmentLimits | None = None,
        decapsulate: Callable[[Packet], Packet | None] | None = None,
    ) -> None:
        self.tcp_ports = dict(tcp_ports)
        self.udp_ports = dict(udp_ports)
        self.icmp = icmp
        # Opens a reassembled datagram that carries a tunnel (FrameDecoder.reassembled), when tunnels are on.
        self.decapsulate = decapsulate
        self.tcp_limits = tcp_limits or TcpLimits()
        self.tcp_counters = metrics.register("tcp", TCP_COUNTERS)
        self.udp_counters = metrics.register("udp", UDP_COUNTERS)
        self.reassembler = StreamReassembler(self.tcp_counters, self.tcp_limits)
        self.fragments = FragmentReassembler(metrics.register("ip_fragments", FRAGMENT_COUNTERS),
                                             fragment_limits)
        # Both directions' keys map to the same connection; the LRU order
        # (least recently active first) drives expiry and eviction.
        # Keys are (src, sport, dst, dport), plus the tunnel's zone for decapsulated packets.
        self._conns: dict[tuple[object, ...], tuple[TcpConnection, Direction]] = {}
        self._lru: OrderedDict[int, tuple[tuple[object, ...], TcpConnection]] = OrderedDict()
        self._next_conn_id = 1
        self._udp_routes: dict[tuple[object, ...], tuple[DatagramBinding, Direction, ConnectionInfo]] = {}
        self._min_timeout_ns = min((b.timeout_ns for b in self.tcp_ports.values()), default=10**10)
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
                self._lru.move_to_end(conn.conn_id)
        if entry is None:
            if not payload and not missing and not flags & (TCP_SYN | TCP_FIN):
                return  # a pure ACK (or RST) of a connection we do not follow
            opened = self._open(ts_ns, key, src, dst, sport, dport, flags, family, tunnel)
            if opened is None:
                return
            conn, direction = opened
        if flags & TCP_ACK and conn.streams[1 - direction].ooo:
            self.reassembler.acknowledged(conn, direction.other, ack, ts_ns)
        if payload or missing or flags & (TCP_SYN | TCP_FIN | TCP_RST):
            self.reassembler.segment(conn, direction, seq, flags, payload, missing, ts_ns)

    def _open(self, ts_ns: int, key: tuple[object, ...], src: bytes, dst: bytes, sport: int, dport: int, flags: int,
              family: int, tunnel: TunnelInfo | None) -> tuple[TcpConnection, Direction] | None:
        binding = self.tcp_ports.get(sport)
        server_is_src = binding is not None
        if binding is None:
            binding = self.tcp_ports.get(dport)
            if binding is None:
                return None
        if flags & TCP_SYN:
            # The SYN's sender is the client, whatever the ports say.
            server_is_src = bool(flags & TCP_ACK)
        source, destination = Endpoint(src, sport), Endpoint(dst, dport)
        client, server = (destination, source) if server_is_src else (source, destination)
        if tunnel is not None and server_is_src:
            tunnel = tunnel.reversed()  # seen from the client
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        info = ConnectionInfo(client, server, family, "tcp", conn_id, tunnel)
        if len(self._lru) >= self.tcp_limits.max_connections:
            self._evict_oldest(ts_ns)
        session = binding.new_session(info)
        conn = TcpConnection(info, binding.protocol, session, binding.timeout_ns, ts_ns)
        rkey = _reverse(key)
        # Each direction's key maps to the connection and the way its packets go.
        if key == rkey:  # a socket talking to itself: everything counts as a request, as before
            forward = (conn, Direction.TO_SERVER)
        else:
            forward = (conn, Direction.TO_CLIENT if server_is_src else Direction.TO_SERVER)
            self._conns[rkey] = (conn, forward[1].other)
        self._conns[key] = forward
        self._lru[conn_id] = (key, conn)
        self.tcp_counters["connections"] += 1
        return forward

    def _close(self, conn: TcpConnection) -> None:
        entry = self._lru.pop(conn.conn_id, None)
        if entry is None:
            return
        key = entry[0]
        self._conns.pop(key, None)
        self._conns.pop(_reverse(key), None)
        self.reassembler.flush_all(conn, conn.last_ns)
        self.reassembler.forget(conn)
        try:
            conn.session.expire(conn.last_ns)
        except ParseError:
            self.tcp_counters["parse_errors"] += 1
        except Exception:
            self.tcp_counters["internal_errors"] += 1
            log.exception("bug in the %s parser while expiring a connection", conn.protocol)

    def _evict_oldest(self, now_ns: int) -> None:
        self.expire(now_ns)
        while len(self._lru) >= self.tcp_limits.max_connections:
            _, (_, conn) = next(iter(self._lru.items()))
            self.tcp_counters["connections_evicted"] += 1
            self._close(conn)

    def _udp(self, pkt: Packet) -> None:
        counters = self.udp_counters
        tunnel = pkt.tunnel
        key: tuple[object, ...] = ((pkt.src, pkt.sport, pkt.dst, pkt.dport) if tunnel is None
                                   else (pkt.src, pkt.sport, pkt.dst, pkt.dport, tunnel.zone))
        route = self._udp_routes.get(key)
        if route is None:
            route = self._udp_route(pkt)
            if route is None:
                counters["unclaimed"] += 1
                return
            if len(self._udp_routes) >= UDP_ROUTE_CACHE:
                self._udp_routes.clear()
            self._udp_routes[key] = route
        if not pkt.payload:
            counters["empty"] += 1
            return
        counters["datagrams"] += 1
        counters["bytes"] += len(pkt.payload)
        binding, direction, conn = route
        self._datagram(binding, direction, conn, pkt.payload, pkt.ts_ns)

    def _udp_route(self, pkt: Packet) -> tuple[DatagramBinding, Direction, ConnectionInfo] | None:
        """Which protocol, which way, which endpoints: the same for every datagram of a 4-tuple."""
        tunnel = pkt.tunnel
        binding = self.udp_ports.get(pkt.sport)
        if binding is not None:
            direction = Direction.TO_CLIENT
            client, server = Endpoint(pkt.dst, pkt.dport), Endpoint(pkt.src, pkt.sport)
            if tunnel is not None:
                tunnel = tunnel.reversed()  # seen from the client
        else:
            binding = self.udp_ports.get(pkt.dport)
            if binding is None:
                return None
            direction = Direction.TO_SERVER
            client, server = Endpoint(pkt.src, pkt.sport), Endpoint(pkt.dst, pkt.dport)
        return binding, direction, ConnectionInfo(client, server, pkt.family, "udp", 0, tunnel)

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
        return len(self._lru)


def _reverse(key: tuple[object, ...]) -> tuple[object, ...]:
    """The key of the other direction: (dst, dport, src, sport[, zone])."""
    return (key[2], key[3], key[0], key[1], *key[4:])
