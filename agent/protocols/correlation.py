"""Request/response correlation: FIFO per connection, or keyed by an id.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Both are bounded; what they push out is handed back to the caller (who
publishes it as unmatched) and counted, never silently forgotten.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

from agent.metrics import Counters

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

DEFAULT_QUEUE_MESSAGES: Final = 20000
DEFAULT_QUEUE_BYTES: Final = 1 << 20
DEFAULT_KEYED_ENTRIES: Final = 65536


class RequestQueue(Generic[T]):
    """Pipelined requests waiting for their responses, oldest first.

    Responses pop the oldest request (HTTP/1, Redis, MySQL, PgSQL...).  Over
    `max_messages` or `max_bytes`, the oldest requests are pushed out.
    """

    __slots__ = ("_bytes", "_counters", "_items", "max_bytes", "max_messages")

    def __init__(self, counters: Counters, max_messages: int = DEFAULT_QUEUE_MESSAGES,
                 max_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._counters = counters
        self.max_messages = max_messages
        self.max_bytes = max_bytes

    def push(self, item: T, size: int = 0) -> list[T]:
        """Queue `item`; returns the requests pushed out to make room (counted as queue_overflow)."""
        self._items.append((item, size))
        self._bytes += size
        evicted: list[T] = []
        while len(self._items) > 1 and (len(self._items) > self.max_messages or self._bytes > self.max_bytes):
            old, old_size = self._items.popleft()
            self._bytes -= old_size
            evicted.append(old)
        if evicted:
            self._counters.inc("queue_overflow", len(evicted))
        return evicted

    def pop(self) -> T | None:
        if not self._items:
            return None
        item, size = self._items.popleft()
        self._bytes -= size
        return item

    def peek(self) -> T | None:
        return self._items[0][0] if self._items else None

    def peek_last(self) -> T | None:
        return self._items[-1][0] if self._items else None

    def drain(self) -> list[T]:
        items = [item for item, _ in self._items]
        self._items.clear()
        self._bytes = 0
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def held(self) -> int:
        """Bytes of the queued requests, as pushed."""
        return self._bytes


class KeyedRequests(Generic[K, T]):
    """Requests waiting for a response with the same key (DNS id, ICMP id/seq).

    Entries expire `timeout_ns` after they were added; the table holds at most
    `max_entries` (the oldest is pushed out first).
    """

    __slots__ = ("_counters", "_items", "max_entries", "timeout_ns")

    def __init__(self, counters: Counters, timeout_ns: int, max_entries: int = DEFAULT_KEYED_ENTRIES) -> None:
        self._items: OrderedDict[K, tuple[int, T]] = OrderedDict()
        self._counters = counters
        self.timeout_ns = timeout_ns
        self.max_entries = max_entries

    def put(self, key: K, item: T, ts_ns: int) -> tuple[T | None, list[T]]:
        """Add `item`; returns (the request it replaced under the same key, requests pushed out)."""
        items = self._items
        previous = items.get(key)
        if previous is not None:
            del items[key]  # re-added below, as the newest
        items[key] = (ts_ns, item)
        evicted: list[T] = []
        while len(items) > self.max_entries:
            _, (_, old) = items.popitem(last=False)
            evicted.append(old)
        if evicted:
            self._counters.inc("table_overflow", len(evicted))
        return (previous[1] if previous else None), evicted

    def pop(self, key: K) -> T | None:
        # get and del rather than OrderedDict.pop, whose found-key path costs several times more.
        items = self._items
        entry = items.get(key)
        if entry is None:
            return None
        del items[key]
        return entry[1]

    def get(self, key: K) -> T | None:
        entry = self._items.get(key)
        return entry[1] if entry else None

    def expire(self, now_ns: int) -> list[T]:
        """Requests older than the timeout, oldest first, removed from the table."""
        out: list[T] = []
        deadline = now_ns - self.timeout_ns
        items = self._items
        while items:
            key = next(iter(items))
            ts, item = items[key]
            if ts > deadline:
                break
            del items[key]
            out.append(item)
        return out

    def drain(self) -> list[T]:
        out = [item for _, item in self._items.values()]
        self._items.clear()
        return out

    def __len__(self) -> int:
        return len(self._items)
