"""Prepared statements remembered per connection (MySQL statement ids, PostgreSQL statement names).

The store is keyed by the connection's 4-tuple, not by the transport's
session: the transport forgets an idle connection after
`transaction_timeout` (10 s), while a pooled connection may execute a
statement prepared an hour earlier (Packetbeat keeps statements for
`statement_timeout`, 3600 s, the same way).  One store serves every
session of a protocol configuration.

Bounded three ways, each with a counter for what it pushed out: statements
per connection, connections, and the bytes of SQL held overall.  Entries
expire `timeout_ns` after their last use, by packet time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from agent.metrics import Counters

V = TypeVar("V")

MAX_STATEMENTS_PER_CONNECTION = 4096
MAX_CONNECTIONS = 65536
MAX_STORE_BYTES = 64 << 20

ConnKey = tuple[bytes, int, bytes, int]


class _Connection(Generic[V]):
    __slots__ = ("items", "last_ns")

    def __init__(self, now_ns: int) -> None:
        self.items: OrderedDict[Hashable, tuple[int, V, int]] = OrderedDict()
        self.last_ns = now_ns


class StatementStore(Generic[V]):
    def __init__(self, counters: Counters, timeout_ns: int, *,
                 max_per_connection: int = MAX_STATEMENTS_PER_CONNECTION,
                 max_connections: int = MAX_CONNECTIONS, max_bytes: int = MAX_STORE_BYTES) -> None:
        self.counters = counters
        self.timeout_ns = timeout_ns
        self.max_per_connection = max_per_connection
        self.max_connections = max_connections
        self.max_bytes = max_bytes
        self._conns: OrderedDict[ConnKey, _Connection[V]] = OrderedDict()
        self._bytes = 0

    def get(self, conn: ConnKey, key: Hashable, now_ns: int) -> V | None:
        entry = self._conns.get(conn)
        if entry is None:
            return None
        item = entry.items.get(key)
        if item is None:
            return None
        ts, value, size = item
        if now_ns - ts > self.timeout_ns:
            del entry.items[key]
            self._bytes -= size
            self.counters.inc("statements_expired")
            return None
        entry.items[key] = (max(ts, now_ns), value, size)
        entry.items.move_to_end(key)
        entry.last_ns = max(entry.last_ns, now_ns)
        self._conns.move_to_end(conn)
        return value

    def put(self, conn: ConnKey, key: Hashable, value: V, size: int, now_ns: int) -> None:
        self._expire(now_ns)
        entry = self._conns.get(conn)
        if entry is None:
            entry = self._conns[conn] = _Connection(now_ns)
            while len(self._conns) > self.max_connections:
                _, old = self._conns.popitem(last=False)
                self._forget(old)
                self.counters.inc("statement_connections_evicted")
        else:
            self._conns.move_to_end(conn)
        previous = entry.items.pop(key, None)
        if previous is not None:
            self._bytes -= previous[2]
        entry.items[key] = (now_ns, value, size)
        entry.last_ns = max(entry.last_ns, now_ns)
        self._bytes += size
        while len(entry.items) > self.max_per_connection:
            _, (_, _, old_size) = entry.items.popitem(last=False)
            self._bytes -= old_size
            self.counters.inc("statements_evicted")
        while self._bytes > self.max_bytes and self._conns:
            oldest_key = next(iter(self._conns))
            oldest = self._conns[oldest_key]
            if oldest.items:
                _, (_, _, old_size) = oldest.items.popitem(last=False)
                self._bytes -= old_size
                self.counters.inc("statements_evicted")
            if not oldest.items:
                del self._conns[oldest_key]

    def delete(self, conn: ConnKey, key: Hashable) -> bool:
        entry = self._conns.get(conn)
        if entry is None:
            return False
        item = entry.items.pop(key, None)
        if item is None:
            return False
        self._bytes -= item[2]
        return True

    def drop_connection(self, conn: ConnKey) -> None:
        entry = self._conns.pop(conn, None)
        if entry is not None:
            self._forget(entry)

    def count(self, conn: ConnKey) -> int:
        entry = self._conns.get(conn)
        return len(entry.items) if entry else 0

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return sum(len(c.items) for c in self._conns.values())

    def _forget(self, entry: _Connection[V]) -> None:
        for _, _, size in entry.items.values():
            self._bytes -= size
        entry.items.clear()

    def _expire(self, now_ns: int) -> None:
        deadline = now_ns - self.timeout_ns
        while self._conns:
            key = next(iter(self._conns))
            entry = self._conns[key]
            if entry.last_ns >= deadline:
                break
            del self._conns[key]
            if entry.items:
                self.counters.inc("statements_expired", len(entry.items))
            self._forget(entry)


_MAX_OWNERS = 64
_SHARED: dict[int, tuple[object, StatementStore[object]]] = {}


def shared_store(owner: object, counters: Counters, timeout_ns: int) -> StatementStore[object]:
    """The one store for `owner` (a protocol's config object), created on first use."""
    found = _SHARED.get(id(owner))
    if found is not None and found[0] is owner:
        return found[1]
    store: StatementStore[object] = StatementStore(counters, timeout_ns)
    while len(_SHARED) >= _MAX_OWNERS:  # configurations come and go only in tests and reloads
        del _SHARED[next(iter(_SHARED))]
    _SHARED[id(owner)] = (owner, store)  # holding `owner` keeps its id from being reused
    return store
