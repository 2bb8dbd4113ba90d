"""TCP reassembly: ordering, retransmissions, overlaps, gaps, wrap-around, FIN/RST, mid-stream, limits."""

from __future__ import annotations

import random

import pytest

from agent import metrics
from agent.capture.packet import IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet
from agent.transport.dispatcher import Dispatcher
from agent.transport.session import ParseError, StreamBinding
from agent.transport.tcp import TcpLimits, seq_diff
from agent.transport.types import ConnectionInfo, Direction

C = bytes([10, 0, 0, 1])
S = bytes([10, 0, 0, 2])
CPORT, SPORT = 40000, 80


class Recorder:
    """A session that records what the transport layer tells it."""

    def __init__(self, conn: ConnectionInfo) -> None:
        self.conn = conn
        self.calls: list[tuple[str, Direction, object]] = []
        self.fail_on: bytes | None = None

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if self.fail_on is not None and self.fail_on in data:
            raise ParseError("test", direction, 0, "bad bytes")
        self.calls.append(("data", direction, data))

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.calls.append(("gap", direction, nbytes))

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self.calls.append(("fin", direction, None))

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.calls.append(("recover", direction, error.reason))

    def expire(self, ts_ns: int) -> None:
        self.calls.append(("expire", Direction.TO_SERVER, ts_ns))

    def pending(self) -> int:
        return 0

    def buffered(self) -> int:
        return 0

    def stream(self, direction: Direction) -> bytes:
        return b"".join(d for kind, dd, d in self.calls if kind == "data" and dd == direction)  # type: ignore[misc]


class Harness:
    def __init__(self, limits: TcpLimits | None = None, timeout_ns: int = 10**10) -> None:
        self.sessions: list[Recorder] = []
        binding = StreamBinding("test", timeout_ns, self._new)
        self.dispatcher = Dispatcher({SPORT: binding}, {}, tcp_limits=limits)

    def _new(self, conn: ConnectionInfo) -> Recorder:
        session = Recorder(conn)
        self.sessions.append(session)
        return session

    def c2s(self, seq: int, data: bytes = b"", flags: int = TCP_ACK | TCP_PSH, ts: int = 1, missing: int = 0) -> None:
        self.dispatcher.handle(Packet(ts, 4, IPPROTO_TCP, C, S, CPORT, SPORT, data, seq=seq, tcp_flags=flags,
                                      missing=missing))

    def s2c(self, seq: int, data: bytes = b"", flags: int = TCP_ACK | TCP_PSH, ts: int = 1) -> None:
        self.dispatcher.handle(Packet(ts, 4, IPPROTO_TCP, S, C, SPORT, CPORT, data, seq=seq, tcp_flags=flags))

    @property
    def session(self) -> Recorder:
        assert len(self.sessions) == 1, f"{len(self.sessions)} sessions"
        return self.sessions[0]


@pytest.fixture(autouse=True)
def _reset() -> None:
    metrics.reset_for_tests()


def test_seq_diff_wraps() -> None:
    assert seq_diff(5, 0xFFFFFFFB) == 10
    assert seq_diff(0xFFFFFFFB, 5) == -10
    assert seq_diff(100, 100) == 0


def test_in_order_segments_are_concatenated_and_directions_kept_apart() -> None:
    h = Harness()
    h.c2s(1000, flags=TCP_SYN)
    h.s2c(5000, flags=TCP_SYN | TCP_ACK)
    h.c2s(1001, b"GET / HTTP/1.1\r\n")
    h.c2s(1017, b"Host: x\r\n\r\n")
    h.s2c(5001, b"HTTP/1.1 200 OK\r\n")
    assert h.session.stream(Direction.TO_SERVER) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert h.session.stream(Direction.TO_CLIENT) == b"HTTP/1.1 200 OK\r\n"
    assert h.session.conn.client.port == CPORT and h.session.conn.server.port == SPORT


