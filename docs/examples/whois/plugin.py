"""WHOIS transactions: one query, one answer, one event."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.transport.session import ParseError
from agent.transport.types import Direction

from .parser import AnswerCollector, Query, QueryParser


@dataclass(frozen=True)
class WhoisConfig(ProtocolConfig):
    # A protocol-specific option, with Packetbeat-style naming.
    max_answer_lines: int = opt(20)


class WhoisSession:
    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.config: WhoisConfig = ctx.config  # type: ignore[assignment]
        self.queries = QueryParser()
        self.query: Query | None = None
        self.query_ts = 0
        self.answer = AnswerCollector()
        self.answer_ts = 0

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if direction is Direction.TO_SERVER:
            query = self.queries.feed(data)
            if query is not None:
                self.query, self.query_ts = query, ts_ns
        else:
            if not self.answer.size:
                self.answer_ts = ts_ns
            self.answer.feed(data)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        if direction is Direction.TO_CLIENT:
            self.answer.gap(nbytes)
        else:
            self.queries = QueryParser()  # a query we cannot read any more

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if direction is Direction.TO_CLIENT:
            self._publish(ts_ns)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.queries = QueryParser()

    def expire(self, ts_ns: int) -> None:
        if self.query is not None:
            self.ctx.counters.inc("unmatched_requests")
            self._publish(None, note="Unmatched request")

    def pending(self) -> int:
        return 1 if self.query is not None else 0

    def buffered(self) -> int:
        return self.queries.buffered + len(self.answer.kept)

    def _publish(self, end_ns: int | None, note: str | None = None) -> None:
        query = self.query
        if query is None:
            return
        lines = bytes(self.answer.kept).decode("utf-8", "replace").splitlines()
        txn = Transaction("whois", self.ctx.conn, ts_ns=self.query_ts, end_ns=end_ns,
                          client_bytes=query.size, server_bytes=self.answer.size or None)
        txn.fields = {"whois": {"query": query.text, "answer_lines": len(lines)},
                      "query": query.text, "method": "QUERY"}
        if self.config.send_response:
            txn.fields["response"] = "\n".join(lines[: self.config.max_answer_lines])
        if self.answer.lost:
            txn.notes.append("Packet loss while capturing the response")
        if note:
            txn.notes.append(note)
            txn.status = "Error"
        self.ctx.emit(txn)
        self.query = None
        self.answer = AnswerCollector()


SPEC = ProtocolSpec(name="whois", config_class=WhoisConfig, tcp=WhoisSession,
                    description="WHOIS queries and answers (RFC 3912)")
