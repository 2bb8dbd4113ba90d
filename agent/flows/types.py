"""The contract between flow sources (kernel map, or user-space table for replay) and flow reporting.

A source keeps cumulative per-direction counters per flow.  The reporter
reads snapshots every tick, decides what to publish (periodic, final after
`timeout` idle, delta or cumulative) and tells the source which flows to forget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class FlowKey(NamedTuple):
    """Direction-independent identity of a flow: the lower (address, port) comes first.

    For ICMP the ports are 0 and `icmp_id` holds the echo identifier (0 for
    messages without one), so separate pings are separate flows, as in Packetbeat.
    """

    family: int  # 4 or 6
    l4proto: int  # 6 tcp, 17 udp, 1 icmp, 58 icmpv6, or another IP protocol number
    addr_lo: bytes
    port_lo: int
    addr_hi: bytes
    port_hi: int
    vlan_outer: int = 0
    vlan_inner: int = 0
    icmp_id: int = 0


@dataclass(slots=True)
class FlowSnapshot:
    """Cumulative state of one flow.  "source" is the side that sent the first packet seen."""

    key: FlowKey
    source_is_lo: bool  # True when (addr_lo, port_lo) sent the first packet
    first_ns: int  # wall-clock ns of the first packet
    last_ns: int  # wall-clock ns of the latest packet
    source_packets: int = 0
    source_bytes: int = 0  # frame lengths, link header included
    dest_packets: int = 0
    dest_bytes: int = 0
    source_mac: bytes = b""
    dest_mac: bytes = b""
    tcp_flags: int = 0  # OR of every TCP flag seen
    icmp_type: int = 0  # type and code of the first ICMP message (for network.transport/community id)
    icmp_code: int = 0
    outer_addrs: tuple[bytes, bytes] | None = None  # the outer pair of an IP-in-IP flow


class FlowSource(Protocol):
    def snapshot(self) -> Iterable[FlowSnapshot]:
        """Every live flow, with counters since it was first seen."""
        ...

    def forget(self, keys: Iterable[FlowKey]) -> None:
        """Drop these flows (reported final); later packets start new ones."""