def test_syn_decides_client_even_when_ports_say_otherwise() -> None:
    h = Harness()
    # The server-side port sends the SYN: it is the client.
    h.s2c(7, flags=TCP_SYN)
    assert not h.sessions  # no payload yet: a half-open record, no session
    h.s2c(8, b"hello")
    assert h.session.conn.client.port == SPORT
    assert h.session.calls == [("data", Direction.TO_SERVER, b"hello")]


def test_retransmission_dropped_and_overlap_trimmed() -> None:
    h = Harness()
    h.c2s(100, b"abcdef")
    h.c2s(100, b"abcdef")  # full retransmission
    h.c2s(103, b"defghi")  # overlaps 3 bytes
    h.c2s(100, b"abcdefghijkl")  # covers everything seen plus 3 new bytes
    assert h.session.stream(Direction.TO_SERVER) == b"abcdefghijkl"
    counters = metrics.register("tcp")
    assert counters["retransmissions"] == 1
    assert counters["overlaps_trimmed"] == 2


def test_pure_ack_with_same_seq_is_ignored_then_data_accepted() -> None:
    h = Harness()
    h.c2s(100, b"ab")
    h.c2s(102, b"", flags=TCP_ACK)
    h.c2s(102, b"cd")
    assert h.session.stream(Direction.TO_SERVER) == b"abcd"


def test_out_of_order_within_the_window_is_reordered_without_gap() -> None:
    h = Harness()
    h.c2s(100, b"aaaa")
    h.c2s(108, b"cccc")
    h.c2s(112, b"dddd")
    h.c2s(104, b"bbbb")
    assert h.session.stream(Direction.TO_SERVER) == b"aaaabbbbccccdddd"
    assert not [c for c in h.session.calls if c[0] == "gap"]


def test_hole_becomes_a_gap_when_the_reordering_window_fills() -> None:
    h = Harness(TcpLimits(reorder_segments=3))
    h.c2s(100, b"aaaa")
    for i in range(4):  # 104..107 never arrive
        h.c2s(108 + 4 * i, bytes([65 + i]) * 4)
    calls = h.session.calls
    assert ("gap", Direction.TO_SERVER, 4) in calls
    assert h.session.stream(Direction.TO_SERVER) == b"aaaaAAAABBBBCCCCDDDD"
    # The gap is reported between the data before and after the hole.
    kinds = [c[0] for c in calls]
    assert kinds.index("gap") == 1


def test_gap_reported_on_fin_after_a_hole() -> None:
    h = Harness()
    h.c2s(100, b"aaaa")
    h.c2s(110, b"cc", flags=TCP_ACK | TCP_FIN)
    calls = h.session.calls
    assert calls == [("data", Direction.TO_SERVER, b"aaaa"), ("gap", Direction.TO_SERVER, 6),
                     ("data", Direction.TO_SERVER, b"cc"), ("fin", Direction.TO_SERVER, None)]


def test_sequence_wraparound() -> None:
    h = Harness()
    start = 0xFFFFFFF0
    h.c2s(start, b"x" * 16)
    h.c2s(0, b"y" * 16)
    h.c2s(start, b"x" * 16)  # old retransmission across the wrap
    assert h.session.stream(Direction.TO_SERVER) == b"x" * 16 + b"y" * 16


def test_fin_in_order_closes_direction_once() -> None:
    h = Harness()
    h.c2s(100, b"bye", flags=TCP_ACK | TCP_FIN)
    h.c2s(100, b"bye", flags=TCP_ACK | TCP_FIN)  # retransmitted FIN
    assert [c for c in h.session.calls if c[0] == "fin"] == [("fin", Direction.TO_SERVER, None)]


def test_rst_closes_both_directions() -> None:
    h = Harness()
    h.c2s(100, b"req")
    h.s2c(500, b"", flags=TCP_RST)
    fins = {c[1] for c in h.session.calls if c[0] == "fin"}
    assert fins == {Direction.TO_SERVER, Direction.TO_CLIENT}


