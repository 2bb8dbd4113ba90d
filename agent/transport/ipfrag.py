"""IP fragment reassembly, bounded as Packetbeat bounds it.

Fragments are held per (family, src, dst, protocol, id) for at most
`timeout_ns`; a datagram may have at most `max_fragments` pieces and
`max_bytes` bytes, and at most `max_sets` datagrams are in flight.  What
exceeds a bound is dropped and counted.  Fragments may arrive in any order.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from agent.capture.packet import (
    F_LAST_CHUNK,
    F_MORE_FRAGS,
    F_TRUNCATED,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Packet,
)
from agent.metrics import Counters


@dataclass(frozen=True, slots=True)
class FragmentLimits:
    timeout_ns: int = 1_000_000_000
    max_fragments: int = 64
    max_sets: int = 512
    max_bytes: int = 65535


FRAGMENT_COUNTERS = (
    "fragments",
    "reassembled",
    "expired",
    "too_many_fragments",
    "too_large",
    "sets_evicted",
    "overlapping",
    "bad_l4_header",
    "truncated_fragment",
)


class _Set:
    __slots__ = ("first_ts", "last_ts", "pieces", "total", "truncated", "wire_len")

    def __init__(self, ts_ns: int) -> None:
        self.first_ts = ts_ns
        self.last_ts = ts_ns
        self.pieces: dict[int, bytes] = {}
        self.total: int | None = None
        self.truncated = False
        self.wire_len = 0


class FragmentReassembler:
    def __init__(self, counters: Counters, limits: FragmentLimits | None = None) -> None:
        self.counters = counters
        self.limits = limits or FragmentLimits()
        self._sets: OrderedDict[tuple[int, bytes, bytes, int, int], _Set] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, frag: Packet) -> Packet | None:
        """Take one fragment; returns the whole datagram's packet once every piece is in."""
        counters = self.counters
        limits = self.limits
        counters["fragments"] += 1
        key = (frag.family, frag.src, frag.dst, frag.l4proto, frag.frag_id)
        entry = self._sets.get(key)
        if entry is None:
            self.expire(frag.ts_ns)
            while len(self._sets) >= limits.max_sets:
                self._sets.popitem(last=False)
                counters["sets_evicted"] += 1
            entry = self._sets[key] = _Set(frag.ts_ns)
        entry.last_ts = frag.ts_ns
        entry.wire_len += frag.wire_len
        if frag.flags & F_TRUNCATED or frag.missing:
            entry.truncated = True
        end = frag.frag_off + len(frag.payload) + frag.missing
        if end > limits.max_bytes:
            counters["too_large"] += 1
            del self._sets[key]
            return None
        if frag.frag_off in entry.pieces:
            counters["overlapping"] += 1
        entry.pieces[frag.frag_off] = frag.payload
        if len(entry.pieces) > limits.max_fragments:
            counters["too_many_fragments"] += 1
            del self._sets[key]
            return None
        if not frag.flags & F_MORE_FRAGS:
            entry.total = end
        if entry.total is None:
            return None
        data = self._assemble(entry)
        if data is None:
            return None
        del self._sets[key]
        if entry.truncated:
            counters["truncated_fragment"] += 1
            return None
        counters["reassembled"] += 1
        return self._packet(frag, data, entry.wire_len, entry.first_ts)

    def _assemble(self, entry: _Set) -> bytes | None:
        out = bytearray()
        for off in sorted(entry.pieces):
            piece = entry.pieces[off]
            if off > len(out):
                return None  # a hole: more to come
            if off < len(out):
                self.counters["overlapping"] += 1
                piece = piece[len(out) - off:]
            out += piece
        if entry.total is None or len(out) < entry.total:
            return None
        return bytes(out[: entry.total])

    def _packet(self, frag: Packet, data: bytes, wire_len: int, ts_ns: int) -> Packet | None:
        proto = frag.l4proto
        try:
            if proto == IPPROTO_UDP:
                sport, dport, length = struct.unpack_from("!HHH", data)
                payload = data[8:length] if 8 <= length <= len(data) else data[8:]
                return Packet(ts_ns, frag.family, proto, frag.src, frag.dst, sport, dport, payload,
                              wire_len=wire_len, flags=F_LAST_CHUNK, ifindex=frag.ifindex,
                              direction=frag.direction, link=frag.link)
            if proto == IPPROTO_TCP:
                sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", data)
                doff = (off_flags >> 12) * 4
                if doff < 20 or doff > len(data):
                    raise struct.error("bad data offset")
                return Packet(ts_ns, frag.family, proto, frag.src, frag.dst, sport, dport, data[doff:],
                              seq=seq, ack=ack, tcp_flags=off_flags & 0xFF, window=window, wire_len=wire_len,
                              flags=F_LAST_CHUNK, ifindex=frag.ifindex, direction=frag.direction,
                              link=frag.link)
            if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                if len(data) < 4:
                    raise struct.error("short ICMP header")
                return Packet(ts_ns, frag.family, proto, frag.src, frag.dst, 0, 0, data, wire_len=wire_len,
                              flags=F_LAST_CHUNK, ifindex=frag.ifindex, direction=frag.direction,
                              link=frag.link)
        except struct.error:
            self.counters["bad_l4_header"] += 1
            return None
        # Other protocols keep their bytes: a reassembled GRE or IP-in-IP datagram may be opened (tunnels).
        return Packet(ts_ns, frag.family, proto, frag.src, frag.dst, 0, 0, data, wire_len=wire_len,
                      flags=F_LAST_CHUNK, link=frag.link)

    def expire(self, now_ns: int) -> None:
        deadline = now_ns - self.limits.timeout_ns
        sets = self._sets
        while sets:
            key = next(iter(sets))
            if sets[key].first_ts > deadline:
                break
            del sets[key]
            self.counters["expired"] += 1
