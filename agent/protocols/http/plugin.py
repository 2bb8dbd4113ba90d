"""HTTP/1.x transactions: requests paired FIFO with responses on each connection.

Every request is its own event (pipelining and keep-alive included).  An
interim 1xx response is dropped (one event for `Expect: 100-continue`); a
response nobody asked for is published at once with "Unmatched response"; a
request left without a response is published when the connection expires,
with "Unmatched request".  After `101 Switching Protocols` or a successful
CONNECT the connection is a tunnel and is no longer parsed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.config.typed import opt, positive
from agent.metrics import Counters
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.correlation import RequestQueue
from agent.protocols.http.event import EventAssembler, EventSettings
from agent.protocols.http.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    PARSER_COUNTERS,
    HttpMessage,
    HttpStreamParser,
    ParserConfig,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_QUEUED_REQUESTS = 1024  # pipelined requests waiting for their responses, per connection

COUNTERS = (
    "requests",
    "responses",
    "transactions",
    "unmatched_requests",
    "unmatched_responses",
    "interim_responses",
    "queue_overflow",
    "tunnels",
    "tunnel_bytes",
    "early_responses",
    *PARSER_COUNTERS,
)



@dataclass(frozen=True)
class HttpConfig(ProtocolConfig):
    """Packetbeat's `type: http` settings, with its defaults."""

    send_headers: tuple[str, ...] = opt((), doc="headers to export in http.*.headers (case-insensitive)")
    send_all_headers: bool = opt(False, doc="export every header")
    split_cookie: bool = opt(False, doc="export Cookie and Set-Cookie as maps")
    real_ip_header: str = opt("", doc="header holding the client address, e.g. X-Forwarded-For")
    include_body_for: tuple[str, ...] = opt((), doc="Content-Type substrings whose bodies are exported")
    include_request_body_for: tuple[str, ...] = opt(())
    include_response_body_for: tuple[str, ...] = opt(())
    hide_keywords: tuple[str, ...] = opt((), doc="query and form parameters whose values become xxxxx")
    redact_authorization: bool = opt(False)
    redact_headers: tuple[str, ...] = opt((), doc="headers whose values become REDACTED")
    max_message_size: int = opt(DEFAULT_MAX_MESSAGE_SIZE, kind="size", check=positive)
    decode_body: bool = opt(True, doc="undo gzip/deflate codings of exported bodies")


def event_settings(config: ProtocolConfig) -> EventSettings:
    """The options of `config` in the form the session uses (lower-cased, bytes, sets)."""
    get = config.__dict__.get
    include_both = tuple(get("include_body_for", ()) or ())
    parser = ParserConfig(
        include_request_body_for=tuple(s.encode() for s in (*include_both, *(get("include_request_body_for") or ()))),
        include_response_body_for=tuple(
            s.encode() for s in (*include_both, *(get("include_response_body_for") or ()))),
        max_message_size=int(get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
    )
    send_all = bool(get("send_all_headers", False))
    whitelist = frozenset(h.lower() for h in get("send_headers", ()) or ())
    return EventSettings(
        parser=parser,
        send_request=config.send_request,
        send_response=config.send_response,
        send_headers=send_all or bool(whitelist),
        send_all_headers=send_all,
        header_whitelist=whitelist,
        split_cookie=bool(get("split_cookie", False)),
        real_ip_header=str(get("real_ip_header", "") or "").lower(),
        hide_keywords=frozenset(k.lower().encode() for k in get("hide_keywords", ()) or ()),
        redact_authorization=bool(get("redact_authorization", False)),
        redact_headers=tuple(h.lower() for h in get("redact_headers", ()) or ()),
        decode_body=bool(get("decode_body", True)),
    )


_SETTINGS: dict[int, tuple[ProtocolConfig, EventSettings]] = {}


def _settings_for(config: ProtocolConfig) -> EventSettings:
    cached = _SETTINGS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    settings = event_settings(config)
    if len(_SETTINGS) > 64:
        _SETTINGS.clear()
    _SETTINGS[id(config)] = (config, settings)
    return settings


class HttpSession:
    """One TCP connection carrying HTTP/1.x."""

    __slots__ = ("assembler", "counters", "ctx", "parsers", "requests", "tunnel")

    def __init__(self, ctx: SessionContext) -> None:
        settings = _settings_for(ctx.config)
        self.ctx = ctx
        self.counters: Counters = ctx.counters
        self.assembler = EventAssembler(settings)
        methods: deque[bytes] = deque()
        self.parsers = (
            HttpStreamParser(Direction.TO_SERVER, settings.parser, ctx.counters, methods),
            HttpStreamParser(Direction.TO_CLIENT, settings.parser, ctx.counters, methods),
        )
        self.requests: RequestQueue[HttpMessage] = RequestQueue(
            ctx.counters, MAX_QUEUED_REQUESTS, max(settings.parser.max_message_size, 1 << 20))
        self.tunnel = False

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if self.tunnel:
            self.counters["tunnel_bytes"] += len(data)
            return
        parser = self.parsers[direction]
        if parser.feed(data, ts_ns):
            self._drain(parser)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        if self.tunnel:
            return
        msg = self.parsers[direction].gap(nbytes)
        if msg is not None:
            self._message(msg)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if self.tunnel:
            return
        msg = self.parsers[direction].close()
        if msg is not None:
            self._message(msg)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """Skip to the next message start and carry on with the bytes already buffered."""
        self.counters["parse_errors"] += 1
        parser = self.parsers[direction]
        parser.resync()
        for _ in range(1 << 20):  # each round skips at least one byte; the bound is a safety net
            try:
                self._drain(parser)
                return
            except ParseError:
                self.counters["parse_errors"] += 1
                parser.resync()

    def expire(self, ts_ns: int) -> None:
        """Idle for transaction_timeout: publish what is complete enough, then unmatched requests."""
        if not self.tunnel:
            for parser in self.parsers:
                msg = parser.close()
                if msg is not None:
                    self._message(msg)
        for request in self.requests.drain():
            self._unmatched_request(request)

    def pending(self) -> int:
        return len(self.requests)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered + self.requests.held

    # -- correlation -----------------------------------------------------------------

    def _drain(self, parser: HttpStreamParser) -> None:
        while True:
            msg = parser.next_message()
            if msg is None:
                return
            self._message(msg)
            if self.tunnel:
                for p in self.parsers:
                    self.counters["tunnel_bytes"] += p.buffered
                    p.discard()
                return

    def _message(self, msg: HttpMessage) -> None:
        counters = self.counters
        if msg.is_request:
            counters["requests"] += 1
            for old in self.requests.push(msg, len(msg.raw_headers) + len(msg.body)):
                self._unmatched_request(old)
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
        if status == 101 or (request.method == b"CONNECT" and 200 <= status < 300):
            self.tunnel = True
            counters["tunnels"] += 1

    def _unmatched_request(self, request: HttpMessage) -> None:
        self.counters["unmatched_requests"] += 1
        self._emit(request, None)

    def _emit(self, request: HttpMessage | None, response: HttpMessage | None) -> None:
        txn: Transaction = self.assembler.transaction(self.ctx.conn, request, response)
        self.ctx.emit(txn)


def _session(ctx: SessionContext) -> HttpSession:
    return HttpSession(ctx)


SPEC = ProtocolSpec(
    name="http",
    config_class=HttpConfig,
    tcp=_session,
    description="HTTP/1.0 and HTTP/1.1 requests and responses",
    counters=COUNTERS,
)
