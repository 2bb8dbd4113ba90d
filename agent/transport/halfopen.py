"""Connections that have carried no payload yet: a SYN, a SYN-ACK, bare ACKs.

A SYN flood opens hundreds of thousands of them and most never carry a byte.
Until the first payload (or FIN) a connection is only this small record: the
protocol binding, who the client is (the key's orientation), both initial
sequence numbers and when it was last seen.  No session, no streams, no
buffers: about a tenth of a connection.  The table has its own cap
(`packetbeat.tcp.max_half_open`), smaller than the one for connections with
payload; when it is full the oldest entry goes, counted.
"""

from __future__ import annotations

from collections import OrderedDict

from agent.capture.tunnel import TunnelInfo
from agent.metrics import Counters
from agent.transport.session import StreamBinding

# (client ip, client port, server ip, server port), plus the tunnel's zone for decapsulated packets
Key = tuple[object, ...]


class HalfOpen:
    """What a SYN and a SYN-ACK taught us about a connection, until it carries data."""

    __slots__ = ("binding", "client_isn", "last_ns", "server_isn", "tunnel")

    def __init__(self, binding: StreamBinding, ts_ns: int, tunnel: TunnelInfo | None) -> None:
        self.binding = binding
        self.tunnel = tunnel  # as seen from the client
        self.client_isn = -1  # the client's SYN sequence number; -1: not seen
        self.server_isn = -1  # the server's SYN-ACK sequence number; -1: not seen
        self.last_ns = ts_ns


class HalfOpenTable:
    """Half-open connections in least-recently-seen order, at most `limit` of them."""

    def __init__(self, limit: int, counters: Counters) -> None:
        self.limit = limit
        self.counters = counters
        self.entries: OrderedDict[Key, HalfOpen] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, key: Key) -> tuple[Key, HalfOpen, bool] | None:
        """The entry of the segment whose key is `key`, with the entry's key and whether the client sent it."""
        entry = self.entries.get(key)
        if entry is not None:
            return key, entry, True
        rkey = (key[2], key[3], key[0], key[1], *key[4:])
        entry = self.entries.get(rkey)
        if entry is not None:
            return rkey, entry, False
        return None

    def add(self, key: Key, binding: StreamBinding, ts_ns: int, tunnel: TunnelInfo | None) -> HalfOpen:
        while len(self.entries) >= self.limit:
            self.entries.popitem(last=False)
            self.counters["half_open_evicted"] += 1
        entry = self.entries[key] = HalfOpen(binding, ts_ns, tunnel)
        self.counters["half_open"] += 1
        return entry

    def touch(self, key: Key, entry: HalfOpen, ts_ns: int) -> None:
        entry.last_ns = ts_ns
        self.entries.move_to_end(key)

    def pop(self, key: Key) -> None:
        self.entries.pop(key, None)

    def oldest_ns(self) -> int | None:
        for entry in self.entries.values():
            return entry.last_ns
        return None

    def shed_oldest(self) -> None:
        self.entries.popitem(last=False)

    def expire(self, now_ns: int, min_timeout_ns: int) -> None:
        """Forget entries idle past their protocol's transaction_timeout."""
        entries = self.entries
        horizon = now_ns - min_timeout_ns
        stale: list[Key] = []
        for key, entry in entries.items():
            if entry.last_ns > horizon:
                break
            if entry.last_ns + entry.binding.timeout_ns <= now_ns:
                stale.append(key)
        for key in stale:
            del entries[key]
