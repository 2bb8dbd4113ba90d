"""Sans-IO WHOIS parsing: a query line from the client; the answer runs until the server closes."""

from __future__ import annotations

from dataclasses import dataclass

from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_QUERY = 1024  # RFC 3912 queries are one short line
MAX_ANSWER = 1 << 20  # what we keep of an answer; the rest is counted, not stored


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    size: int


class QueryParser:
    """Bytes from the client in; a Query out once the CRLF arrives."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Query | None:
        self._buf += data
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_QUERY:
                raise ParseError("whois", Direction.TO_SERVER, MAX_QUERY, "query line longer than 1024 bytes")
            return None  # need more bytes: a normal result
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return Query(line.decode("utf-8", "replace").strip(), end + 2)


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
