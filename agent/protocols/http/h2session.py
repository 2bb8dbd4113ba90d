"""An HTTP/2 connection as the `http` protocol's session: what `HttpSession` delegates to once HTTP/2 is detected.

`HttpSession` detects HTTP/2 three ways and hands over the bytes it holds:

- the client's connection preface (prior knowledge, h2c, and HTTP/2 over TLS
  plaintext, whose clients send the preface after ALPN chose h2): its first
  line reads as an HTTP/1 request `PRI * HTTP/2.0`, and the rest of the
  preface is still buffered;
- the server speaking first with a SETTINGS frame (grpc servers, and HTTP/2
  over TLS, where the server's SETTINGS may come before the client's
  preface): HTTP/1 framing fails on the server's first byte;
- `Upgrade: h2c` answered 101: the upgrade request is stream 1, whose
  response comes as HTTP/2.

Each stream becomes one transaction (`h2event.transaction`) when it
completes; streams still open are published when the server's direction
ends, when the connection idles out, or when decoding stops.
"""

from __future__ import annotations

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.http.event import EventAssembler
from agent.protocols.http.h2event import transaction
from agent.protocols.http.h2streams import Exchange, H2Connection, Half
from agent.protocols.http.parser import HttpMessage, ParserConfig
from agent.transport.session import ParseError
from agent.transport.types import Direction

NOTE_UPGRADED = "Request sent as HTTP/1.1 with Upgrade: h2c"

# A SETTINGS frame header on stream 0 without flags: how an HTTP/2 server's first bytes start.
_SETTINGS_HEAD = b"\x04\x00\x00\x00\x00\x00"


def starts_with_settings(data: bytes) -> bool | None:
    """Do `data` start with an HTTP/2 SETTINGS frame header, as a server's first frame does?  None: too short."""
    head = data[3:9]
    if data[:1] != b"\x00" or _SETTINGS_HEAD[:len(head)] != head:
        return False
    if len(data) < 9:
        return None
    length = (data[1] << 8) | data[2]
    return length % 6 == 0 and length <= 16384


class H2Session:
    """The StreamSession of an HTTP/2 connection: its frames, streams and transactions."""

    __slots__ = ("assembler", "counters", "ctx", "h2", "server")

    def __init__(self, ctx: SessionContext, assembler: EventAssembler, config: ParserConfig, client: Direction,
                 client_preface: bytes, held_limit: int) -> None:
        self.ctx = ctx
        self.counters: Counters = ctx.counters
        self.assembler = assembler
        self.server = client.other
        self.h2 = H2Connection(config, ctx.counters, client, client_preface, held_limit)

    def upgraded(self, request: HttpMessage) -> None:
        """`request` (HTTP/1.1, Upgrade: h2c) was answered 101: it is stream 1, answered in HTTP/2."""
        half = Half(request.direction, request.ts_ns)
        fields = [(b":method", request.method), (b":path", request.uri), (b":scheme", b"http")]
        host = request.headers.get("host")
        if host:
            fields.append((b":authority", host))
        fields.extend((name.encode("latin-1"), value) for name, value in request.headers.items()
                      if name not in ("host", "connection", "upgrade", "http2-settings"))
        half.fields = fields
        half.ended = True
        self.h2.adopt(1, half, NOTE_UPGRADED)

    # -- StreamSession -----------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        self._publish(self.h2.feed(direction, data, ts_ns))

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self._publish(self.h2.gap(direction, nbytes, ts_ns))

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if direction == self.server:  # no response can complete any more
            self._publish(self.h2.drain())

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """Never called: the HTTP/2 layer stops decoding (with a note) rather than raise."""

    def expire(self, ts_ns: int) -> None:
        self._publish(self.h2.drain())

    def pending(self) -> int:
        return self.h2.open_streams

    def buffered(self) -> int:
        """Bytes of unfinished frames, and the header and body bytes open streams hold."""
        return self.h2.buffered

    # -- transactions ------------------------------------------------------------------

    def _publish(self, exchanges: list[Exchange]) -> None:
        if not exchanges:
            return
        counters = self.counters
        conn = self.ctx.conn
        for exchange in exchanges:
            txn = transaction(self.assembler, conn, exchange)
            if txn is None:
                continue
            counters["transactions" if exchange.response is not None else "unmatched_requests"] += 1
            self.ctx.emit(txn)
