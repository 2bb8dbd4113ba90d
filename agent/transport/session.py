"""What the transport layer calls: the session interfaces and the parse error they may raise.

Protocol packages implement these; the transport layer knows nothing else
about them.  A `Binding` is how the wiring code tells the dispatcher which
factory serves which port.

A session may hand its connection over to another protocol (STARTTLS, an
SSLRequest answered 'S', an HTTP CONNECT answered 2xx...): it posts one
`HandOver` to the `HandOvers` mailbox its context was given, and when the
session's current call returns, the transport replaces the session with a
new one of that protocol and feeds it the bytes each direction already
carried past the switch (docs/adding-a-protocol.md, "Handing a connection
over").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.transport.types import ConnectionInfo, Direction


class ParseError(Exception):
    """Malformed input: the one exception a parser may raise.

    The transport dispatcher catches it, counts it, asks the session to
    resynchronise and carries on.  Any other exception from a parser is a bug.
    """

    def __init__(self, protocol: str, direction: Direction | None, offset: int, reason: str) -> None:
        where = f" ({direction.name.lower()})" if direction is not None else ""
        super().__init__(f"{protocol}{where} at offset {offset}: {reason}")
        self.protocol = protocol
        self.direction = direction
        self.offset = offset
        self.reason = reason
        # Messages the parser completed in the same call before the error, for the session to handle
        # (a parser that returns its messages as a list would otherwise lose them with the exception).
        self.messages: list[Any] = []


class StreamSession(Protocol):
    """One TCP connection's protocol state, fed in order per direction."""

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None: ...

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        """`nbytes` of this direction were lost; the next `feed` continues after them."""

    def fin(self, direction: Direction, ts_ns: int) -> None:
        """This direction ended (FIN, or RST for both)."""

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """`feed` raised `error`: drop the direction's partial state and resynchronise."""

    def expire(self, ts_ns: int) -> None:
        """The connection was idle for transaction_timeout: publish what is due, then forget."""

    def pending(self) -> int:
        """Requests not yet published (for end-of-input accounting)."""
        ...

    def buffered(self) -> int:
        """Bytes held for messages not yet complete, both directions (the worker's `max_buffered` counts them).

        Asked only after the session was called, so it may cost a little.  Over the
        limit, the worker calls `recover` on both directions of the sessions idle
        longest that hold bytes: they must drop that partial state (a session that
        still holds bytes afterwards is closed).
        """
        ...


class DatagramHandler(Protocol):
    """A protocol's state for all of its datagrams (UDP, or ICMP)."""

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None: ...

    def tick(self, now_ns: int) -> None:
        """Publish transactions whose timeout passed."""

    def pending(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HandOver:
    """From here on the connection is `protocol`; `pending` are the bytes each direction (by Direction)
    already carried past the switch, which the new session is fed first."""

    protocol: str
    pending: tuple[bytes, bytes]
    ts_ns: int


class HandOvers:
    """Hand-over requests from sessions to the transport that feeds them, by connection id.

    One per dispatcher: the wiring gives it to every session context and to
    the dispatcher, which takes a connection's request when the session call
    that posted it returns.  At most one request per connection is pending
    (a later one replaces it).
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[int, HandOver] = {}

    def post(self, conn: ConnectionInfo, request: HandOver) -> None:
        self.pending[conn.conn_id] = request

    def take(self, conn: ConnectionInfo) -> HandOver | None:
        return self.pending.pop(conn.conn_id, None)


@dataclass(frozen=True, slots=True)
class StreamBinding:
    """A protocol serving TCP ports: how to make a session for a new connection."""

    protocol: str
    timeout_ns: int
    new_session: Callable[[ConnectionInfo], StreamSession]


@dataclass(frozen=True, slots=True)
class DatagramBinding:
    """A protocol serving UDP ports (or ICMP): its one handler."""

    protocol: str
    handler: DatagramHandler


class NullSession:
    """Stands in for a session that failed, or a connection that is no longer parsed: swallows everything."""

    __slots__ = ()

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        pass

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        pass

    def fin(self, direction: Direction, ts_ns: int) -> None:
        pass

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        pass

    def expire(self, ts_ns: int) -> None:
        pass

    def pending(self) -> int:
        return 0

    def buffered(self) -> int:
        return 0
