"""Redis's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.protocols.base import Transaction
from agent.protocols.redis.parser import RespMessage
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.redis.plugin import RedisConfig

# Besides these: method, resource, query, request, response and event.action/outcome (common fields).
FIELDS = """
redis.return_value keyword
redis.error keyword
"""


def transaction(conn: ConnectionInfo, req: RespMessage, method: str, resource: str, replies: list[RespMessage],
                config: RedisConfig) -> Transaction:
    """A command and its replies (several for a subscription) as Packetbeat publishes them."""
    last = replies[-1]
    text = last.text if len(replies) == 1 else "[" + ", ".join(r.text for r in replies) + "]"
    error = any(r.is_error for r in replies)
    redis: dict[str, str] = {"error": text} if error else {"return_value": text}
    event: dict[str, str] = {"action": "redis." + method.lower()}
    if error:
        event["outcome"] = "failure"
    fields: dict[str, object] = {"method": method, "resource": resource, "query": req.text,
                                 "redis": redis, "event": event}
    if config.send_request:
        fields["request"] = req.text
    if config.send_response:
        fields["response"] = text
    return Transaction(
        type="redis", conn=conn, ts_ns=req.ts_ns, end_ns=max(last.ts_ns, req.ts_ns),
        status="Error" if error else "OK", client_bytes=req.size,
        server_bytes=sum(r.size for r in replies), fields=fields)
