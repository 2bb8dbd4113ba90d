"""Cassandra (CQL native protocol v1-v4) transactions, as Packetbeat reports them.

Requests and responses are paired FIFO per connection, not by stream id (as
Packetbeat does; its compressed-frame test pairs request stream 0 with
response stream 64).  EVENT frames are server pushes: they are published
alone with `cassandra.no_request: true`.  `ignored_ops` drops every
transaction whose request or response opcode is listed (their bodies are
not even decoded).  The frame headers and decoded bodies go to
`cassandra.request` / `cassandra.response` under Packetbeat's switches
(send_request, send_request_header, send_response, send_response_header,
all on by default).  An ERROR response sets status Error (Packetbeat
declares that status but never sets it).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.cassandra.body import OP_EVENT, OPS_BY_NAME
from agent.protocols.cassandra.fields import FIELDS, transaction
from agent.protocols.cassandra.parser import CqlFrame, CqlParser, ParserSettings
from agent.protocols.correlation import RequestQueue
from agent.protocols.stream import SessionBase
from agent.transport.types import Direction

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "gaps", "oversized_frames",
            "body_errors", "undecoded_compressed", "resync_dropped_bytes", "ignored", "queue_overflow")


def _compressor(value: str) -> str | None:
    return None if value in ("", "snappy") else f"invalid compressor config: {value}, only snappy supported"


def _ops(value: tuple[str, ...]) -> str | None:
    for name in value:
        if name.strip().upper() not in OPS_BY_NAME:
            return f"unknown frame op: {name} (one of {', '.join(OPS_BY_NAME)})"
    return None


@dataclass(frozen=True)
class CassandraConfig(ProtocolConfig):
    send_request: bool = opt(True)
    send_response: bool = opt(True)
    send_request_header: bool = opt(True, doc="publish the request frame header in cassandra.request.headers")
    send_response_header: bool = opt(True, doc="publish the response frame header in cassandra.response.headers")
    compressor: str = opt("", check=_compressor, doc='"snappy" to decode snappy-compressed frames')
    ignored_ops: tuple[str, ...] = opt((), check=_ops, doc="frame opcodes whose transactions are not published")

    def parser_settings(self) -> ParserSettings:
        return ParserSettings(self.compressor,
                              frozenset(OPS_BY_NAME[name.strip().upper()] for name in self.ignored_ops))


class CassandraSession(SessionBase[CassandraConfig]):
    def __init__(self, ctx: SessionContext[CassandraConfig]) -> None:
        super().__init__(ctx)
        settings = self.config.parser_settings()
        self.parsers = (CqlParser(Direction.TO_SERVER, settings, ctx.counters),
                        CqlParser(Direction.TO_CLIENT, settings, ctx.counters))
        self.requests: RequestQueue[CqlFrame] = RequestQueue(ctx.counters)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for frame in self.parsers[direction].feed(data, ts_ns):
            self._on_frame(frame)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        outcome = self.parsers[direction].gap(nbytes, ts_ns)
        if not outcome.in_sync:
            self.drop_pending()
        for frame in outcome.messages:
            self._on_frame(frame)

    # recover: SessionBase's (lose_sync); fin: nothing; expire: drop_pending.

    def lose_sync(self, direction: Direction) -> None:
        self.parsers[direction].reset()
        self.drop_pending()

    def pending(self) -> int:
        return len(self.requests)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered + self.requests.held

    # -- pairing -------------------------------------------------------------------

    def drop_pending(self) -> None:
        dropped = self.requests.drain()
        if dropped:
            self.counters["unmatched_requests"] += len(dropped)

    def _on_frame(self, frame: CqlFrame) -> None:
        if not frame.is_response:
            for _ in self.requests.push(frame, frame.size):
                self.counters["unmatched_requests"] += 1
            return
        if frame.opcode == OP_EVENT:
            self._publish(None, frame)
            return
        request = self.requests.pop()
        if request is None:
            self.counters["unmatched_responses"] += 1
            return
        self._publish(request, frame)

    # -- events --------------------------------------------------------------------

    def _publish(self, request: CqlFrame | None, response: CqlFrame) -> None:
        if response.ignored or (request is not None and request.ignored):
            self.counters["ignored"] += 1
            return
        self.ctx.emit(transaction(self.ctx.conn, self.config, request, response))


SPEC = ProtocolSpec(
    name="cassandra",
    config_class=CassandraConfig,
    fields=FIELDS,
    tcp=CassandraSession,
    description="Cassandra CQL native protocol v1-v4 requests paired FIFO with their responses",
    counters=COUNTERS,
)
