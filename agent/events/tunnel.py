"""The fields an event gets when its packets came out of a tunnel.

ECS has no field set for tunnels: its only encapsulation fields are the
802.1Q ones (`network.vlan`, `network.inner.vlan`).  So pktbeat reports a
tunnelled conversation the way ECS describes any conversation, from the
inside: `source`/`destination`/`client`/`server`, `network.type`,
`network.transport` and `network.community_id` are the inner packet's, as
if it had been captured on the tunnel's inner interface.  The outer
addresses go to `related.ip` (ECS: every IP seen in the event) and, with the
rest of what ECS cannot say, under `pktbeat.tunnel`, the product-named
namespace ECS recommends for fields it does not define:

    pktbeat.tunnel.type                  vxlan, geneve, gre, erspan1-3, ip-in-ip,
                                         ipv6-in-ip, pppoe; a list, outermost first, when nested
    pktbeat.tunnel.id                    VNI, GRE key, ERSPAN or PPPoE session (absent when none)
    pktbeat.tunnel.depth                 how many encapsulations were removed
    pktbeat.tunnel.source.ip             the outermost IP header, on the source's (client's) side
    pktbeat.tunnel.destination.ip        ... and on the other side
"""

from __future__ import annotations

from typing import Any

from agent.capture.tunnel import TunnelInfo
from agent.transport.types import ip_text


def tunnel_fields(tunnel: TunnelInfo) -> dict[str, Any]:
    """`pktbeat.tunnel` of an event whose source side sent with `tunnel` (outer_src on the source's side)."""
    kinds = tunnel.kinds
    fields: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else list(kinds), "depth": len(kinds)}
    if tunnel.id:
        fields["id"] = tunnel.id
    if tunnel.outer_src:
        fields["source"] = {"ip": ip_text(tunnel.outer_src)}
        fields["destination"] = {"ip": ip_text(tunnel.outer_dst)}
    return fields


def outer_ips(tunnel: TunnelInfo) -> tuple[str, ...]:
    """The outer addresses, for `related.ip`."""
    if not tunnel.outer_src:
        return ()
    src, dst = ip_text(tunnel.outer_src), ip_text(tunnel.outer_dst)
    return (src,) if src == dst else (src, dst)
