"""`flow.id` in Packetbeat's format, so ids stay comparable with Packetbeat's across a migration.

The id is base64 (standard alphabet, no padding) of a 17-byte layout header
followed by the address bytes:

- header: 16-bit flag set (little endian), then one byte offset into the
  address bytes per part (0xFF = absent) in the order eth, outer vlan, vlan,
  outer IPv4, IPv4, outer IPv6, IPv6, ICMPv4, ICMPv6, UDP, TCP, connection
  id, then the counts of Ethernet, VLAN and IP layers;
- address bytes, in the order the layers are met on the wire: both MACs,
  each VLAN id (2 bytes, little endian), each IP pair, the port pair
  (little endian), and the connection id (8 bytes, little endian) when
  there is one.

Pairs are written in a canonical order so both directions give one id: the
first pair whose two values differ (MACs, then IPs outer to inner, then
ports as little-endian bytes) is written smaller-first, and every other
pair follows the same orientation.  A second layer of the same kind moves
the first one to the "outer" slot.  ICMP flows carry no ICMP part: Packetbeat
looks the flow up before the ICMP layer is added.
"""

from __future__ import annotations

import base64

from agent.capture.packet import IPPROTO_TCP, IPPROTO_UDP

_F_ETH = 1 << 0
_F_OUTER_VLAN = 1 << 1
_F_VLAN = 1 << 2
_F_OUTER_IPV4 = 1 << 3
_F_IPV4 = 1 << 4
_F_OUTER_IPV6 = 1 << 5
_F_IPV6 = 1 << 6
_F_UDP = 1 << 9
_F_TCP = 1 << 10
_F_CONNECTION_ID = 1 << 11

_UNSET = 0xFF
# Indexes into the offsets part of the header.
_OFF_ETH, _OFF_OUTER_VLAN, _OFF_VLAN, _OFF_OUTER_V4, _OFF_V4, _OFF_OUTER_V6, _OFF_V6 = range(7)
_OFF_UDP, _OFF_TCP, _OFF_CONNECTION_ID = 9, 10, 11
_N_OFFSETS = 12


def flow_id(macs: tuple[bytes, bytes] | None, vlans: tuple[int, ...], ip_layers: list[tuple[bytes, bytes]],
            l4proto: int, ports: tuple[int, int] | None, connection_id: int | None = None) -> tuple[str, bytes]:
    """(flow.id, layout header) for a flow, every pair given as (source side, destination side).

    `ip_layers` runs outer to inner (at most two are kept, like Packetbeat's
    decoder); `ports` only for TCP and UDP; `connection_id` (8 bytes, little
    endian, in Packetbeat's connection-id part) tells apart flows whose other
    parts are equal (pktbeat: the tunnel id).  The layout header identifies
    the shape of the id; Packetbeat reports flows grouped by it.
    """
    port_pair = None
    if ports is not None and l4proto in (IPPROTO_TCP, IPPROTO_UDP):
        port_pair = (ports[0].to_bytes(2, "little"), ports[1].to_bytes(2, "little"))
    swap = False
    for a, b in _compared_pairs(macs, ip_layers, port_pair):
        if a != b:
            swap = a > b
            break

    flags = 0
    offsets = [_UNSET] * _N_OFFSETS
    out = bytearray()

    def put(a: bytes, b: bytes) -> None:
        out.extend(b + a if swap else a + b)

    n_eth = 0
    if macs is not None:
        offsets[_OFF_ETH] = len(out)
        put(*macs)
        flags |= _F_ETH
        n_eth = 1
    kept_vlans = vlans[:2]
    for vid in kept_vlans:
        if flags & _F_VLAN:
            offsets[_OFF_OUTER_VLAN] = offsets[_OFF_VLAN]
            flags |= _F_OUTER_VLAN
        offsets[_OFF_VLAN] = len(out)
        flags |= _F_VLAN
        out.extend(vid.to_bytes(2, "little"))
    kept_ips = ip_layers[:2]
    for src, dst in kept_ips:
        if len(src) == 4:
            off, outer_off, flag, outer_flag = _OFF_V4, _OFF_OUTER_V4, _F_IPV4, _F_OUTER_IPV4
        else:
            off, outer_off, flag, outer_flag = _OFF_V6, _OFF_OUTER_V6, _F_IPV6, _F_OUTER_IPV6
        if flags & flag:
            offsets[outer_off] = offsets[off]
            flags |= outer_flag
        offsets[off] = len(out)
        flags |= flag
        put(src, dst)
    if port_pair is not None:
        if l4proto == IPPROTO_TCP:
            offsets[_OFF_TCP] = len(out)
            flags |= _F_TCP
        else:
            offsets[_OFF_UDP] = len(out)
            flags |= _F_UDP
        put(*port_pair)
    if connection_id is not None:
        offsets[_OFF_CONNECTION_ID] = len(out)
        flags |= _F_CONNECTION_ID
        out.extend(connection_id.to_bytes(8, "little"))
    header = bytes((flags & 0xFF, flags >> 8, *offsets, n_eth, len(kept_vlans), len(kept_ips)))
    return base64.b64encode(header + out).rstrip(b"=").decode(), header


def _compared_pairs(macs: tuple[bytes, bytes] | None, ip_layers: list[tuple[bytes, bytes]],
                    ports: tuple[bytes, bytes] | None) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    if macs is not None:
        pairs.append(macs)
    pairs.extend(ip_layers[:2])
    if ports is not None:
        pairs.append(ports)
    return pairs
