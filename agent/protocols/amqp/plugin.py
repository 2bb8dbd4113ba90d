"""AMQP 0-9-1 transactions, as Packetbeat reports them.

- A synchronous method (queue.declare, basic.consume, channel.close ...) is
  paired with the reply on the same channel (queue.declare-ok ...); the
  reply's fields are merged in.  A second request on a channel before the
  reply replaces the first, which is dropped and counted (Packetbeat keeps
  one request per connection; pktbeat keeps one per channel, so concurrent
  channels do not steal each other's replies).
- basic.publish (client), basic.deliver and basic.return (server) are their
  own transactions, published as soon as their content is complete, with
  the message body in `request` / `response`.  basic.get-ok completes a
  waiting basic.get.
- Methods with no-wait set, basic.ack, basic.nack and basic.reject are
  published at once.
- With hide_connection_information (the default) the connection
  negotiation (connection.start/tune/open, channel.open/flow, basic.qos) and
  normal closes (reply code below 300) are not published.
- A channel.close or connection.close with an error code whose close-ok
  never comes is published when the connection goes idle, with the note
  "Close-ok method not received by sender".
- A synchronous method the peer refuses by closing its channel (or the whole
  connection) with an error code, such as a passive queue.declare answered by
  channel.close 404, is its own event: status Error, the close's reply code
  and text merged in.  Packetbeat drops it (`publish_refused_methods: false`
  does the same, counting it in unmatched_requests).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.protocols.amqp.methods import CONTENT, REQUEST, RESPONSE
from agent.protocols.amqp.parser import AmqpMessage, AmqpParser, ParserSettings
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.transport.session import ParseError
from agent.transport.types import Direction

CLOSE_OK_MISSING = "Close-ok method not received by sender"
MAX_PENDING_CHANNELS = 2048

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "gaps", "oversized_frames",
            "unknown_methods", "malformed_frames", "orphan_content_frames", "incomplete_content",
            "resync_dropped_bytes")


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


@dataclass(frozen=True)
class AmqpConfig(ProtocolConfig):
    max_body_length: int = opt(1000, check=_not_negative, doc="message body bytes kept in request/response")
    # Packetbeat's documentation says false; its code (what users get) defaults to true.
    parse_headers: bool = opt(True, doc="publish message properties (content-type, headers ...)")
    parse_arguments: bool = opt(True, doc="publish the arguments table of declare/bind/consume")
    hide_connection_information: bool = opt(True, doc="do not publish connection negotiation and normal closes")
    publish_refused_methods: bool = opt(True, doc="a method refused by a channel/connection close is an event")

    def parser_settings(self) -> ParserSettings:
        return ParserSettings(self.parse_headers, self.parse_arguments, self.max_body_length)


class _Pending:
    __slots__ = ("direction", "hidden", "msg")

    def __init__(self, msg: AmqpMessage, direction: Direction, hidden: bool) -> None:
        self.msg = msg
        self.direction = direction
        self.hidden = hidden


def _is_close(msg: AmqpMessage) -> bool:
    return msg.method in ("connection.close", "channel.close")


def _reply_code(msg: AmqpMessage) -> int:
    code = msg.fields.get("reply-code", 0)
    return code if isinstance(code, int) else 0


def _body_text(body: bytes, size: int, fields: dict[str, Any]) -> str:
    """Packetbeat's body rendering: text for text/json content, else the byte values."""
    encoding = fields.get("content-encoding")
    content_type = fields.get("content-type")
    if not encoding and isinstance(content_type, str) and ("text" in content_type or "json" in content_type):
        text = body.decode("utf-8", "replace")
    else:
        text = " ".join(str(b) for b in body)
    return text + " [...]" if len(body) < size else text


class AmqpSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, AmqpConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        settings = config.parser_settings()
        self.parsers = (AmqpParser(Direction.TO_SERVER, settings), AmqpParser(Direction.TO_CLIENT, settings))
        self.waiting: OrderedDict[int, _Pending] = OrderedDict()  # channel -> request waiting for its reply

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        parser = self.parsers[direction]
        try:
            messages = parser.feed(data, ts_ns)
        finally:
            self._count_parser(parser)
        for msg in messages:
            self._on_message(direction, msg)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        parser = self.parsers[direction]
        parser.reset()
        self._count_parser(parser)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        pass

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        parser = self.parsers[direction]
        parser.reset()
        self._count_parser(parser)

    def expire(self, ts_ns: int) -> None:
        for pending in self.waiting.values():
            msg = pending.msg
            if not pending.hidden and _is_close(msg) and _reply_code(msg) >= 300:
                self._publish(pending.direction, msg, None, notes=[CLOSE_OK_MISSING])
            elif not pending.hidden:
                self.counters["unmatched_requests"] += 1
        self.waiting.clear()

    def pending(self) -> int:
        return sum(1 for p in self.waiting.values() if not p.hidden)

    def buffered(self) -> int:
        return sum(p.buffered for p in self.parsers)

    # -- pairing -------------------------------------------------------------------

    def _count_parser(self, parser: AmqpParser) -> None:
        if parser.counters:
            for name, value in parser.counters.items():
                self.counters[name] += value
            parser.counters.clear()

    def _hidden(self, msg: AmqpMessage) -> bool:
        if not self.config.hide_connection_information:
            return False
        return msg.connection_info or (_is_close(msg) and _reply_code(msg) < 300)

    def _on_message(self, direction: Direction, msg: AmqpMessage) -> None:
        role = msg.role
        if role == CONTENT:
            self._on_content(direction, msg)
        elif role == REQUEST:
            self._on_request(direction, msg)
        elif role == RESPONSE:
            self._on_response(direction, msg)

    def _on_request(self, direction: Direction, msg: AmqpMessage) -> None:
        hidden = self._hidden(msg)
        if _is_close(msg) and _reply_code(msg) >= 300:
            self._refuse_pending(direction, msg)
        old = self.waiting.pop(msg.channel, None)
        if old is not None and not old.hidden:
            self.counters["unmatched_requests"] += 1
        if not hidden and (msg.fields.get("no-wait") is True
                           or msg.method in ("basic.ack", "basic.nack", "basic.reject")):
            self._publish(direction, msg, None)
            return
        if len(self.waiting) >= MAX_PENDING_CHANNELS:
            _, evicted = self.waiting.popitem(last=False)
            if not evicted.hidden:
                self.counters["unmatched_requests"] += 1
        self.waiting[msg.channel] = _Pending(msg, direction, hidden)

    def _refuse_pending(self, direction: Direction, close: AmqpMessage) -> None:
        """The peer's requests this error close answers: on its channel, or on every channel."""
        channels = list(self.waiting) if close.method == "connection.close" else [close.channel]
        for channel in channels:
            pending = self.waiting.get(channel)
            if pending is None or pending.direction is direction or _is_close(pending.msg):
                continue
            del self.waiting[channel]
            if pending.hidden:
                continue
            if self.config.publish_refused_methods:
                self._publish(pending.direction, pending.msg, close)
            else:
                self.counters["unmatched_requests"] += 1

    def _on_response(self, direction: Direction, msg: AmqpMessage) -> None:
        pending = self.waiting.get(msg.channel)
        if pending is None:
            if not self._hidden(msg):
                self.counters["unmatched_responses"] += 1
            return
        if msg.connection_info and not pending.hidden and self.config.hide_connection_information:
            return  # a negotiation reply cannot answer a published request
        del self.waiting[msg.channel]
        if pending.hidden:
            return
        self._publish(pending.direction, pending.msg, msg)

    def _on_content(self, direction: Direction, msg: AmqpMessage) -> None:
        if msg.method == "basic.get-ok":
            pending = self.waiting.get(msg.channel)
            if pending is not None and pending.msg.method == "basic.get":
                del self.waiting[msg.channel]
                self._publish(pending.direction, pending.msg, msg)
                return
        self._publish(direction, msg, None)

    # -- events --------------------------------------------------------------------

    def _publish(self, direction: Direction, request: AmqpMessage, reply: AmqpMessage | None,
                 notes: list[str] | None = None) -> None:
        config = self.config
        method = request.method
        amqp: dict[str, Any] = dict(request.fields)
        all_notes = list(request.notes)
        client_bytes = server_bytes = 0
        requester_bytes = request.size
        end_ns: int | None = None
        response_text = ""
        body_owner: AmqpMessage | None = None
        if request.role == CONTENT:
            # publish / deliver / return / get-ok on its own: the message itself is the transaction.
            body_owner = request
            if method == "basic.get-ok":
                method = "basic.get"
        elif reply is not None:
            amqp.update(reply.fields)
            all_notes.extend(reply.notes)
            end_ns = max(reply.ts_ns, request.ts_ns)
            if reply.role == CONTENT:  # basic.get answered by basic.get-ok
                body_owner = reply
            elif _is_close(reply):  # the request was refused
                response_text = str(reply.fields.get("reply-text", ""))
            else:
                response_text = "OK"
                if reply.method == "basic.get-empty":
                    method = "basic.get-empty"
            replier_bytes = reply.size
            if direction is Direction.TO_SERVER:
                server_bytes = replier_bytes
            else:
                client_bytes = replier_bytes
        if direction is Direction.TO_SERVER:
            client_bytes = requester_bytes
        else:
            server_bytes = requester_bytes
        if notes:
            all_notes.extend(notes)
        status = "Error" if (method in ("basic.return", "basic.reject")
                             or (_is_close(request) and _reply_code(request) >= 300)
                             or (reply is not None and _is_close(reply))) else "OK"
        fields: dict[str, Any] = {"method": method, "amqp": amqp, "event": {"action": f"amqp.{method}"}}
        user = amqp.get("user-id")
        if isinstance(user, str):
            fields["user"] = {"id": user}
        body = None
        if body_owner is not None:
            body = _body_text(body_owner.body, body_owner.body_size, body_owner.fields)
        if config.send_request:
            if method == "basic.publish":
                fields["request"] = body or ""
            elif request.role == CONTENT:
                fields["request"] = ""
            else:
                fields["request"] = f"{request.method} {request.request}" if request.request else request.method
        if config.send_response:
            if method in ("basic.deliver", "basic.return", "basic.get"):
                fields["response"] = body or ""
            else:
                fields["response"] = response_text
        self.ctx.emit(Transaction(
            type="amqp", conn=self.ctx.conn, ts_ns=request.ts_ns, end_ns=end_ns, status=status,
            client_bytes=client_bytes or None, server_bytes=server_bytes or None, notes=all_notes,
            fields=fields))


def _session(ctx: SessionContext) -> AmqpSession:
    return AmqpSession(ctx)


SPEC = ProtocolSpec(
    name="amqp",
    config_class=AmqpConfig,
    tcp=_session,
    description="AMQP 0-9-1 methods (RabbitMQ): requests paired with replies, published and delivered messages",
    counters=COUNTERS,
)
