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
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.cassandra.body import OP_ERROR, OP_EVENT, OPS_BY_NAME
from agent.protocols.cassandra.parser import CqlFrame, CqlParser, ParserSettings
from agent.protocols.correlation import RequestQueue
from agent.transport.session import ParseError
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


class CassandraSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, CassandraConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        settings = config.parser_settings()
        self.parsers = (CqlParser(Direction.TO_SERVER, settings), CqlParser(Direction.TO_CLIENT, settings))
        self.requests: RequestQueue[CqlFrame] = RequestQueue(ctx.counters)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        parser = self.parsers[direction]
        try:
            frames = parser.feed(data, ts_ns)
        finally:
            self._count_parser(parser)
        for frame in frames:
            self._on_frame(frame)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        parser = self.parsers[direction]
        frame = parser.gap(nbytes)
        if parser.resync:
            self._drop_requests()
        if frame is not None:
            self._on_frame(frame)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        pass

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        self.parsers[direction].reset()
        self._drop_requests()

    def expire(self, ts_ns: int) -> None:
        self._drop_requests()

    def pending(self) -> int:
        return len(self.requests)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered + self.requests.held

    # -- pairing -------------------------------------------------------------------

    def _count_parser(self, parser: CqlParser) -> None:
        if parser.counters:
            for name, value in parser.counters.items():
                self.counters[name] += value
            parser.counters.clear()

    def _drop_requests(self) -> None:
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
        config = self.config
        cassandra: dict[str, Any] = {}
        notes: list[str] = []
        if request is not None:
            notes.extend(request.notes)
            if config.send_request:
                data = dict(request.data)
                if config.send_request_header:
                    data["headers"] = request.headers()
                if data:
                    cassandra["request"] = data
        else:
            cassandra["no_request"] = True
        notes.extend(response.notes)
        if config.send_response:
            data = dict(response.data)
            if config.send_response_header:
                data["headers"] = response.headers()
            if data:
                cassandra["response"] = data
        fields: dict[str, Any] = {"cassandra": cassandra} if cassandra else {}
        ts_ns = request.ts_ns if request is not None else response.ts_ns
        self.ctx.emit(Transaction(
            type="cassandra", conn=self.ctx.conn, ts_ns=ts_ns, end_ns=max(response.ts_ns, ts_ns),
            has_request=request is not None, status="Error" if response.opcode == OP_ERROR else "OK",
            client_bytes=request.size if request is not None else None, server_bytes=response.size,
            notes=notes, fields=fields))


def _session(ctx: SessionContext) -> CassandraSession:
    return CassandraSession(ctx)


SPEC = ProtocolSpec(
    name="cassandra",
    config_class=CassandraConfig,
    tcp=_session,
    description="Cassandra CQL native protocol v1-v4 requests paired FIFO with their responses",
    counters=COUNTERS,
)
