"""The kernel's flow table as a `FlowSource` (agent/flows/types.py) for the flow reporter.

The program counts every IP packet of every attached interface in an LRU
hash map keyed by `struct pb_flow_key` (the lower (address, port) first, and
the tunnel zone), with per-side packets and bytes updated atomically, so one
entry per flow holds the totals of every CPU.  Packets and bytes are the
wire's: a GSO/GRO super-packet counts as its segments.  A decapsulated
packet counts in its inner flow and in the flow of each outer layer.

A snapshot reads the whole map in batches and turns boot-time stamps into
wall-clock ns; `forget` deletes the entries of flows reported final, and
later packets start a new entry.

The map is bounded (`packetbeat.flows.max_flows`); when it is full the
kernel evicts the least recently used flow, whose counts are then lost.
The kernel counts the entries it creates (`flow_new`), so evictions are
`flow_new - forgotten - live entries` (see `evicted`).

Snapshots come in creation order (`first_ns`), as the reporter wants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.capture import record
from agent.capture.bpfmap import BpfMap
from agent.capture.clock import boot_offset_ns
from agent.capture.tunnel import TunnelInfo, kinds_of
from agent.flows.types import FlowKey, FlowSnapshot

_unpack_key = record.FLOW_KEY.unpack
_unpack_value = record.FLOW_VALUE.unpack


def flow_key(raw: bytes) -> FlowKey:
    family, proto, port_lo, port_hi, icmp_id, vlan_outer, vlan_inner, zone, addr_lo, addr_hi = _unpack_key(raw)
    if family == 4:
        addr_lo = addr_lo[:4]
        addr_hi = addr_hi[:4]
    return FlowKey(family, proto, addr_lo, port_lo, addr_hi, port_hi, vlan_outer, vlan_inner, icmp_id, zone=zone)


def raw_key(key: FlowKey) -> bytes:
    zone = key.zone if isinstance(key.zone, int) else 0
    return record.FLOW_KEY.pack(key.family, key.l4proto, key.port_lo, key.port_hi, key.icmp_id, key.vlan_outer,
                                key.vlan_inner, zone, key.addr_lo.ljust(16, b"\0"), key.addr_hi.ljust(16, b"\0"))


def _tunnel(kinds: int, depth: int, tunnel_id: int, outer_family: int, outer: bytes, src: int) -> TunnelInfo:
    """The tunnel of a flow, seen from its source side (`outer` holds each side's outer address)."""
    size = 4 if outer_family == 4 else 16 if outer_family == 6 else 0
    sides = (outer[:size], outer[16:16 + size])
    return TunnelInfo(kinds_of(kinds, depth), tunnel_id, sides[src], sides[1 - src])


def flow_snapshot(key: FlowKey, value: bytes, offset_ns: int) -> FlowSnapshot:
    (first_ns, last_ns, pkts_lo, pkts_hi, bytes_lo, bytes_hi, tcp_flags, first_side, has_mac, icmp_type,
     icmp_code, macs, tunnel_id, kinds, depth, outer_family, outer, _pad) = _unpack_value(value)
    src = first_side & 1
    packets = (pkts_lo, pkts_hi)
    sizes = (bytes_lo, bytes_hi)
    mac = (macs[:6], macs[6:]) if has_mac else (b"", b"")
    tunnel = _tunnel(kinds, depth, tunnel_id, outer_family, outer, src) if depth else None
    return FlowSnapshot(
        key=key,
        source_is_lo=src == 0,
        first_ns=first_ns + offset_ns,
        last_ns=last_ns + offset_ns,
        source_packets=packets[src],
        source_bytes=sizes[src],
        dest_packets=packets[1 - src],
        dest_bytes=sizes[1 - src],
        source_mac=mac[src],
        dest_mac=mac[1 - src],
        tcp_flags=tcp_flags,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        tunnel=tunnel,
    )


def _first_seen(snap: FlowSnapshot) -> int:
    return snap.first_ns


class KernelFlowSource:
    """FlowSource over the `flows` map of the loaded program (parent process only)."""

    def __init__(self, flow_map: BpfMap, offset: Callable[[], int] = boot_offset_ns) -> None:
        self.map = flow_map
        self._offset = offset
        self._raw: dict[FlowKey, bytes] = {}
        self.last_count = 0
        self.forgotten = 0

    def snapshot(self) -> list[FlowSnapshot]:
        offset = self._offset()
        out: list[FlowSnapshot] = []
        raw_keys: dict[FlowKey, bytes] = {}
        for kb, vb in self.map.dump():
            key = flow_key(kb)
            raw_keys[key] = kb
            out.append(flow_snapshot(key, vb, offset))
        self._raw = raw_keys
        self.last_count = len(out)
        out.sort(key=_first_seen)
        return out

    def forget(self, keys: Iterable[FlowKey]) -> None:
        for key in keys:
            kb = self._raw.pop(key, None) or raw_key(key)
            if self.map.delete(kb):
                self.forgotten += 1

    def evicted(self, created: int) -> int:
        """Entries the kernel dropped to make room, given how many it created."""
        return max(0, created - self.forgotten - self.last_count)
