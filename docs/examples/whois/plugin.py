"""WHOIS transactions: one query, one answer, one event."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.stream import SessionBase
from agent.transport.types import Direction

from .fields import FIELDS, transaction
from .parser import AnswerCollector, Query, QueryParser


@dataclass(frozen=True)
class WhoisConfig(ProtocolConfig):
    # A protocol-specific option, with Packetbeat-style naming.
    max_answer_lines: int = opt(20)


class WhoisSession(SessionBase[WhoisConfig]):
    """`self.config` is a WhoisConfig, typed: no downcast.  fin/recover/expire defaults come from SessionBase."""

    def __init__(self, ctx: SessionContext[WhoisConfig]) -> None:
        super().__init__(ctx)
        self.queries = QueryParser()
        self.query: Query | None = None
        self.answer = AnswerCollector()

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if direction is Direction.TO_SERVER:
            for query in self.queries.feed(data, ts_ns):
                self.query = query
        else:
            self.answer.feed(data)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        if direction is Direction.TO_CLIENT:
            self.answer.gap(nbytes)  # the answer keeps going: counted, and noted in the event
        else:
            super().gap(direction, nbytes, ts_ns)  # counted; lose_sync drops the query in progress

    def lose_sync(self, direction: Direction) -> None:
        if direction is Direction.TO_SERVER:
            self.queries.reset()

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if direction is Direction.TO_CLIENT:
            self._publish(ts_ns)

    def drop_pending(self) -> None:
        """Idle: a query never answered is published as unmatched (the default would only drop it)."""
        if self.query is not None:
            self.counters["unmatched_requests"] += 1
            self._publish(None, note="Unmatched request")

    def pending(self) -> int:
        return 1 if self.query is not None else 0

    def buffered(self) -> int:
        return self.queries.buffered + len(self.answer.kept)

    def _publish(self, end_ns: int | None, note: str | None = None) -> None:
        query = self.query
        if query is None:
            return
        config = self.config
        txn = transaction(self.ctx.conn, query, self.answer, end_ns, config.send_response, config.max_answer_lines)
        if note:
            txn.notes.append(note)
            txn.status = "Error"
        self.ctx.emit(txn)
        self.query = None
        self.answer = AnswerCollector()


SPEC = ProtocolSpec(name="whois", config_class=WhoisConfig, tcp=WhoisSession, fields=FIELDS,
                    description="WHOIS queries and answers (RFC 3912)")