def test_connection_first_seen_mid_stream() -> None:
    h = Harness()
    h.c2s(123456, b"partial body")
    h.c2s(123468, b"GET / HTTP/1.1\r\n")
    assert h.session.stream(Direction.TO_SERVER) == b"partial bodyGET / HTTP/1.1\r\n"
    assert metrics.register("tcp")["midstream"] == 1


def test_truncated_packet_reports_the_missing_bytes_as_gap() -> None:
    h = Harness()
    h.c2s(100, b"head", missing=96)
    h.c2s(200, b"next")
    assert h.session.calls == [("data", Direction.TO_SERVER, b"head"), ("gap", Direction.TO_SERVER, 96),
                               ("data", Direction.TO_SERVER, b"next")]


def test_parse_error_asks_the_session_to_recover_and_continues() -> None:
    h = Harness()
    h.c2s(100, b"ok")
    h.session.fail_on = b"BAD"
    h.c2s(102, b"BAD")
    h.c2s(105, b"fine")
    assert ("recover", Direction.TO_SERVER, "bad bytes") in h.session.calls
    assert h.session.stream(Direction.TO_SERVER) == b"okfine"
    assert metrics.register("tcp")["parse_errors"] == 1


def test_a_bug_in_a_session_is_contained() -> None:
    h = Harness()
    h.c2s(100, b"ok")

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    h.session.feed = boom  # type: ignore[method-assign]
    h.c2s(102, b"more")  # must not raise
    h.c2s(106, b"again")
    assert metrics.register("tcp")["internal_errors"] == 1


def test_idle_connections_expire_after_the_protocol_timeout() -> None:
    h = Harness(timeout_ns=1_000)
    h.c2s(100, b"x", ts=10)
    h.dispatcher.expire(500)
    assert h.dispatcher.connection_count == 1
    h.dispatcher.expire(1_011)
    assert h.dispatcher.connection_count == 0
    assert h.session.calls[-1][0] == "expire"


def test_connection_table_is_bounded_and_evicts_the_oldest() -> None:
    h = Harness(TcpLimits(max_connections=3))
    for i in range(5):
        h.dispatcher.handle(Packet(i, 4, IPPROTO_TCP, C, S, 50000 + i, SPORT, b"x", seq=1, tcp_flags=TCP_ACK))
    assert h.dispatcher.connection_count == 3
    assert metrics.register("tcp")["connections_evicted"] == 2
    assert [s.calls[-1][0] for s in h.sessions[:2]] == ["expire", "expire"]


def test_eviction_follows_activity_when_one_connection_sends_again() -> None:
    """A connection active again after another one opened becomes the newest: the idle one goes first."""
    h = Harness(TcpLimits(max_connections=2))
    h.dispatcher.handle(Packet(1, 4, IPPROTO_TCP, C, S, 50000, SPORT, b"a", seq=1, tcp_flags=TCP_ACK))
    h.dispatcher.handle(Packet(2, 4, IPPROTO_TCP, C, S, 50000, SPORT, b"b", seq=2, tcp_flags=TCP_ACK))
    h.dispatcher.handle(Packet(3, 4, IPPROTO_TCP, C, S, 50001, SPORT, b"c", seq=1, tcp_flags=TCP_ACK))
    h.dispatcher.handle(Packet(4, 4, IPPROTO_TCP, C, S, 50000, SPORT, b"d", seq=3, tcp_flags=TCP_ACK))
    h.dispatcher.handle(Packet(5, 4, IPPROTO_TCP, C, S, 50002, SPORT, b"e", seq=1, tcp_flags=TCP_ACK))
    assert [s.calls[-1][0] for s in h.sessions] == ["data", "expire", "data"]  # 50001 was the idle one


def test_reused_four_tuple_after_close_starts_a_new_session() -> None:
    h = Harness()
    h.c2s(100, b"a", flags=TCP_ACK | TCP_FIN)
    h.s2c(900, b"b", flags=TCP_ACK | TCP_FIN)
    h.c2s(5000, flags=TCP_SYN)
    h.c2s(5001, b"second")
    assert len(h.sessions) == 2
    assert h.sessions[1].stream(Direction.TO_SERVER) == b"second"


