"""The `http` protocol's TCP session: HTTP/1.x requests paired FIFO with responses, and what the connection
becomes (HTTP/2, a tunnel, TLS); see agent/protocols/http/plugin.py for the behaviour it implements.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes, subclasses only in compiled
modules); an edit is used natively only after set-up rebuilds
(`scripts/accel.py build`).  That is why `HttpSession` does not extend the
interpreted `SessionBase` (a native class cannot): it implements the
`StreamSession` protocol itself.  The interpreted HTTP/2 session (`H2Session`)
and tunnel (`TunnelBytes`, agent/protocols/http/tunnel.py) are called like any
Python object.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from agent.metrics import Counters
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.correlation import RequestQueue
from agent.protocols.errors import ParseError
from agent.protocols.http.fields import EventAssembler, EventSettings
from agent.protocols.http.h2frames import PREFACE, PREFACE_TAIL
from agent.protocols.http.h2session import H2Session, starts_with_settings
from agent.protocols.http.messages import HttpMessage, ParserConfig
from agent.protocols.http.parser import HttpStreamParser
from agent.protocols.http.tunnel import TunnelBytes
from agent.transport.types import Direction

if TYPE_CHECKING:
    from agent.protocols.http.plugin import HttpConfig

MAX_QUEUED_REQUESTS: Final = 1024  # pipelined requests waiting for their responses, per connection

TLS_RECORD_START: Final = b"\x16\x03"  # a handshake record: what a TLS client sends first


def event_settings(config: HttpConfig) -> EventSettings:
    """The options of `config` in the form the session uses (lower-cased, bytes, sets)."""
    include_both = config.include_body_for
    parser = ParserConfig(
        include_request_body_for=tuple(s.encode() for s in (*include_both, *config.include_request_body_for)),
        include_response_body_for=tuple(s.encode() for s in (*include_both, *config.include_response_body_for)),
        max_message_size=config.max_message_size,
    )
    whitelist = frozenset(h.lower() for h in config.send_headers)
    return EventSettings(
        parser=parser,
        send_request=config.send_request,
        send_response=config.send_response,
        send_headers=config.send_all_headers or bool(whitelist),
        send_all_headers=config.send_all_headers,
        header_whitelist=whitelist,
        split_cookie=config.split_cookie,
        real_ip_header=config.real_ip_header.lower(),
        hide_keywords=frozenset(k.lower().encode() for k in config.hide_keywords),
        redact_authorization=config.redact_authorization,
        redact_headers=tuple(h.lower() for h in config.redact_headers),
        decode_body=config.decode_body,
    )


_SETTINGS: Final[dict[int, tuple[HttpConfig, EventSettings]]] = {}  # by id(config), the config kept alive


def _settings_for(config: HttpConfig) -> EventSettings:
    cached = _SETTINGS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    settings = event_settings(config)
    if len(_SETTINGS) > 64:
        _SETTINGS.clear()
    _SETTINGS[id(config)] = (config, settings)
    return settings


class HttpSession:
    """One TCP connection carrying HTTP: HTTP/1.x here, HTTP/2 or a tunnel in `switched` once it changes.

    A `StreamSession` with `SessionBase`'s attributes (ctx, config, counters), not its subclass (see above).
    """

    __slots__ = ("assembler", "config", "counters", "ctx", "deciding", "parsers", "paused", "requests", "settings",
                 "switched", "tunnel_head")

    def __init__(self, ctx: SessionContext[HttpConfig]) -> None:
        self.ctx = ctx
        self.config: HttpConfig = ctx.config
        self.counters: Counters = ctx.counters
        settings = _settings_for(ctx.config)
        self.settings = settings
        self.assembler = EventAssembler(settings)
        methods: deque[bytes] = deque()
        self.parsers = (
            HttpStreamParser(Direction.TO_SERVER, settings.parser, ctx.counters, methods),
            HttpStreamParser(Direction.TO_CLIENT, settings.parser, ctx.counters, methods),
        )
        self.requests: RequestQueue[HttpMessage] = RequestQueue(
            ctx.counters, MAX_QUEUED_REQUESTS, max(settings.parser.max_message_size, 1 << 20))
        # What the connection became (HTTP/2, a tunnel); None while it is HTTP/1.x.
        self.switched: H2Session | TunnelBytes | None = None
        self.deciding: Direction | None = None  # a CONNECT tunnel waits for its first bytes: TLS or not?
        self.tunnel_head = [b"", b""]  # those first bytes, by Direction, until they tell
        # The client's parser while its CONNECT waits for an answer: what follows may be the tunnel's bytes.
        self.paused: HttpStreamParser | None = None

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        switched = self.switched
        if switched is not None:
            if self.deciding is not None:
                held = [b"", b""]
                held[direction] = data
                self._decide_tunnel(held, ts_ns)
                return
            switched.feed(direction, data, ts_ns)
            return
        parser = self.parsers[direction]
        if parser is self.paused:  # its CONNECT waits for an answer: these may be the tunnel's bytes
            parser.receive(data, ts_ns)
            return
        try:
            messages = parser.feed(data, ts_ns)
        except ParseError as exc:
            self._messages(parser, exc.messages, ts_ns)
            raise
        if messages:
            self._messages(parser, messages, ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        if self.switched is not None:
            self.switched.gap(direction, nbytes, ts_ns)
            return
        for msg in self.parsers[direction].gap(nbytes, ts_ns).messages:
            self._message(msg)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if self.switched is not None:
            self.switched.fin(direction, ts_ns)
            return
        msg = self.parsers[direction].close()
        if msg is not None:
            self._message(msg)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """Skip to the next message start and carry on with the bytes already buffered."""
        self.counters["parse_errors"] += 1
        parser = self.parsers[direction]
        if self._server_speaks_http2(direction, parser, ts_ns):
            return
        parser.resync()
        self._drain_resyncing(parser, ts_ns)

    def _drain_resyncing(self, parser: HttpStreamParser, ts_ns: int) -> None:
        """Parse what `parser` buffered, skipping to the next message start after each malformed one."""
        if parser is self.paused:
            return  # its CONNECT waits for an answer: what it holds may be the tunnel's bytes
        for _ in range(1 << 20):  # each round skips at least one byte; the bound is a safety net
            try:
                self._messages(parser, parser.feed(b"", ts_ns), ts_ns)
                return
            except ParseError as exc:
                self._messages(parser, exc.messages, ts_ns)
                self.counters["parse_errors"] += 1
                parser.resync()

    def expire(self, ts_ns: int) -> None:
        """Idle for transaction_timeout: publish what is complete enough, then unmatched requests."""
        if self.switched is None:
            for parser in self.parsers:
                msg = parser.close()
                if msg is not None:
                    self._message(msg)
        else:
            self.switched.expire(ts_ns)
        for request in self.requests.drain():
            self._unmatched_request(request)

    def pending(self) -> int:
        return len(self.requests) + (self.switched.pending() if self.switched is not None else 0)

    def buffered(self) -> int:
        if self.switched is not None:
            return self.switched.buffered() + len(self.tunnel_head[0]) + len(self.tunnel_head[1])
        return self.parsers[0].buffered + self.parsers[1].buffered + self.requests.held

    # -- correlation -----------------------------------------------------------------

    def _messages(self, parser: HttpStreamParser, messages: list[HttpMessage], ts_ns: int) -> None:
        """Pair the messages a feed completed, until the connection stops being HTTP/1.x or the client's
        CONNECT waits for its answer.

        The parser pauses after a message that may switch protocols (CONNECT, a 101, a 2xx to CONNECT);
        when it did not, parsing goes on with what is buffered.
        """
        while True:
            for msg in messages:
                self._message(msg)
                if self.switched is not None or parser is self.paused:
                    return
            if not parser.paused:
                return
            messages = parser.feed(b"", ts_ns)

    def _message(self, msg: HttpMessage) -> None:
        counters = self.counters
        if msg.is_request:
            if msg.method == b"PRI" and msg.uri == b"*" and msg.version == "2.0":
                self._to_http2(msg.direction, PREFACE_TAIL, msg.ts_ns)  # the HTTP/2 client preface
                return
            counters["requests"] += 1
            for old in self.requests.push(msg, len(msg.raw_headers) + len(msg.body)):
                self._unmatched_request(old)
            if msg.method == b"CONNECT":
                self.paused = self.parsers[msg.direction]
            return
        counters["responses"] += 1
        status = msg.status_code
        if 100 <= status < 200 and status != 101:
            counters["interim_responses"] += 1
            return
        request = self.requests.pop()
        if request is None:
            # Answered before the request was complete (413, 417...): pair it with that request.
            request = self.parsers[msg.direction.other].take_in_progress()
            if request is not None:
                counters["early_responses"] += 1
        if request is None:
            counters["unmatched_responses"] += 1
            self._emit(None, msg)
            return
        counters["transactions"] += 1
        self._emit(request, msg)
        if request.method == b"CONNECT" and self.paused is not None and not 200 <= status < 300:
            self.paused = None  # refused: the client's next bytes are HTTP again
            # The client's parser, not the one being fed: its errors are handled here, not by the caller's recover.
            self._drain_resyncing(self.parsers[request.direction], msg.ts_ns)
        if status == 101:
            self._upgraded(request, msg)
        elif request.method == b"CONNECT" and 200 <= status < 300:
            counters["tunnels"] += 1
            self.deciding = request.direction
            self._decide_tunnel(self._switch(TunnelBytes(counters)), msg.ts_ns)

    def _unmatched_request(self, request: HttpMessage) -> None:
        self.counters["unmatched_requests"] += 1
        self._emit(request, None)

    def _emit(self, request: HttpMessage | None, response: HttpMessage | None) -> None:
        txn: Transaction = self.assembler.transaction(self.ctx.conn, request, response)
        self.ctx.emit(txn)

    # -- what the connection becomes -------------------------------------------------

    def _switch(self, target: H2Session | TunnelBytes) -> list[bytes]:
        """HTTP/1.x parsing ends: requests still waiting are published; returns what each direction buffered."""
        self.switched = target
        self.paused = None
        for request in self.requests.drain():
            self._unmatched_request(request)
        return [parser.take_unread() for parser in self.parsers]

    def _upgraded(self, request: HttpMessage, response: HttpMessage) -> None:
        protocol = response.headers.get("upgrade", b"").lower()
        if protocol.startswith(b"h2c"):
            self._to_http2(request.direction, PREFACE, response.ts_ns, upgrade=request)
        elif protocol.startswith(b"tls/"):
            self._to_tls(response.ts_ns)
        else:
            self.counters["tunnels"] += 1
            for data in self._switch(TunnelBytes(self.counters)):
                self.counters["tunnel_bytes"] += len(data)

    def _to_http2(self, client: Direction, client_preface: bytes, ts_ns: int,
                  upgrade: HttpMessage | None = None) -> None:
        settings = self.settings
        h2 = H2Session(self.ctx, self.assembler, settings.parser, client, client_preface,
                       max(settings.parser.max_message_size, 1 << 20))
        if upgrade is not None:
            h2.upgraded(upgrade)
        held = self._switch(h2)
        for direction in (client, client.other):
            if held[direction]:
                h2.feed(direction, held[direction], ts_ns)

    def _server_speaks_http2(self, direction: Direction, parser: HttpStreamParser, ts_ns: int) -> bool:
        """The server's first bytes failed as HTTP/1: are they an HTTP/2 server's SETTINGS frame?

        True when they are (the connection is now HTTP/2), or may be once more bytes come (they are left
        buffered: the next segment fails the same way and decides).
        """
        if direction != Direction.TO_CLIENT or not parser.at_stream_start or self.requests:
            return False
        verdict = starts_with_settings(parser.peek(9))
        if verdict:
            self._to_http2(Direction.TO_SERVER, PREFACE, ts_ns)
        return verdict is not False

    def _decide_tunnel(self, held: list[bytes], ts_ns: int) -> None:
        """A CONNECT tunnel's first bytes (by Direction): a TLS handshake from its client hands it to `tls`."""
        client = self.deciding
        assert client is not None
        head = self.tunnel_head
        head[0] += held[0]
        head[1] += held[1]
        if len(head[client]) < len(TLS_RECORD_START) and not head[client.other]:
            return  # not enough to tell yet
        self.deciding = None
        self.tunnel_head = [b"", b""]
        if head[client][:2] == TLS_RECORD_START and not head[client.other]:
            self._to_tls(ts_ns, head)
            return
        for chunk in head:  # the server spoke first, or the client did not start TLS: a tunnel of something else
            self.counters["tunnel_bytes"] += len(chunk)

    def _to_tls(self, ts_ns: int, held: list[bytes] | None = None) -> None:
        if held is None:
            held = self._switch(TunnelBytes(self.counters))
        self.counters["tls_hand_overs"] += 1
        self.ctx.hand_over("tls", ts_ns, to_server=held[Direction.TO_SERVER], to_client=held[Direction.TO_CLIENT])

