"""Sans-IO WHOIS parsing: a query line from the client; the answer runs until the server closes.

The query side follows the stream-parser contract (agent/protocols/stream.py):
`feed(data, ts_ns)` returns the messages the bytes completed, `gap` returns a
`Gap`, `reset` drops partial state.  Its bytes sit in the shared receive
buffer, whose line reader bounds the line and raises `LineTooLong` (a
`ParseError`) past it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.stream import Gap, lost_sync
from agent.transport.types import Direction

PROTOCOL = "whois"
MAX_QUERY = 1024  # RFC 3912 queries are one short line
MAX_ANSWER = 1 << 20  # what we keep of an answer; the rest is counted, not stored


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    size: int
    ts_ns: int


class QueryParser:
    """Bytes from the client in; a Query out for each CRLF-terminated line."""

    def __init__(self) -> None:
        self.buf = ReceiveBuffer(PROTOCOL, Direction.TO_SERVER, MAX_QUERY)

    def feed(self, data: bytes, ts_ns: int) -> list[Query]:
        self.buf.feed(data, ts_ns)
        out: list[Query] = []
        while True:
            start = self.buf.pos
            line = self.buf.crlf_line(MAX_QUERY)  # None: need more bytes, a normal result
            if line is None:
                return out
            out.append(Query(line.decode("utf-8", "replace").strip(), len(line) + 2, self.buf.ts_at(start)))

    def gap(self, nbytes: int, ts_ns: int) -> Gap[Query]:
        self.reset()  # a query cut by lost bytes cannot be read: wait for the next one
        return lost_sync()

    def reset(self) -> None:
        self.buf.clear()

    @property
    def buffered(self) -> int:
        return self.buf.buffered


class AnswerCollector:
    """Bytes from the server, kept up to MAX_ANSWER; the answer ends at FIN."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.size = 0
        self.lost = False

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        room = MAX_ANSWER - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    def gap(self, nbytes: int) -> None:
        self.size += nbytes
        self.lost = True
