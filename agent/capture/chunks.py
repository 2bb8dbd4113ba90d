"""Joining the records of a non-TCP packet that the kernel split (payload larger than PB_CHUNK).

TCP chunks need no joining: each carries its own sequence number, so the
stream reassembler takes them as segments.  A UDP datagram, an ICMP message
or an IP fragment must be whole, so its pieces are collected until the one
flagged last.  The kernel writes the pieces of one packet in order from one
CPU to one ring; a piece it could not write ends the packet there, so a
packet that never completes is dropped after `timeout_ns` and counted.
"""

from __future__ import annotations

from collections import OrderedDict

from agent.capture.packet import F_LAST_CHUNK, Packet
from agent.metrics import Counters

CHUNK_COUNTERS = ("joined", "incomplete", "evicted")
MAX_PENDING = 256
TIMEOUT_NS = 1_000_000_000

_Key = tuple[int, int, int, int, bytes, bytes, int, int]


class ChunkJoiner:
    def __init__(self, counters: Counters, max_pending: int = MAX_PENDING, timeout_ns: int = TIMEOUT_NS) -> None:
        self.counters = counters
        self.max_pending = max_pending
        self.timeout_ns = timeout_ns
        # Public so the hot loop can test "anything pending?" without a call.
        self.waiting: OrderedDict[_Key, tuple[Packet, list[bytes]]] = OrderedDict()
        self._pending = self.waiting

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, pkt: Packet) -> Packet | None:
        """Take one piece; returns the whole packet when `pkt` completes it."""
        key = (pkt.ts_ns, pkt.ifindex, pkt.direction, pkt.l4proto, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        entry = self._pending.get(key)
        if entry is None:
            if pkt.flags & F_LAST_CHUNK:
                return pkt  # whole already
            while len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
                self.counters["evicted"] += 1
            self._pending[key] = (pkt, [pkt.payload])
            return None
        first, parts = entry
        parts.append(pkt.payload)
        if not pkt.flags & F_LAST_CHUNK:
            return None
        del self._pending[key]
        first.payload = b"".join(parts)
        first.flags = pkt.flags
        first.missing = pkt.missing
        self.counters["joined"] += 1
        return first

    def expire(self, now_ns: int) -> None:
        horizon = now_ns - self.timeout_ns
        pending = self._pending
        while pending:
            key = next(iter(pending))
            if key[0] > horizon:
                break
            del pending[key]
            self.counters["incomplete"] += 1
