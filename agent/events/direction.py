"""network.direction: host-based first, then perimeter-based from internal_networks.

The named ranges are libbeat's (`private`, `loopback`, `unicast`, ...), so a
packetbeat.yml that uses them keeps its meaning.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from agent.procs import procfs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
_LOOPBACK = ("127.0.0.0/8", "::1/128")
_LINK_LOCAL_UNICAST = ("169.254.0.0/16", "fe80::/10")
_LINK_LOCAL_MULTICAST = ("224.0.0.0/24", "ff02::/16")
_INTERFACE_LOCAL_MULTICAST = ("ff01::/16",)
_UNSPECIFIED = ("0.0.0.0/32", "::/128")


def _nets(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


_PRIVATE_NETS = _nets(_PRIVATE)
_LL_UNICAST_NETS = _nets(_LINK_LOCAL_UNICAST)
_LL_MULTICAST_NETS = _nets(_LINK_LOCAL_MULTICAST)
_IF_MULTICAST_NETS = _nets(_INTERFACE_LOCAL_MULTICAST)


def _in(ip: IPAddress, nets: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


class _Named:
    """A named range is a predicate on an address."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __contains__(self, ip: IPAddress) -> bool:
        name = self.name
        if name == "private":
            return _in(ip, _PRIVATE_NETS)
        if name == "loopback":
            return ip.is_loopback
        if name == "multicast":
            return ip.is_multicast
        if name == "link_local_unicast":
            return _in(ip, _LL_UNICAST_NETS)
        if name == "link_local_multicast":
            return _in(ip, _LL_MULTICAST_NETS)
        if name == "interface_local_multicast":
            return _in(ip, _IF_MULTICAST_NETS)
        if name == "unspecified":
            return ip.is_unspecified
        if name == "unicast":
            return not ip.is_multicast and not ip.is_unspecified and not _is_broadcast(ip)
        if name == "global_unicast":
            return _global_unicast(ip)
        if name == "public":
            return _global_unicast(ip) and not _in(ip, _PRIVATE_NETS) and not ip.is_loopback
        return False


NAMED_NETWORKS = ("private", "loopback", "unicast", "global_unicast", "multicast", "link_local_unicast",
                  "link_local_multicast", "interface_local_multicast", "unspecified", "public")


def _is_broadcast(ip: IPAddress) -> bool:
    return ip.version == 4 and str(ip) == "255.255.255.255"


def _global_unicast(ip: IPAddress) -> bool:
    return not (ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local
                or _is_broadcast(ip))


def parse_networks(entries: Iterable[str]) -> list[IPNetwork | _Named]:
    """CIDRs, plain addresses and named ranges; raises ValueError naming the bad entry."""
    out: list[IPNetwork | _Named] = []
    for entry in entries:
        text = str(entry).strip()
        if text in NAMED_NETWORKS:
            out.append(_Named(text))
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"'{text}' is neither a CIDR nor one of {', '.join(NAMED_NETWORKS)}") from None
    return out


def contains(networks: Iterable[IPNetwork | _Named], ip: IPAddress) -> bool:
    for net in networks:
        if isinstance(net, _Named):
            if ip in net:
                return True
        elif ip.version == net.version and ip in net:
            return True
    return False


def local_addresses() -> frozenset[bytes]:
    """This host's own addresses (as packed bytes).

    Read from /proc (the kernel's LOCAL routes and IPv6 address list): cheap,
    where importing a netlink library costs a noticeable share of a short
    replay's start-up.  pyroute2 is the fallback when /proc is not there.
    """
    found = _proc_local_addresses()
    if found:
        return frozenset(found)
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
                if addr:
                    found.add(ipaddress.ip_address(addr).packed)
    except Exception:
        try:
            found.add(socket.inet_aton(socket.gethostbyname(socket.gethostname())))
        except OSError:
            pass
    return frozenset(found)


def _proc_local_addresses() -> set[bytes]:
    return procfs.local_addresses()


class DirectionClassifier:
    """Computes network.direction for (source, destination) pairs.

    What matters about an address (is it this host's, is it internal) is
    cached per address, not per pair: a resolver answering thousands of
    clients makes thousands of pairs but only one new address each.
    """

    CACHE_LIMIT = 65536

    def __init__(self, local_ips: frozenset[bytes], internal: list[IPNetwork | _Named]) -> None:
        self.local_ips = local_ips
        self.internal = internal
        self._facts: dict[bytes, tuple[bool, bool]] = {}  # address -> (on this host, internal)

    def _address(self, raw: bytes) -> tuple[bool, bool]:
        facts = self._facts.get(raw)
        if facts is None:
            ip = ipaddress.ip_address(raw)
            facts = (_host_local(ip) or raw in self.local_ips, bool(self.internal) and contains(self.internal, ip))
            if len(self._facts) >= self.CACHE_LIMIT:
                self._facts.clear()
            self._facts[raw] = facts
        return facts

    def __call__(self, src: bytes, dst: bytes) -> str:
        src_local, src_internal = self._address(src)
        dst_local, dst_internal = self._address(dst)
        if dst_local:
            return "ingress"
        if src_local:
            return "egress"
        if self.internal:
            if src_internal and dst_internal:
                return "internal"
            if src_internal:
                return "outbound"
            if dst_internal:
                return "inbound"
            return "external"
        return "unknown"


def _host_local(ip: IPAddress) -> bool:
    if ip.is_loopback:
        return True
    if ip.version == 4:
        return ip in _LL4 or ip in _LLM4
    return ip in _LL6 or ip in _LLM6


_LL4 = ipaddress.ip_network("169.254.0.0/16")
_LLM4 = ipaddress.ip_network("224.0.0.0/24")
_LL6 = ipaddress.ip_network("fe80::/10")
_LLM6 = ipaddress.ip_network("ff02::/16")
