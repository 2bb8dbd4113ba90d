"""TCP stream reassembly: per-direction ordering, gaps, FIN/RST and idle expiry.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Each connection has two `Stream`s.  Data that arrives in order goes straight
to the protocol session.  Data ahead of the expected sequence number waits in
a small per-direction reordering buffer; when that buffer is full (segments
or bytes), the hole is declared a gap of N bytes and delivery resumes after
it.  Retransmissions are dropped and overlaps trimmed, with 32-bit sequence
arithmetic throughout.

Every call into a session goes through one error boundary here, which is
also where a session's hand-over to another protocol takes effect
(`HandOvers`): when the call returns, the connection gets a session of that
protocol and is fed the bytes each direction carried past the switch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agent.capture.packet import TCP_FIN, TCP_RST, TCP_SYN
from agent.metrics import Counters
from agent.transport.session import HandOvers, NullSession, ParseError, StreamBinding, StreamSession
from agent.transport.types import ConnectionInfo, Direction

log: Final = logging.getLogger("pktbeat.tcp")

SEQ_MOD: Final = 1 << 32
SEQ_HALF: Final = 1 << 31
_CONTROL: Final = TCP_SYN | TCP_FIN | TCP_RST


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Bounds of the TCP layer of one worker (`packetbeat.tcp.*`); each has a counter for what it dropped."""

    max_connections: int = 100_000  # connections that carried payload
    max_half_open: int = 20_000  # connections without payload yet (SYN floods): no session, no buffers
    max_buffered: int = 32 * 1024 * 1024  # bytes held in reordering buffers and parsers, all connections
    memory_budget: int = 96 * 1024 * 1024  # estimated TCP state: entries, sessions and held bytes
    reorder_segments: int = 32  # per direction, before a hole becomes a gap
    reorder_bytes: int = 512 * 1024  # per direction


TCP_COUNTERS: Final = (
    "connections",
    "connections_evicted",
    "segments",
    "bytes",
    "retransmissions",
    "overlaps_trimmed",
    "out_of_order",
    "gaps",
    "gap_bytes",
    "reorder_overflow",
    "reorder_global_overflow",
    "acked_holes",
    "midstream",
    "fin",
    "rst",
    "parse_errors",
    "internal_errors",
    "half_open",
    "half_open_evicted",
    "buffer_shed",
    "buffer_shed_bytes",
    "memory_shed",
    "hand_overs",
    "hand_overs_unclaimed",
)


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    d = (a - b) & 0xFFFFFFFF
    return d - SEQ_MOD if d >= SEQ_HALF else d


class Stream:
    """One direction of a connection."""

    __slots__ = ("closed", "fin_seq", "next_seq", "ooo", "ooo_bytes")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        # seq -> (payload, missing, ts_ns, fin); waiting for the hole before them
        self.ooo: dict[int, tuple[bytes, int, int, bool]] = {}
        self.ooo_bytes = 0
        self.fin_seq: int | None = None
        self.closed = False


class TcpConnection:
    __slots__ = ("client_ip", "client_port", "conn_id", "dirty", "held", "info", "last_ns", "protocol", "session",
                 "streams", "timeout_ns")

    def __init__(self, info: ConnectionInfo, protocol: str, session: StreamSession, timeout_ns: int,
                 ts_ns: int) -> None:
        self.info = info
        self.protocol = protocol
        self.session = session
        self.client_ip = info.client.ip
        self.client_port = info.client.port
        self.conn_id = info.conn_id
        self.streams = (Stream(), Stream())
        self.timeout_ns = timeout_ns
        self.last_ns = ts_ns
        self.held = 0  # bytes its session held at the last audit
        self.dirty = False  # fed since the last audit


