"""Redis transactions: pipelined requests paired FIFO with their replies.

What is not a reply is kept out of the pairing: pub/sub messages and RESP3
pushes, MONITOR's feed, the commands a master streams to a replica (and
the replica's REPLCONF ACKs), and commands sent while CLIENT REPLY is OFF
or SKIP.  Requests wait in a bounded per-connection queue
(`queue_max_messages`, `queue_max_bytes`); what it pushes out is counted as
unmatched.  As in Packetbeat, unmatched requests and replies are counted,
not published.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.correlation import RequestQueue
from agent.protocols.redis.commands import (
    PUBSUB_MESSAGES,
    SUBSCRIBE,
    SUBSCRIPTION_REPLIES,
    UNSUBSCRIBE,
    method_and_resource,
)
from agent.protocols.redis.fields import FIELDS, transaction
from agent.protocols.redis.parser import RespMessage, RespParser
from agent.protocols.stream import SessionBase, StartResync
from agent.transport.types import Direction

_UNLIMITED = 1 << 62
_REQUEST_START = frozenset(b"*abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REPLY_START = frozenset(b"+-:$*%~>_,#(!=|\n")

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "queue_overflow", "pushes",
            "replication_messages", "unreplied_requests", "gaps", "resync_dropped_bytes")


@dataclass(frozen=True)
class RedisConfig(ProtocolConfig):
    # Per connection; 0 (or less) disables the limit, as in Packetbeat.
    queue_max_bytes: int = opt(1 << 20, kind="size")
    queue_max_messages: int = opt(20000)


class _Request:
    __slots__ = ("expect", "method", "msg", "replies", "resource")

    def __init__(self, msg: RespMessage, method: str, resource: str) -> None:
        self.msg = msg
        self.method = method
        self.resource = resource
        # Subscription commands get one confirmation per channel (-1: until none is left).
        self.expect = 1
        self.replies: list[RespMessage] = []


class RedisSession(SessionBase[RedisConfig]):
    def __init__(self, ctx: SessionContext[RedisConfig]) -> None:
        super().__init__(ctx)
        config = self.config
        self.parsers = (RespParser(Direction.TO_SERVER), RespParser(Direction.TO_CLIENT))
        self.queue: RequestQueue[_Request] = RequestQueue(
            ctx.counters, config.queue_max_messages if config.queue_max_messages > 0 else _UNLIMITED,
            config.queue_max_bytes if config.queue_max_bytes > 0 else _UNLIMITED)
        self.resync = StartResync(_REQUEST_START, _REPLY_START, ctx.counters)
        self.subscriptions = 0  # channels + patterns this client is subscribed to (RESP2 pub/sub mode)
        self.monitoring = False
        self.replies_off = False  # CLIENT REPLY OFF
        self.skip_next = False  # CLIENT REPLY SKIP
        self.replica = False  # the client did SYNC/PSYNC: it is a replica, not a client

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if not self.resync.accepts(direction, data):
            return
        messages = self.parsers[direction].feed(data, ts_ns)
        if direction is Direction.TO_SERVER:
            for msg in messages:
                self._on_request(msg)
        else:
            for msg in messages:
                self._on_reply(msg)

    # gap, recover: SessionBase's (RESP has no length framing to skip a hole with: lose_sync and wait for a
    # segment that starts a message); fin: nothing; expire: drop_pending.

    def pending(self) -> int:
        return len(self.queue)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered + self.queue.held

    # -- requests ------------------------------------------------------------------

    def _on_request(self, msg: RespMessage) -> None:
        if self.replica:
            self.counters["replication_messages"] += 1  # REPLCONF ACK: never answered
            return
        method, resource = method_and_resource(msg.args, msg.nargs)
        if method == "CLIENT REPLY":
            mode = resource.upper()
            if mode == "OFF":
                self.replies_off = True
            elif mode == "SKIP":
                self.skip_next = True
            elif mode == "ON":
                self.replies_off = False
                self._queue(_Request(msg, method, resource))
                return
            self.counters["unreplied_requests"] += 1
            return
        if self.replies_off or self.skip_next:
            self.skip_next = False
            self.counters["unreplied_requests"] += 1
            return
        request = _Request(msg, method, resource)
        if method in SUBSCRIBE:
            request.expect = max(1, msg.nargs - 1)
        elif method in UNSUBSCRIBE:
            request.expect = msg.nargs - 1 if msg.nargs > 1 else -1
        elif method == "SYNC":
            self.parsers[Direction.TO_CLIENT].expect_snapshot()
        self._queue(request)

    def _queue(self, request: _Request) -> None:
        evicted = self.queue.push(request, len(request.msg.text))
        if evicted:
            self.counters["unmatched_requests"] += len(evicted)

    # -- replies -------------------------------------------------------------------

    def _on_reply(self, msg: RespMessage) -> None:
        kind = msg.kind
        if msg.replicated or (kind == "rdb" and not self._awaits_snapshot()):
            self.counters["replication_messages"] += 1
            return
        first = msg.args[0].lower() if msg.args else b""
        confirms = first in SUBSCRIPTION_REPLIES and msg.nargs >= 3 and self._awaits_confirmation()
        if kind == ">" and not confirms:
            self.counters["pushes"] += 1  # RESP3 out-of-band data: pub/sub message, invalidation...
            return
        if self.subscriptions and kind == "*" and first in PUBSUB_MESSAGES and msg.nargs >= 3:
            self.counters["pushes"] += 1  # RESP2 pub/sub message
            return
        if self.monitoring and kind == "+" and msg.text[:1].isdigit():
            self.counters["pushes"] += 1  # MONITOR feed line
            return
        request = self.queue.peek()
        if request is None:
            self.counters["unmatched_responses"] += 1
            return
        if confirms:
            self._subscription_reply(request, msg)
            return
        self.queue.pop()
        if request.method == "MONITOR" and not msg.is_error:
            self.monitoring = True
        elif request.method in ("SYNC", "PSYNC") and not msg.is_error:
            self.replica = True
        self._publish(request, [msg])

    def _awaits_confirmation(self) -> bool:
        request = self.queue.peek()
        return request is not None and (request.method in SUBSCRIBE or request.method in UNSUBSCRIBE)

    def _awaits_snapshot(self) -> bool:
        request = self.queue.peek()
        return request is not None and request.method == "SYNC"

    def _subscription_reply(self, request: _Request, msg: RespMessage) -> None:
        try:
            self.subscriptions = int(msg.args[2])
        except (ValueError, IndexError):
            pass
        request.replies.append(msg)
        if request.expect > 0:
            request.expect -= 1
            done = request.expect == 0
        else:
            done = self.subscriptions == 0
        if done or len(request.replies) >= 1024:
            self.queue.pop()
            self._publish(request, request.replies)

    def _publish(self, request: _Request, replies: list[RespMessage]) -> None:
        self.ctx.emit(transaction(self.ctx.conn, request.msg, request.method, request.resource, replies,
                                  self.config))

    # -- loss ----------------------------------------------------------------------

    def lose_sync(self, direction: Direction) -> None:
        self.parsers[direction].reset()
        self.resync.lose(direction)
        self.drop_pending()

    def drop_pending(self) -> None:
        dropped = self.queue.drain()
        if dropped:
            self.counters["unmatched_requests"] += len(dropped)


def _session(ctx: SessionContext) -> RedisSession:
    return RedisSession(ctx)


SPEC = ProtocolSpec(
    name="redis",
    config_class=RedisConfig,
    fields=FIELDS,
    tcp=_session,
    description="Redis RESP2/RESP3 commands paired with their replies",
    counters=COUNTERS,
)
