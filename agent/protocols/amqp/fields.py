"""AMQP's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.protocols.amqp.methods import CONTENT
from agent.protocols.amqp.parser import AmqpMessage
from agent.protocols.base import Transaction
from agent.transport.types import ConnectionInfo, Direction

if TYPE_CHECKING:
    from agent.protocols.amqp.plugin import AmqpConfig

# Packetbeat's amqp fields.yml, plus what pktbeat publishes beyond it: the connection negotiation
# (hide_connection_information: false) and the other methods' arguments.  Field tables
# (arguments, headers, client/server properties) hold anything: their strings map as keywords.
# Besides these: method, request, response, user.id and event.action (common fields).
FIELDS = """
amqp object
amqp.reply-code long
amqp.reply-text keyword
amqp.class-id long
amqp.method-id long
amqp.exchange keyword
amqp.exchange-type keyword
amqp.passive boolean
amqp.durable boolean
amqp.exclusive boolean
amqp.auto-delete boolean
amqp.no-wait boolean
amqp.consumer-tag keyword
amqp.delivery-tag long
amqp.message-count long
amqp.consumer-count long
amqp.routing-key keyword
amqp.no-ack boolean
amqp.no-local boolean
amqp.if-unused boolean
amqp.if-empty boolean
amqp.queue keyword
amqp.redelivered boolean
amqp.multiple boolean
amqp.requeue boolean
amqp.arguments object dynamic=keyword
amqp.mandatory boolean
amqp.immediate boolean
amqp.content-type keyword
amqp.content-encoding keyword
amqp.headers object dynamic=keyword
amqp.delivery-mode keyword
amqp.priority long
amqp.correlation-id keyword
amqp.reply-to keyword
amqp.expiration keyword
amqp.message-id keyword
amqp.timestamp keyword
amqp.type keyword
amqp.user-id keyword
amqp.app-id keyword
amqp.source keyword
amqp.destination keyword
amqp.active boolean
amqp.global boolean
amqp.prefetch-size long
amqp.prefetch-count long
amqp.version-major long
amqp.version-minor long
amqp.server-properties object dynamic=keyword
amqp.client-properties object dynamic=keyword
amqp.mechanisms keyword
amqp.mechanism keyword
amqp.locales keyword
amqp.locale keyword
amqp.channel-max long
amqp.frame-max long
amqp.heartbeat long
amqp.virtual-host keyword
"""

CLOSE_OK_MISSING = "Close-ok method not received by sender"


def is_close(msg: AmqpMessage) -> bool:
    return msg.method in ("connection.close", "channel.close")


def reply_code(msg: AmqpMessage) -> int:
    code = msg.fields.get("reply-code", 0)
    return code if isinstance(code, int) else 0


def body_text(body: bytes, size: int, fields: dict[str, Any]) -> str:
    """Packetbeat's body rendering: text for text/json content, else the byte values."""
    encoding = fields.get("content-encoding")
    content_type = fields.get("content-type")
    if not encoding and isinstance(content_type, str) and ("text" in content_type or "json" in content_type):
        text = body.decode("utf-8", "replace")
    else:
        text = " ".join(str(b) for b in body)
    return text + " [...]" if len(body) < size else text


class _Exchange:
    """A request (or a lone message) with its reply, merged as Packetbeat merges them."""

    __slots__ = ("amqp", "body_owner", "client_bytes", "end_ns", "method", "notes", "response_text",
                 "server_bytes")

    def __init__(self, direction: Direction, request: AmqpMessage, reply: AmqpMessage | None) -> None:
        self.method = request.method
        self.amqp: dict[str, Any] = dict(request.fields)
        self.notes = list(request.notes)
        self.end_ns: int | None = None
        self.response_text = ""
        self.body_owner: AmqpMessage | None = None
        replier_bytes = 0
        if request.role == CONTENT:
            # publish / deliver / return / get-ok on its own: the message itself is the transaction.
            self.body_owner = request
            if self.method == "basic.get-ok":
                self.method = "basic.get"
        elif reply is not None:
            self._merge(request, reply)
            replier_bytes = reply.size
        # Who sent the request decides which side each size belongs to.
        requester_side, replier_side = (request.size, replier_bytes)
        if direction is Direction.TO_SERVER:
            self.client_bytes, self.server_bytes = requester_side, replier_side
        else:
            self.client_bytes, self.server_bytes = replier_side, requester_side

    def _merge(self, request: AmqpMessage, reply: AmqpMessage) -> None:
        self.amqp.update(reply.fields)
        self.notes.extend(reply.notes)
        self.end_ns = max(reply.ts_ns, request.ts_ns)
        if reply.role == CONTENT:  # basic.get answered by basic.get-ok
            self.body_owner = reply
        elif is_close(reply):  # the request was refused
            self.response_text = str(reply.fields.get("reply-text", ""))
        else:
            self.response_text = "OK"
            if reply.method == "basic.get-empty":
                self.method = "basic.get-empty"

    def body(self) -> str | None:
        owner = self.body_owner
        return body_text(owner.body, owner.body_size, owner.fields) if owner is not None else None


def transaction(conn: ConnectionInfo, config: AmqpConfig, direction: Direction, request: AmqpMessage,
                reply: AmqpMessage | None, notes: list[str] | None = None) -> Transaction:
    """A request and its reply (or a lone message) as Packetbeat publishes it."""
    exchange = _Exchange(direction, request, reply)
    method = exchange.method
    if notes:
        exchange.notes.extend(notes)
    status = "Error" if (method in ("basic.return", "basic.reject")
                         or (is_close(request) and reply_code(request) >= 300)
                         or (reply is not None and is_close(reply))) else "OK"
    amqp = exchange.amqp
    fields: dict[str, Any] = {"method": method, "amqp": amqp, "event": {"action": f"amqp.{method}"}}
    user = amqp.get("user-id")
    if isinstance(user, str):
        fields["user"] = {"id": user}
    body = exchange.body()
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
            fields["response"] = exchange.response_text
    return Transaction(
        type="amqp", conn=conn, ts_ns=request.ts_ns, end_ns=exchange.end_ns, status=status,
        client_bytes=exchange.client_bytes or None, server_bytes=exchange.server_bytes or None,
        notes=exchange.notes, fields=fields)