def test_random_reordering_and_duplication_reassembles_exactly() -> None:
    rng = random.Random(7)
    payload = bytes(rng.randrange(256) for _ in range(4000))
    segments = []
    pos = 0
    while pos < len(payload):
        size = rng.randint(1, 300)
        segments.append((pos, payload[pos:pos + size]))
        pos += size
    # Light reordering (adjacent swaps) and duplicates stay inside the window: no gaps.
    order = list(segments)
    for i in range(0, len(order) - 1, 3):
        order[i], order[i + 1] = order[i + 1], order[i]
    order += rng.sample(segments, 5)
    h = Harness()
    h.c2s(999, flags=TCP_SYN)
    for off, data in order:
        h.c2s(1000 + off, data)
    assert h.session.stream(Direction.TO_SERVER) == payload
    assert not [c for c in h.session.calls if c[0] == "gap"]


def test_global_reorder_budget_is_enforced() -> None:
    h = Harness(TcpLimits(reorder_segments=1000, reorder_bytes=10**9, max_buffered=1000))
    h.c2s(100, b"a")
    for i in range(20):
        h.c2s(1000 + 200 * i, b"z" * 100)  # never in order: hole at 101
    assert metrics.register("tcp")["reorder_global_overflow"] >= 1
    assert h.dispatcher.reassembler.ooo_total <= 1000


def test_a_hole_the_receiver_acknowledged_is_a_gap_at_once() -> None:
    h = Harness()
    h.c2s(100, b"aaaa")
    h.c2s(110, b"cccc")  # 104..109 were lost by the capture, not by the network
    assert ("gap", Direction.TO_SERVER, 6) not in h.session.calls
    h.s2c(900, b"", flags=TCP_ACK)  # pure ACK that does not cover the hole yet
    h.dispatcher.handle(Packet(1, 4, IPPROTO_TCP, S, C, SPORT, CPORT, b"", seq=900, ack=104, tcp_flags=TCP_ACK))
    assert ("gap", Direction.TO_SERVER, 6) not in h.session.calls
    h.dispatcher.handle(Packet(2, 4, IPPROTO_TCP, S, C, SPORT, CPORT, b"", seq=900, ack=114, tcp_flags=TCP_ACK))
    assert h.session.calls[-2:] == [("gap", Direction.TO_SERVER, 6), ("data", Direction.TO_SERVER, b"cccc")]
    assert metrics.register("tcp")["acked_holes"] == 1


def test_end_of_input_flushes_what_waits_behind_a_hole() -> None:
    h = Harness()
    h.c2s(100, b"aaaa")
    h.c2s(110, b"cccc")
    h.dispatcher.flush_reordering(5)
    assert h.session.calls[-2:] == [("gap", Direction.TO_SERVER, 6), ("data", Direction.TO_SERVER, b"cccc")]


def test_half_open_connections_keep_the_handshake_and_no_session() -> None:
    h = Harness(TcpLimits(max_half_open=2))
    h.c2s(1000, flags=TCP_SYN)
    h.s2c(5000, flags=TCP_SYN | TCP_ACK)
    h.c2s(1001, flags=TCP_ACK)
    assert not h.sessions and h.dispatcher.half_open_count == 1
    # The server speaks first (a greeting): in order after its SYN-ACK, not mid-stream.
    h.s2c(5001, b"220 hello\r\n")
    h.c2s(1001, b"QUIT\r\n")
    assert h.session.calls == [("data", Direction.TO_CLIENT, b"220 hello\r\n"),
                               ("data", Direction.TO_SERVER, b"QUIT\r\n")]
    counters = metrics.register("tcp")
    assert (h.dispatcher.half_open_count, counters["connections"], counters["midstream"]) == (0, 1, 0)


def test_data_lost_after_the_handshake_is_a_gap_not_a_new_start() -> None:
    h = Harness()
    h.c2s(1000, flags=TCP_SYN)
    h.c2s(1011, b"second")  # the first 10 bytes were never seen
    h.c2s(1001, b"first part")
    assert h.session.stream(Direction.TO_SERVER) == b"first partsecond"


