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

from agent.config.typed import opt
from agent.protocols.amqp.fields import CLOSE_OK_MISSING, FIELDS, is_close, reply_code, transaction
from agent.protocols.amqp.methods import CONTENT, REQUEST, RESPONSE
from agent.protocols.amqp.parser import AmqpMessage, AmqpParser, ParserSettings
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.stream import SessionBase
from agent.transport.types import Direction

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


class AmqpSession(SessionBase[AmqpConfig]):
    def __init__(self, ctx: SessionContext[AmqpConfig]) -> None:
        super().__init__(ctx)
        settings = self.config.parser_settings()
        self.parsers = (AmqpParser(Direction.TO_SERVER, settings, ctx.counters),
                        AmqpParser(Direction.TO_CLIENT, settings, ctx.counters))
        self.waiting: OrderedDict[int, _Pending] = OrderedDict()  # channel -> request waiting for its reply

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for msg in self.parsers[direction].feed(data, ts_ns):
            self._on_message(direction, msg)

    # gap, recover: SessionBase's (the direction's parser resynchronises on a frame that checks out); fin: nothing.

    def lose_sync(self, direction: Direction) -> None:
        self.parsers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        for pending in self.waiting.values():
            msg = pending.msg
            if not pending.hidden and is_close(msg) and reply_code(msg) >= 300:
                self._publish(pending.direction, msg, None, notes=[CLOSE_OK_MISSING])
            elif not pending.hidden:
                self.counters["unmatched_requests"] += 1
        self.waiting.clear()

    def pending(self) -> int:
        return sum(1 for p in self.waiting.values() if not p.hidden)

    def buffered(self) -> int:
        return sum(p.buffered for p in self.parsers)

    # -- pairing -------------------------------------------------------------------

    def _hidden(self, msg: AmqpMessage) -> bool:
        if not self.config.hide_connection_information:
            return False
        return msg.connection_info or (is_close(msg) and reply_code(msg) < 300)

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
        if is_close(msg) and reply_code(msg) >= 300:
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
            if pending is None or pending.direction is direction or is_close(pending.msg):
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
        self.ctx.emit(transaction(self.ctx.conn, self.config, direction, request, reply, notes))


SPEC = ProtocolSpec(
    name="amqp",
    config_class=AmqpConfig,
    fields=FIELDS,
    tcp=AmqpSession,
    description="AMQP 0-9-1 methods (RabbitMQ): requests paired with replies, published and delivered messages",
    counters=COUNTERS,
)
