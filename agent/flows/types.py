"""The contract between flow sources (kernel map, or user-space table for replay) and flow reporting.

A source keeps cumulative per-direction counters per flow.  The reporter
reads snapshots every tick, decides what to publish (periodic, final after
`timeout` idle, delta or cumulative) and tells the source which flows to forget.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from agent.capture.tunnel import TunnelInfo


class FlowKey(NamedTuple):
    """Direction-independent identity of a flow: the lower (address, port) comes first.

    ICMP flows have ports 0.  `icmp_id` stays 0 in both sources: Packetbeat
    looks the flow up before the echo identifier joins its flow id, so all
    ICMP between two hosts (pings with different ids, neighbour discovery,
    errors) is one flow; the 10 ICMPv6 community-id vectors of its
    flowhash_icmp6 test depend on exactly that.

    The fields after `icmp_id` are optional parts of the identity, as in
    Packetbeat's flow id: the Ethernet addresses (empty when the link has
    none, or with `allow_mismatched_eth`; `mac_lo` is the `addr_lo` side's
    own MAC as sender), and the tunnel the packets travel in (`zone`: the
    same both ways, 0 outside tunnels), so that the same inner addresses in
    two VXLAN segments are two flows.  The kernel map keys by the 5-tuple,
    VLANs and zone (a 32-bit hash there), and leaves the MACs empty.
    """

    family: int  # 4 or 6 (of the inner IP layer)
    l4proto: int  # 6 tcp, 17 udp, 1 icmp, 58 icmpv6, or another IP protocol number
    addr_lo: bytes
    port_lo: int
    addr_hi: bytes
    port_hi: int
    vlan_outer: int = 0  # first 802.1Q tag on the wire; 0 = untagged (VID 0 is "no VLAN")
    vlan_inner: int = 0  # second tag (Q-in-Q)
    icmp_id: int = 0
    mac_lo: bytes = b""
    mac_hi: bytes = b""
    zone: Hashable = 0  # kernel: tunnel_zone()'s hash; replay: TunnelInfo.zone


@dataclass(slots=True)
class FlowSnapshot:
    """Cumulative state of one flow.  "source" is the side that sent the first packet seen."""

    key: FlowKey
    source_is_lo: bool  # True when (addr_lo, port_lo) sent the first packet
    first_ns: int  # ns since the epoch of the first packet
    last_ns: int  # ns since the epoch of the latest packet
    source_packets: int = 0
    source_bytes: int = 0  # frame lengths, link header included
    dest_packets: int = 0
    dest_bytes: int = 0
    source_mac: bytes = b""  # as sent by the source side; both empty = no Ethernet header
    dest_mac: bytes = b""
    tcp_flags: int = 0  # OR of every TCP flag seen
    # Type and code of the latest ICMP message the *source* side sent: Packetbeat
    # overwrites them per packet and takes network.community_id from them.
    icmp_type: int = 0
    icmp_code: int = 0
    tunnel: TunnelInfo | None = None  # what carried the flow's first packet, seen from the source


class FlowSource(Protocol):
    def snapshot(self) -> Iterable[FlowSnapshot]:
        """Every live flow, with counters since it was first seen.

        In creation order where the source knows it (the kernel source sorts
        by `first_ns`); reports follow this order.  The reporter reads the
        snapshots during the call that received them and keeps none.
        """
        ...

    def forget(self, keys: Iterable[FlowKey]) -> None:
        """Drop these flows (reported final); later packets start new ones."""