def test_rst_forgets_a_half_open_connection_and_the_cap_evicts_the_oldest() -> None:
    h = Harness(TcpLimits(max_half_open=64))
    h.c2s(1000, flags=TCP_SYN)
    h.s2c(0, flags=TCP_RST | TCP_ACK)
    assert h.dispatcher.half_open_count == 0 and metrics.register("tcp")["rst"] == 1
    for i in range(100):
        h.dispatcher.handle(Packet(i, 4, IPPROTO_TCP, C, S, 30000 + i, SPORT, b"", seq=1, tcp_flags=TCP_SYN))
    assert h.dispatcher.half_open_count == 64 and metrics.register("tcp")["half_open_evicted"] == 36
    # The newest are kept: their data continues in order.
    h.dispatcher.handle(Packet(200, 4, IPPROTO_TCP, C, S, 30099, SPORT, b"x", seq=2, tcp_flags=TCP_ACK))
    assert h.session.calls == [("data", Direction.TO_SERVER, b"x")] and metrics.register("tcp")["midstream"] == 0


def test_half_open_connections_expire_after_the_protocol_timeout() -> None:
    h = Harness(timeout_ns=1_000)
    h.c2s(1000, flags=TCP_SYN, ts=10)
    h.dispatcher.expire(500)
    assert h.dispatcher.half_open_count == 1
    h.dispatcher.expire(1_011)
    assert h.dispatcher.half_open_count == 0 and not h.sessions


class Holder(Recorder):
    """A session that holds what it is fed until told to recover."""

    def __init__(self, conn: ConnectionInfo) -> None:
        super().__init__(conn)
        self.held = 0

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.held += len(data)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        super().recover(direction, error, ts_ns)
        self.held = 0

    def buffered(self) -> int:
        return self.held


def test_bytes_held_across_connections_are_capped_idle_longest_first() -> None:
    sessions: list[Holder] = []

    def new(conn: ConnectionInfo) -> Holder:
        sessions.append(Holder(conn))
        return sessions[-1]

    limit = 1 << 20
    d = Dispatcher({SPORT: StreamBinding("test", 10**12, new)}, {}, tcp_limits=TcpLimits(max_buffered=limit))
    for rnd in range(40):  # 8 connections, 40 rounds of 8 KiB each: 2.5 MiB offered
        for i in range(8):
            d.handle(Packet(rnd * 10 + i, 4, IPPROTO_TCP, C, S, 41000 + i, SPORT, b"h" * 8192, seq=1 + rnd * 8192,
                            tcp_flags=TCP_ACK))
    counters = metrics.register("tcp")
    assert d.reassembler.held_total <= limit and sum(s.held for s in sessions) <= limit + d._audit_bytes
    assert counters["buffer_shed"] >= 1 and counters["buffer_shed_bytes"] >= 1 << 20
    shed = [s for s in sessions if any(c[0] == "recover" for c in s.calls)]
    assert shed and all("max_buffered" in c[2] for s in shed for c in s.calls if c[0] == "recover")  # type: ignore[operator]


def test_a_session_that_cannot_let_go_is_closed() -> None:
    class Stubborn(Holder):
        def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
            pass  # keeps its bytes

    sessions: list[Holder] = []

    def new(conn: ConnectionInfo) -> Holder:
        sessions.append(Stubborn(conn))
        return sessions[-1]

    d = Dispatcher({SPORT: StreamBinding("test", 10**12, new)}, {}, tcp_limits=TcpLimits(max_buffered=1 << 20))
    for i in range(4):
        d.handle(Packet(i, 4, IPPROTO_TCP, C, S, 42000 + i, SPORT, b"s" * 400_000, seq=1, tcp_flags=TCP_ACK))
    d.audit(10)
    assert d.connection_count < 4 and d.reassembler.held_total <= 1 << 20
    assert any(c[0] == "expire" for s in sessions for c in s.calls)
