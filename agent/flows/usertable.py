"""The user-space flow source: a bounded table of bidirectional flows fed with decoded Packets (file replay).

Flow identity follows Packetbeat's flow id: the two (address, port)
endpoints, the protocol, the VLAN tags, the tunnel the packets travel in, and
the Ethernet addresses unless `allow_mismatched_eth` is set (so the two
halves of a conversation routed through different MACs are two flows, as in
Packetbeat).  A decapsulated packet counts in its inner flow and, through
the carriers the decoder attached to it, in the flow of every outer layer.
ICMP flows are not split by echo id (see `FlowKey`).  Every IP frame counts,
TCP packets without payload included; fragments count in their datagram's
flow (`agent.flows.fragments`).  Non-IP frames never reach here.

The table holds at most `max_flows` flows.  A new flow in a full table makes
room by ending the least recently active sixteenth of the table; those flows
go to `on_evict` (the reporter sends their final report) and are counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from operator import attrgetter

from agent import metrics
from agent.capture.packet import F_FRAGMENT, F_LAST_CHUNK, F_TUNNEL, IPPROTO_ICMP, IPPROTO_ICMPV6, Packet
from agent.capture.tunnel import TunnelInfo
from agent.flows.fragments import FragmentTracker
from agent.flows.types import FlowKey, FlowSnapshot

TABLE_COUNTERS = ("flows_created", "flows_evicted", "fragments_resolved", "fragments_unmatched",
                  "fragments_over_limit", "fragments_forgotten_datagrams")
EVICT_FRACTION = 16  # a full table drops 1/16 of its flows at once, so eviction stays rare

OnEvict = Callable[[list[FlowSnapshot], int], None]

_ICMP = (IPPROTO_ICMP, IPPROTO_ICMPV6)
_last_seen = attrgetter("last_ns")


class UserFlowSource:
    def __init__(self, max_flows: int, *, keep_macs: bool = True, on_evict: OnEvict | None = None) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.keep_macs = keep_macs
        self.on_evict = on_evict
        self.stats = metrics.register("flows.table", TABLE_COUNTERS)
        # Keyed by FlowKey; plain tuples with the same fields find the same entries.
        self._flows: dict[tuple[object, ...], FlowSnapshot] = {}
        self._fragments = FragmentTracker(self._count, self.stats)

    def __len__(self) -> int:
        return len(self._flows)

    # -- FlowSource --------------------------------------------------------------

    def snapshot(self) -> list[FlowSnapshot]:
        return list(self._flows.values())

    def forget(self, keys: Iterable[FlowKey]) -> None:
        flows = self._flows
        for key in keys:
            flows.pop(key, None)

    # -- feeding -----------------------------------------------------------------

    def packet(self, pkt: Packet) -> None:
        flags = pkt.flags
        if not flags & F_LAST_CHUNK:  # a super-packet split over records counts once, on its last chunk
            return
        if flags & F_TUNNEL and pkt.link is not None:
            for carrier in pkt.link.carriers:
                self._count(carrier, carrier.sport, carrier.dport, None)
        if flags & F_FRAGMENT:
            self._fragments.fragment(pkt)
            return
        self._count(pkt, pkt.sport, pkt.dport, pkt.payload if pkt.l4proto in _ICMP else None)

    def expire(self, now_ns: int) -> None:
        self._fragments.expire(now_ns)

    def flush(self) -> None:
        """End of input: fragments still waiting for their first one are counted without ports."""
        self._fragments.flush()

    def _count(self, pkt: Packet, sport: int, dport: int, icmp_header: bytes | None) -> None:
        src = pkt.src
        dst = pkt.dst
        link = pkt.link
        if link is None:
            smac = dmac = b""
            v0 = v1 = 0
        else:
            smac, dmac, vlans, _ = link  # unpacking beats three attribute lookups on this path
            if not (dmac and self.keep_macs):
                smac = dmac = b""
            if vlans:
                v0 = vlans[0]
                v1 = vlans[1] if len(vlans) > 1 else 0
            else:
                v0 = v1 = 0
        tunnel = pkt.tunnel
        zone: Hashable = 0 if tunnel is None else tunnel.zone
        if src < dst or (src == dst and (sport < dport or (sport == dport and smac <= dmac))):
            forward = True
            key = (pkt.family, pkt.l4proto, src, sport, dst, dport, v0, v1, 0, smac, dmac, zone)
        else:
            forward = False
            key = (pkt.family, pkt.l4proto, dst, dport, src, sport, v0, v1, 0, dmac, smac, zone)
        ts = pkt.ts_ns
        snap = self._flows.get(key)
        if snap is None:
            snap = self._create(key, forward, ts, smac, dmac, tunnel)
        if forward is snap.source_is_lo:
            snap.source_packets += 1
            snap.source_bytes += pkt.wire_len
            if icmp_header is not None and len(icmp_header) >= 2:
                snap.icmp_type = icmp_header[0]
                snap.icmp_code = icmp_header[1]
        else:
            snap.dest_packets += 1
            snap.dest_bytes += pkt.wire_len
        if ts > snap.last_ns:  # noqa: PLR1730 - a branch costs less than max() per packet
            snap.last_ns = ts
        snap.tcp_flags |= pkt.tcp_flags

    def _create(self, key: tuple[object, ...], forward: bool, ts: int, smac: bytes, dmac: bytes,
                tunnel: TunnelInfo | None) -> FlowSnapshot:
        if len(self._flows) >= self.max_flows:
            self._evict(ts)
        fkey = FlowKey(*key)  # type: ignore[arg-type]
        snap = FlowSnapshot(key=fkey, source_is_lo=forward, first_ns=ts, last_ns=ts, source_mac=smac, dest_mac=dmac,
                            tunnel=tunnel)
        self._flows[fkey] = snap
        self.stats["flows_created"] += 1
        return snap

    def _evict(self, now_ns: int) -> None:
        victims = heapq.nsmallest(max(1, self.max_flows // EVICT_FRACTION), self._flows.values(), key=_last_seen)
        for snap in victims:
            del self._flows[snap.key]
        self.stats["flows_evicted"] += len(victims)
        if self.on_evict is not None:
            self.on_evict(victims, now_ns)
