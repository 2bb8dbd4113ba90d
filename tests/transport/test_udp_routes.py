"""UDP datagrams' protocol, direction and endpoints, remembered per 4-tuple (the answer's with the query's)."""

from __future__ import annotations

import pytest

from agent import metrics
from agent.capture.packet import IPPROTO_UDP, Packet
from agent.transport import dispatcher as D
from agent.transport.session import DatagramBinding
from agent.transport.types import ConnectionInfo, Direction, ip_bytes

CLIENT, SERVER = ip_bytes("10.0.0.1"), ip_bytes("10.0.0.53")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[Direction, ConnectionInfo, bytes]] = []

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        self.seen.append((direction, conn, data))

    def tick(self, now_ns: int) -> None:
        pass

    def pending(self) -> int:
        return 0


def udp(src: bytes, sport: int, dst: bytes, dport: int, data: bytes = b"x") -> Packet:
    return Packet(1, 4, IPPROTO_UDP, src, dst, sport, dport, data)


def ends(conn: ConnectionInfo) -> tuple[bytes, int, bytes, int]:
    return conn.client.ip, conn.client.port, conn.server.ip, conn.server.port


def test_a_query_routes_its_answer_as_the_answer_alone_would_be() -> None:
    metrics.reset_for_tests()
    handler = Recorder()
    routed = D.Dispatcher({}, {53: DatagramBinding("dns", handler)})
    handler_alone = Recorder()
    alone = D.Dispatcher({}, {53: DatagramBinding("dns", handler_alone)})
    routed.handle(udp(CLIENT, 40000, SERVER, 53, b"query"))
    routed.handle(udp(SERVER, 53, CLIENT, 40000, b"answer"))
    alone.handle(udp(SERVER, 53, CLIENT, 40000, b"answer"))  # never saw the query
    (_, query_conn, _), (direction, answer_conn, _) = handler.seen
    [(alone_direction, alone_conn, _)] = handler_alone.seen
    assert (direction, answer_conn) == (alone_direction, alone_conn) == (Direction.TO_CLIENT, query_conn)
    assert ends(answer_conn) == (CLIENT, 40000, SERVER, 53)


def test_bound_ports_on_both_sides_keep_the_source_port_rule() -> None:
    metrics.reset_for_tests()
    handler = Recorder()
    dispatcher = D.Dispatcher({}, {53: DatagramBinding("dns", handler)})
    dispatcher.handle(udp(CLIENT, 53, SERVER, 53))  # resolver to resolver: the sender's port decides
    dispatcher.handle(udp(SERVER, 53, CLIENT, 53))
    assert [(d, ends(c)) for d, c, _ in handler.seen] == [(Direction.TO_CLIENT, (SERVER, 53, CLIENT, 53)),
                                                          (Direction.TO_CLIENT, (CLIENT, 53, SERVER, 53))]


def test_the_route_table_stays_within_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "UDP_ROUTE_CACHE", 4)
    metrics.reset_for_tests()
    handler = Recorder()
    dispatcher = D.Dispatcher({}, {53: DatagramBinding("dns", handler)})
    for port in range(40000, 40010):
        dispatcher.handle(udp(CLIENT, port, SERVER, 53))
        assert len(dispatcher._udp_routes) <= 4
    assert len(handler.seen) == 10