class StreamReassembler:
    """Feeds one connection's segments, in order, to its session."""

    def __init__(self, counters: Counters, limits: TcpLimits, hand_overs: HandOvers | None = None,
                 protocols: Mapping[str, StreamBinding] | None = None) -> None:
        self.counters = counters
        self.limits = limits
        self.ooo_total = 0  # bytes held in every reordering buffer
        self.held_total = 0  # bytes held by every session, as of each one's last audit
        self.unaudited = 0  # bytes fed to sessions since the last audit
        self.dirty: list[TcpConnection] = []  # connections whose sessions were called since the last audit
        self.hand_overs = hand_overs if hand_overs is not None else HandOvers()
        self._requests = self.hand_overs.pending  # checked after every session call: keep it one lookup
        self.protocols = dict(protocols or {})  # the protocols a connection may be handed over to

    # -- entry point -------------------------------------------------------

    def segment(self, conn: TcpConnection, direction: Direction, seq: int, flags: int, payload: bytes,
                missing: int, ts_ns: int) -> None:
        stream = conn.streams[direction]
        counters = self.counters
        if (seq == stream.next_seq and payload and not missing and not flags & _CONTROL and not stream.ooo
                and stream.fin_seq is None):
            # In order, nothing held, no control flag: the common case goes straight to the session.
            stream.next_seq = (seq + len(payload)) & 0xFFFFFFFF
            counters["segments"] += 1
            counters["bytes"] += len(payload)
            self._feed(conn, direction, payload, ts_ns)
            return
        if flags & TCP_SYN:
            # The SYN occupies one sequence number; data (TFO) follows it.
            if stream.next_seq is None or stream.closed:
                stream.next_seq = (seq + 1) & 0xFFFFFFFF
                stream.closed = False
                stream.fin_seq = None
            seq = (seq + 1) & 0xFFFFFFFF
        if stream.next_seq is None:
            stream.next_seq = seq
            if payload:
                counters["midstream"] += 1
        if flags & TCP_RST:
            counters["rst"] += 1
            self._flush_with_gaps(conn, direction, ts_ns)
            for d in (direction, direction.other):
                s = conn.streams[d]
                if not s.closed:
                    self._flush_with_gaps(conn, d, ts_ns)
                    s.closed = True
                    self._fin(conn, d, ts_ns)
            return
        if flags & TCP_FIN:
            counters["fin"] += 1
            stream.fin_seq = (seq + len(payload) + missing) & 0xFFFFFFFF
        if payload or missing:
            counters["segments"] += 1
            counters["bytes"] += len(payload)
            self._data(conn, direction, stream, seq, payload, missing, ts_ns, bool(flags & TCP_FIN))
        if stream.fin_seq is not None and not stream.closed:
            ahead = seq_diff(stream.fin_seq, stream.next_seq) if stream.next_seq is not None else 0
            if ahead > 0 and flags & TCP_FIN:
                # FIN after a hole: nothing will fill it any more worth waiting for.
                self._flush_with_gaps(conn, direction, ts_ns)
                ahead = seq_diff(stream.fin_seq, stream.next_seq)
                if ahead > 0:
                    self._gap(conn, direction, ahead, ts_ns)
                    stream.next_seq = stream.fin_seq
                    ahead = 0
            if ahead <= 0:
                stream.closed = True
                self._fin(conn, direction, ts_ns)

    # -- ordering ----------------------------------------------------------

    def _data(self, conn: TcpConnection, direction: Direction, stream: Stream, seq: int, payload: bytes,
              missing: int, ts_ns: int, fin: bool) -> None:
        assert stream.next_seq is not None
        diff = seq_diff(seq, stream.next_seq)
        if diff < 0:
            end = diff + len(payload) + missing
            if end <= 0:
                self.counters["retransmissions"] += 1
                return
            self.counters["overlaps_trimmed"] += 1
            payload, missing = _trim_front(payload, missing, -diff)
            seq = stream.next_seq
            diff = 0
        if diff > 0:
            self._hold(conn, direction, stream, seq, payload, missing, ts_ns, fin)
            return
        self._deliver(conn, direction, stream, payload, missing, ts_ns)
        if stream.ooo:
            self._drain(conn, direction, stream)

    def _deliver(self, conn: TcpConnection, direction: Direction, stream: Stream, payload: bytes, missing: int,
                 ts_ns: int) -> None:
        if payload:
            stream.next_seq = (stream.next_seq + len(payload)) & 0xFFFFFFFF  # type: ignore[operator]
            self._feed(conn, direction, payload, ts_ns)
        if missing:
            stream.next_seq = (stream.next_seq + missing) & 0xFFFFFFFF  # type: ignore[operator]
            self._gap(conn, direction, missing, ts_ns)

    def _hold(self, conn: TcpConnection, direction: Direction, stream: Stream, seq: int, payload: bytes,
              missing: int, ts_ns: int, fin: bool) -> None:
        counters = self.counters
        counters["out_of_order"] += 1
        old = stream.ooo.get(seq)
        if old is not None:
            if len(old[0]) + old[1] >= len(payload) + missing:
                counters["retransmissions"] += 1
                return
            stream.ooo_bytes -= len(old[0])
            self.ooo_total -= len(old[0])
        stream.ooo[seq] = (payload, missing, ts_ns, fin)
        stream.ooo_bytes += len(payload)
        self.ooo_total += len(payload)
        limits = self.limits
        if self.ooo_total + self.held_total > limits.max_buffered:
            counters["reorder_global_overflow"] += 1
            self._flush_with_gaps(conn, direction, ts_ns)
        elif len(stream.ooo) > limits.reorder_segments or stream.ooo_bytes > limits.reorder_bytes:
            counters["reorder_overflow"] += 1
            self._skip_hole(conn, direction, stream, ts_ns)

    def _skip_hole(self, conn: TcpConnection, direction: Direction, stream: Stream, ts_ns: int) -> None:
        """Declare the hole before the lowest held segment a gap, then deliver what follows it."""
        assert stream.next_seq is not None
        base = stream.next_seq
        first = min(stream.ooo, key=lambda s: seq_diff(s, base))
        hole = seq_diff(first, base)
        if hole > 0:
            self._gap(conn, direction, hole, ts_ns)
            stream.next_seq = first
        self._drain(conn, direction, stream)

    def _drain(self, conn: TcpConnection, direction: Direction, stream: Stream) -> None:
        """Deliver held segments that are now in order; drop the ones already covered."""
        ooo = stream.ooo
        while ooo:
            assert stream.next_seq is not None
            base = stream.next_seq
            progressed = False
            for seq in sorted(ooo, key=lambda s: seq_diff(s, base)):
                diff = seq_diff(seq, base)
                if diff > 0:
                    break
                payload, missing, ts, _fin = ooo.pop(seq)
                stream.ooo_bytes -= len(payload)
                self.ooo_total -= len(payload)
                end = diff + len(payload) + missing
                if end <= 0:
                    self.counters["retransmissions"] += 1
                    continue
                if diff < 0:
                    payload, missing = _trim_front(payload, missing, -diff)
                self._deliver(conn, direction, stream, payload, missing, ts)
                progressed = True
                break
            if not progressed:
                return

    def _flush_with_gaps(self, conn: TcpConnection, direction: Direction, ts_ns: int) -> None:
        stream = conn.streams[direction]
        while stream.ooo:
            self._skip_hole(conn, direction, stream, ts_ns)

    def acknowledged(self, conn: TcpConnection, direction: Direction, ack: int, ts_ns: int) -> None:
        """The receiver of `direction` acknowledged up to `ack`: holes below it were lost to us, not to it.

        Waiting for a retransmission that will never come would hold the data
        after the hole until the reordering window fills; declare the gap now.
        """
        stream = conn.streams[direction]
        if not stream.ooo or stream.next_seq is None:
            return
        while stream.ooo and stream.next_seq is not None and seq_diff(ack, stream.next_seq) > 0:
            base = stream.next_seq
            first = min(stream.ooo, key=lambda s: seq_diff(s, base))
            if seq_diff(first, base) <= 0 or seq_diff(ack, first) < 0:
                break
            self.counters["acked_holes"] += 1
            self._skip_hole(conn, direction, stream, ts_ns)

    def flush_all(self, conn: TcpConnection, ts_ns: int) -> None:
        for d in (Direction.TO_SERVER, Direction.TO_CLIENT):
            self._flush_with_gaps(conn, d, ts_ns)

    def forget(self, conn: TcpConnection) -> None:
        """Release the reordering buffers and the held-bytes account of a connection that is going away."""
        for stream in conn.streams:
            self.ooo_total -= stream.ooo_bytes
            stream.ooo.clear()
            stream.ooo_bytes = 0
        self.held_total -= conn.held
        conn.held = 0

    # -- calls into the session, behind the error boundary -------------------

    def _feed(self, conn: TcpConnection, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.unaudited += len(data)
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)
        try:
            conn.session.feed(direction, data, ts_ns)
        except ParseError as exc:
            self.counters["parse_errors"] += 1
            log.debug("%s %s: %s", conn.protocol, conn.info.client, exc)
            self._recover(conn, direction, exc, ts_ns)
        except Exception:
            self._internal_error(conn, "feed")
        if self._requests:
            self._hand_over(conn)

    def _gap(self, conn: TcpConnection, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        self.counters["gap_bytes"] += nbytes
        self._guarded(conn, direction, ts_ns, "gap", nbytes)

    def _fin(self, conn: TcpConnection, direction: Direction, ts_ns: int) -> None:
        self._guarded(conn, direction, ts_ns, "fin", 0)

    def _guarded(self, conn: TcpConnection, direction: Direction, ts_ns: int, event: str, nbytes: int) -> None:
        """A gap or FIN told to the session, its failures handled as _feed handles a segment's (rare events:
        the per-segment _feed keeps its own copy of this, without the dispatch)."""
        self._touch(conn)
        try:
            if event == "gap":
                conn.session.gap(direction, nbytes, ts_ns)
            else:
                conn.session.fin(direction, ts_ns)
        except ParseError as exc:
            self.counters["parse_errors"] += 1
            self._recover(conn, direction, exc, ts_ns)
        except Exception:
            self._internal_error(conn, event)
        if self._requests:
            self._hand_over(conn)

    def _touch(self, conn: TcpConnection) -> None:
        """The session may hold a different number of bytes now: audit it next time."""
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    def recover(self, conn: TcpConnection, direction: Direction, exc: ParseError, ts_ns: int) -> None:
        """Make the session drop the partial state of `direction` (also used to shed memory)."""
        self._touch(conn)
        self._recover(conn, direction, exc, ts_ns)

    def _recover(self, conn: TcpConnection, direction: Direction, exc: ParseError, ts_ns: int) -> None:
        try:
            conn.session.recover(direction, exc, ts_ns)
        except Exception:
            self._internal_error(conn, "recover")

    def _hand_over(self, conn: TcpConnection) -> None:
        """The session asked for its connection to become another protocol: swap it, feed the new one."""
        request = self.hand_overs.take(conn.info)
        if request is None:
            return
        counters = self.counters
        counters["hand_overs"] += 1
        binding = self.protocols.get(request.protocol)
        if binding is None:
            counters["hand_overs_unclaimed"] += 1
            log.debug("%s %s: hand-over to %s, which is not enabled", conn.protocol, conn.info.client,
                      request.protocol)
            conn.session = NullSession()
            return
        conn.protocol = binding.protocol
        conn.timeout_ns = binding.timeout_ns
        conn.session = binding.new_session(conn.info)
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            data = request.pending[direction]
            if data:
                self._feed(conn, direction, data, request.ts_ns)
        for direction in (Direction.TO_SERVER, Direction.TO_CLIENT):
            if conn.streams[direction].closed:
                self._fin(conn, direction, request.ts_ns)

    def _internal_error(self, conn: TcpConnection, where: str) -> None:
        self.counters["internal_errors"] += 1
        log.exception("bug in the %s parser (%s); its connection state is dropped", conn.protocol, where)
        conn.session = NullSession()


def _trim_front(payload: bytes, missing: int, cut: int) -> tuple[bytes, int]:
    """A segment without its first `cut` bytes (already delivered): what is left of its payload, and of the
    bytes the capture cut off its end."""
    if cut >= len(payload):
        return b"", missing - (cut - len(payload))
    return payload[cut:], missing
