"""The stream-parser contract: one shape for every TCP protocol's parser, and a session base with the defaults.

A stream parser is sans-IO.  It reads the bytes of one direction through a
`ReceiveBuffer` (agent/protocols/buffer.py) and decodes complete messages
with a `Cursor` (agent/protocols/cursor.py).  Its three entry points:

- `feed(data, ts_ns) -> list[Message]`: the next in-order bytes; the
  messages they completed, in order (an empty list: more bytes are needed).
  Malformed input raises `ParseError`; the messages completed before it were
  already returned by earlier calls, never lost with it (a parser that
  completes several per call lets the error carry those: `CarryCompleted`,
  and the session takes them with `completed`).
- `gap(nbytes, ts_ns) -> Gap[Message]`: `nbytes` of the direction were lost.
  `Gap.messages` are the messages the gap completed (a body cut short keeps
  its message, with a packet-loss note); `Gap.in_sync` says whether the
  framing survived (the hole fell inside a body of known length) or the
  parser now resynchronises, in which case requests waiting for answers
  from that direction can no longer be paired.
- `reset()`: drop partial state after a `ParseError` (or a lost sync) and
  look for the next message boundary.

Where one direction cannot be framed without the other (a MySQL reply is
read as its command says; PostgreSQL's startup decides the framing of both
sides) a single parser follows both, and the same three methods take the
direction first: `feed(direction, data, ts_ns)`, `gap(direction, nbytes,
ts_ns)`, `reset(direction)`.  The return types are the same.

`SessionBase` gives a `StreamSession` its defaults: nothing to do at FIN,
a gap or a parse error loses the direction's sync (`lose_sync`), and an idle
connection drops what is pending (`drop_pending`).  A session overrides
only what its protocol does differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from agent.metrics import Counters
from agent.protocols.base import C, SessionContext
from agent.transport.session import ParseError
from agent.transport.types import Direction

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Gap(Generic[M]):
    """What a gap did to a parser: the messages it completed, and whether the framing survived it."""

    messages: list[M]
    in_sync: bool


def lost_sync() -> Gap[M]:
    """The usual gap outcome: nothing completed, the parser resynchronises."""
    return Gap([], False)


def in_sync(*messages: M) -> Gap[M]:
    """A gap inside a body of known length: the framing holds; `messages` were completed by it."""
    return Gap(list(messages), True)


def completed(feed: Callable[[], list[M]]) -> tuple[list[M], ParseError | None]:
    """What `feed()` completed, and the ParseError it raised after them, if any.

    A parser's ParseError carries the messages the segment completed before
    the bad bytes (`error.messages`): they still count.  The session handles
    the messages, then raises the error for the transport to recover from.
    """
    try:
        return feed(), None
    except ParseError as exc:
        return exc.messages, exc


class CarryCompleted(Generic[M]):
    """`with CarryCompleted(out):` in a parser's `feed`: a ParseError raised inside carries `out`, the messages
    completed before it, for `completed` to hand to the session."""

    __slots__ = ("out",)

    def __init__(self, out: list[M]) -> None:
        self.out = out

    def __enter__(self) -> list[M]:
        return self.out

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if isinstance(error, ParseError):
            error.messages = self.out


class StreamParser(Protocol[M]):
    """One direction of a stream protocol."""

    def feed(self, data: bytes, ts_ns: int) -> list[M]: ...

    def gap(self, nbytes: int, ts_ns: int) -> Gap[M]: ...

    def reset(self) -> None: ...


class DuplexParser(Protocol[M]):
    """Both directions of a stream protocol whose framing of one side depends on the other."""

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[M]: ...

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> Gap[M]: ...

    def reset(self, direction: Direction) -> None: ...


class SessionBase(Generic[C]):
    """Defaults of a `StreamSession`; `ctx.config` is the protocol's own config class, typed."""

    __slots__ = ("config", "counters", "ctx")  # a subclass without __slots__ still gets its __dict__

    def __init__(self, ctx: SessionContext[C]) -> None:
        self.ctx = ctx
        self.config: C = ctx.config
        self.counters = ctx.counters

    def fin(self, direction: Direction, ts_ns: int) -> None:
        """A direction ended: by default nothing is due (what is pending is published or dropped at expiry)."""

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        """Bytes were lost: by default the direction resynchronises."""
        self.counters["gaps"] += 1
        self.lose_sync(direction)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """`feed` raised `error`: counted, and the direction resynchronises."""
        self.counters["parse_errors"] += 1
        self.lose_sync(direction)

    def lose_sync(self, direction: Direction) -> None:
        """Drop the direction's partial state (reset its parser; drop requests that cannot be paired now)."""

    def expire(self, ts_ns: int) -> None:
        """The connection went idle: by default what is pending is dropped (and counted)."""
        self.drop_pending()

    def drop_pending(self) -> None:
        """Forget requests waiting for an answer, counting them as unmatched."""

    def pending(self) -> int:
        return 0


class StartResync:
    """Where a text protocol finds its messages again after lost bytes: at a segment whose first byte may start one.

    A direction that lost its sync (`lose`) drops every segment until one starts with a byte of its start set,
    counting what it drops in `resync_dropped_bytes`.
    """

    __slots__ = ("counters", "starts", "waiting")

    def __init__(self, request_starts: frozenset[int], reply_starts: frozenset[int], counters: Counters) -> None:
        self.starts = {Direction.TO_SERVER: request_starts, Direction.TO_CLIENT: reply_starts}
        self.waiting = {Direction.TO_SERVER: False, Direction.TO_CLIENT: False}
        self.counters = counters

    def lose(self, direction: Direction) -> None:
        self.waiting[direction] = True

    def accepts(self, direction: Direction, data: bytes) -> bool:
        """Whether `data` is to be parsed: the direction is in sync, or `data` may start a message."""
        if self.waiting[direction]:
            if not data or data[0] not in self.starts[direction]:
                self.counters["resync_dropped_bytes"] += len(data)
                return False
            self.waiting[direction] = False
        return True
