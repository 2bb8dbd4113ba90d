"""Giving IP fragments the ports of their datagram, so flow counts match what tcpdump sees.

Only the first fragment of a datagram carries the TCP/UDP header.  Packetbeat
reassembles IPv4 datagrams first and then counts one packet per datagram
(the frame that completed it); tcpdump counts every fragment.  pktbeat
counts every fragment frame in the flow of its datagram: the first fragment
tells the ports, later fragments of the same (addresses, protocol, IP id)
reuse them, and fragments that arrive before the first wait for it for up
to `HOLD_NS`.  Fragments whose first never comes are counted in a flow
without ports, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from agent.capture.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet

HOLD_NS = 1_000_000_000  # as long as Packetbeat holds fragments for reassembly
MAX_DATAGRAMS = 512  # datagrams tracked at once (Packetbeat's fragment-set limit)
MAX_WAITING = 64  # fragments held per datagram before its first one (Packetbeat's per-datagram limit)

FragKey = tuple[int, int, bytes, bytes, int]  # family, protocol, src, dst, IP id


class L4Info(NamedTuple):
    sport: int
    dport: int
    icmp_header: bytes | None  # type and code of an ICMP datagram


# Called for every fragment with the L4 information it gets (ports 0 when unknown).
Count = Callable[[Packet, int, int, "bytes | None"], None]


class FragmentTracker:
    def __init__(self, count: Count, stats: dict[str, int]) -> None:
        self._count = count
        self.stats = stats
        self._known: dict[FragKey, tuple[L4Info, int]] = {}  # datagram -> (ports, expiry)
        self._waiting: dict[FragKey, tuple[list[Packet], int]] = {}  # datagram -> (fragments, expiry)

    def fragment(self, pkt: Packet) -> None:
        key: FragKey = (pkt.family, pkt.l4proto, pkt.src, pkt.dst, pkt.frag_id)
        expiry = pkt.ts_ns + HOLD_NS
        if pkt.frag_off == 0:
            info = _l4_info(pkt.l4proto, pkt.payload)
            self._remember(key, info, expiry)
            self._count(pkt, info.sport, info.dport, info.icmp_header)
            waiting = self._waiting.pop(key, None)
            if waiting is not None:
                self.stats["fragments_resolved"] += len(waiting[0])
                for held in waiting[0]:
                    self._count(held, info.sport, info.dport, None)
            return
        known = self._known.get(key)
        if known is not None:
            self._known[key] = (known[0], expiry)
            self._count(pkt, known[0].sport, known[0].dport, None)
            return
        waiting = self._waiting.get(key)
        if waiting is None:
            if len(self._waiting) >= MAX_DATAGRAMS:
                self.expire(pkt.ts_ns)
                if len(self._waiting) >= MAX_DATAGRAMS:
                    self._release(next(iter(self._waiting)), "fragments_unmatched")
            self._waiting[key] = ([pkt], expiry)
        elif len(waiting[0]) >= MAX_WAITING:
            self.stats["fragments_over_limit"] += 1
            self._count(pkt, 0, 0, None)
        else:
            waiting[0].append(pkt)

    def expire(self, now_ns: int) -> None:
        """Count fragments that waited too long without ports, and forget stale datagrams."""
        if self._waiting:
            for key in [k for k, (_, exp) in self._waiting.items() if exp <= now_ns]:
                self._release(key, "fragments_unmatched")
        if self._known:
            for key in [k for k, (_, exp) in self._known.items() if exp <= now_ns]:
                del self._known[key]

    def flush(self) -> None:
        """End of input: whatever still waits is counted without ports."""
        for key in list(self._waiting):
            self._release(key, "fragments_unmatched")
        self._known.clear()

    def _remember(self, key: FragKey, info: L4Info, expiry: int) -> None:
        known = self._known
        if key not in known and len(known) >= MAX_DATAGRAMS:
            self.expire(expiry - HOLD_NS)
            if len(known) >= MAX_DATAGRAMS:
                del known[next(iter(known))]
                self.stats["fragments_forgotten_datagrams"] += 1
        known[key] = (info, expiry)

    def _release(self, key: FragKey, counter: str) -> None:
        held, _ = self._waiting.pop(key)
        self.stats[counter] += len(held)
        for pkt in held:
            self._count(pkt, 0, 0, None)


def _l4_info(proto: int, payload: bytes) -> L4Info:
    if proto in (IPPROTO_TCP, IPPROTO_UDP) and len(payload) >= 4:
        return L4Info(int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big"), None)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(payload) >= 2:
        return L4Info(0, 0, payload[:2])
    return L4Info(0, 0, None)
