"""Turning a flow snapshot into Packetbeat's flow event.

The parts that never change during a flow's life (id, addresses, MACs,
ports, VLANs) are computed once into a `FlowDescriptor`; each report adds
the counters and times.  The event holds only the flow's own fields; the
runner's EventBuilder adds agent/ecs/host/tags/fields and runs processors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.capture.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from agent.events.community_id import community_id
from agent.events.timefmt import format_ns
from agent.events.tunnel import tunnel_fields
from agent.flows.flowid import flow_id
from agent.flows.types import FlowSnapshot
from agent.transport.types import ip_text

_TRANSPORTS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "ipv6-icmp"}


@dataclass(slots=True)
class FlowDescriptor:
    flow_id: str
    layout: bytes  # the id's layout header; Packetbeat reports flows grouped by it
    source: dict[str, Any]  # mac, ip, port
    destination: dict[str, Any]
    network_type: str
    transport: str | None
    vlan: int | list[int] | None
    # Community ID inputs: the addresses, the protocol, and the ports (TCP/UDP) - ICMP
    # takes type/code per report.
    cid_src: bytes
    cid_dst: bytes
    l4proto: int
    community_id: str | None  # precomputed when it does not depend on ICMP type/code
    tunnel: dict[str, Any] | None = None  # pktbeat.tunnel of a flow inside a tunnel


def describe(snap: FlowSnapshot) -> FlowDescriptor:
    key = snap.key
    if snap.source_is_lo:
        src, sport, dst, dport = key.addr_lo, key.port_lo, key.addr_hi, key.port_hi
    else:
        src, sport, dst, dport = key.addr_hi, key.port_hi, key.addr_lo, key.port_lo
    macs = (snap.source_mac, snap.dest_mac) if snap.source_mac and snap.dest_mac else None
    vlans = tuple(v for v in (key.vlan_outer, key.vlan_inner) if v)
    # A tunnelled flow is described from the inside (agent/events/tunnel.py); its id
    # keeps Packetbeat's layout for IP-in-IP (the outer pair as the outer IP layer)
    # and the tunnel id in the connection-id part, so two tunnels never share an id.
    tunnel = snap.tunnel
    layers: list[tuple[bytes, bytes]] = []
    if tunnel is not None and tunnel.outer_src:
        layers.append((tunnel.outer_src, tunnel.outer_dst))
    layers.append((src, dst))
    proto = key.l4proto
    has_ports = proto in (IPPROTO_TCP, IPPROTO_UDP) and (sport or dport)
    fid, layout = flow_id(macs, vlans, layers, proto, (sport, dport) if has_ports else None,
                          connection_id=tunnel.id if tunnel is not None and tunnel.id else None)
    source: dict[str, Any] = {}
    destination: dict[str, Any] = {}
    if macs is not None:
        source["mac"] = _mac(macs[0])
        destination["mac"] = _mac(macs[1])
    source["ip"] = ip_text(src)
    destination["ip"] = ip_text(dst)
    if has_ports:
        source["port"] = sport
        destination["port"] = dport
    cid = None
    if proto not in (IPPROTO_ICMP, IPPROTO_ICMPV6) and proto in _TRANSPORTS:
        cid = community_id(src, dst, proto, sport, dport)
    vlan: int | list[int] | None = None
    if len(vlans) == 1:
        vlan = vlans[0]
    elif vlans:
        vlan = list(vlans)
    return FlowDescriptor(
        flow_id=fid, layout=layout, source=source, destination=destination,
        network_type="ipv4" if len(src) == 4 else "ipv6", transport=_TRANSPORTS.get(proto), vlan=vlan,
        cid_src=src, cid_dst=dst, l4proto=proto, community_id=cid,
        tunnel=tunnel_fields(tunnel) if tunnel is not None else None,
    )


def flow_event(desc: FlowDescriptor, snap: FlowSnapshot, counts: tuple[int, int, int, int], final: bool,
               timestamp: str, digits: int) -> dict[str, Any]:
    """The event for one report; `counts` = (source packets, source bytes, dest packets, dest bytes),
    `timestamp` the formatted report time (the same for every flow of one report)."""
    sp, sb, dp, db = counts
    first, last = snap.first_ns, snap.last_ns
    flow: dict[str, Any] = {"id": desc.flow_id, "final": final}
    if desc.vlan is not None:
        flow["vlan"] = list(desc.vlan) if isinstance(desc.vlan, list) else desc.vlan
    source = _copy(desc.source)
    source["packets"] = sp
    source["bytes"] = sb
    destination = _copy(desc.destination)
    if snap.dest_packets:
        destination["packets"] = dp
        destination["bytes"] = db
    network: dict[str, Any] = {"type": desc.network_type}
    if desc.transport is not None:
        network["transport"] = desc.transport
    else:
        # Packetbeat folds other IP protocols (GRE, ESP, SCTP...) into one port-less flow per address
        # pair with no transport; pktbeat keeps one flow per protocol and says which one it is.
        network["iana_number"] = str(desc.l4proto)
    cid = desc.community_id
    if cid is None and desc.transport is not None:  # ICMP: from the source's latest type/code
        cid = community_id(desc.cid_src, desc.cid_dst, desc.l4proto, icmp_type=snap.icmp_type,
                           icmp_code=snap.icmp_code)
    if cid is not None:
        network["community_id"] = cid
    network["bytes"] = sb + db
    network["packets"] = sp + dp
    event: dict[str, Any] = {
        "@timestamp": timestamp,
        "type": "flow",
        "event": {
            "kind": "event",
            "category": ["network"],
            "action": "network_flow",
            "dataset": "flow",
            "type": ["connection", "end"] if final else ["connection"],
            "start": format_ns(first, digits),
            "end": format_ns(last, digits),
            "duration": last - first,
        },
        "flow": flow,
        "source": source,
        "destination": destination,
        "network": network,
    }
    if desc.tunnel is not None:
        event["pktbeat"] = {"tunnel": _copy_tunnel(desc.tunnel)}
    return event


def _copy(part: dict[str, Any]) -> dict[str, Any]:
    out = dict(part)
    ip = out.get("ip")
    if isinstance(ip, list):  # processors may edit the event; never share a list between events
        out["ip"] = list(ip)
    return out


def _copy_tunnel(tunnel: dict[str, Any]) -> dict[str, Any]:
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in tunnel.items()}
    if isinstance(out["type"], list):
        out["type"] = list(out["type"])
    return out


def _mac(raw: bytes) -> str:
    return raw.hex("-").upper()
