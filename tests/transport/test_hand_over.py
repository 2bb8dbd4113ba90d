"""A session hands its connection over to another protocol: the transport swaps the session after the call.

The first protocol ("plain") switches when it reads b"SWITCH": it hands over
what it holds past that word in each direction.  The second ("tls" here) is
a recorder, so the test sees exactly what the new session was fed and in
which order.
"""

from __future__ import annotations

import pytest

from agent import metrics
from agent.capture.packet import IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, Packet
from agent.protocols.base import ProtocolConfig, SessionContext
from agent.transport.dispatcher import Dispatcher
from agent.transport.session import HandOvers, ParseError, StreamBinding
from agent.transport.types import ConnectionInfo, Direction, Endpoint
from tests.transport.test_tcp import CPORT, SPORT, C, Recorder, S

C2S, S2C = Direction.TO_SERVER, Direction.TO_CLIENT


class Switching:
    """Reads bytes until b"SWITCH" in either direction, then hands the connection to `target`."""

    def __init__(self, ctx: SessionContext, target: str, held_by_server: bytes = b"") -> None:
        self.ctx = ctx
        self.target = target
        self.held_by_server = held_by_server  # bytes the server direction holds unread when the switch comes
        self.seen: list[tuple[Direction, bytes]] = []
        self.calls_after = 0
        self.switched = False

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if self.switched:
            self.calls_after += 1
            return
        at = data.find(b"SWITCH")
        if at < 0:
            self.seen.append((direction, data))
            return
        self.seen.append((direction, data[:at]))
        rest = data[at + len(b"SWITCH"):]
        self.switched = True
        to_server, to_client = (rest, self.held_by_server) if direction == C2S else (b"", rest)
        self.ctx.hand_over(self.target, ts_ns, to_server=to_server, to_client=to_client)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        pass

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if self.switched:
            self.calls_after += 1

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        pass

    def expire(self, ts_ns: int) -> None:
        pass

    def pending(self) -> int:
        return 0


class Lab:
    def __init__(self, target: str = "tls", held_by_server: bytes = b"", tls_timeout_ns: int = 5 * 10**9) -> None:
        self.hand_overs = HandOvers()
        self.first: list[Switching] = []
        self.second: list[Recorder] = []
        counters = metrics.register("test.handover")
        config = ProtocolConfig()

        def plain(info: ConnectionInfo) -> Switching:
            ctx = SessionContext("plain", config, info, lambda _t: None, counters, self.hand_overs)
            session = Switching(ctx, target, held_by_server)
            self.first.append(session)
            return session

        def tls(info: ConnectionInfo) -> Recorder:
            session = Recorder(info)
            self.second.append(session)
            return session

        self.dispatcher = Dispatcher({SPORT: StreamBinding("plain", 10**10, plain)}, {}, hand_overs=self.hand_overs,
                                     stream_protocols={"tls": StreamBinding("tls", tls_timeout_ns, tls)})
        self.seq = {C2S: 1000, S2C: 5000}

    def send(self, direction: Direction, data: bytes, flags: int = TCP_ACK | TCP_PSH, ts: int = 1) -> None:
        src, dst, sport, dport = (C, S, CPORT, SPORT) if direction == C2S else (S, C, SPORT, CPORT)
        self.dispatcher.handle(Packet(ts, 4, IPPROTO_TCP, src, dst, sport, dport, data, seq=self.seq[direction],
                                      tcp_flags=flags))
        self.seq[direction] += len(data) + (1 if flags & TCP_FIN else 0)


@pytest.fixture(autouse=True)
def _reset() -> None:
    metrics.reset_for_tests()


def test_new_session_gets_the_bytes_past_the_switch_then_every_later_segment() -> None:
    lab = Lab(held_by_server=b"server-held")
    lab.send(C2S, b"EHLO\r\n")
    lab.send(S2C, b"250 ok\r\n")
    lab.send(C2S, b"STARTSWITCH\x16\x03\x01hello")
    lab.send(S2C, b"\x16\x03\x03server hello")
    lab.send(C2S, b"more")
    [first], [second] = lab.first, lab.second
    assert first.seen == [(C2S, b"EHLO\r\n"), (S2C, b"250 ok\r\n"), (C2S, b"START")]
    assert first.calls_after == 0  # the old session hears nothing after its hand-over
    assert second.calls == [("data", C2S, b"\x16\x03\x01hello"), ("data", S2C, b"server-held"),
                            ("data", S2C, b"\x16\x03\x03server hello"), ("data", C2S, b"more")]
    assert second.conn == first.ctx.conn  # same connection, same endpoints and id
    tcp = metrics.register("tcp")
    assert tcp["hand_overs"] == 1 and tcp["hand_overs_unclaimed"] == 0
    assert lab.hand_overs.pending == {}


def test_the_new_protocol_times_the_connection_out_and_gets_fin() -> None:
    lab = Lab(tls_timeout_ns=3 * 10**9)
    lab.send(C2S, b"SWITCH")
    lab.send(C2S, b"", flags=TCP_ACK | TCP_FIN, ts=2)
    [second] = lab.second
    assert second.calls == [("fin", C2S, None)]
    lab.dispatcher.expire(2 + 3 * 10**9)
    assert lab.dispatcher.connection_count == 0
    assert second.calls[-1][0] == "expire"


def test_a_direction_closed_before_the_switch_is_closed_for_the_new_session() -> None:
    lab = Lab()
    lab.send(S2C, b"bye", flags=TCP_ACK | TCP_PSH | TCP_FIN)
    lab.send(C2S, b"SWITCH")
    [second] = lab.second
    assert second.calls == [("fin", S2C, None)]


def test_hand_over_to_a_protocol_that_is_not_enabled_stops_decoding() -> None:
    lab = Lab(target="nosuch")
    lab.send(C2S, b"SWITCHxyz")
    lab.send(C2S, b"later")
    [first] = lab.first
    assert first.calls_after == 0 and lab.second == []
    tcp = metrics.register("tcp")
    assert tcp["hand_overs"] == 1 and tcp["hand_overs_unclaimed"] == 1


def test_without_a_transport_the_request_is_kept_on_the_context() -> None:
    conn = ConnectionInfo(Endpoint(bytes(4), 1), Endpoint(bytes(4), 2), 4, "tcp")
    ctx = SessionContext("plain", ProtocolConfig(), conn, lambda _t: None,
                         metrics.register("test.handover"))
    ctx.hand_over("tls", 7, to_server=b"a", to_client=b"b")
    assert ctx.handed_over is not None
    assert (ctx.handed_over.protocol, ctx.handed_over.pending, ctx.handed_over.ts_ns) == ("tls", (b"a", b"b"), 7)
