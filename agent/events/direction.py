"""network.direction: host-based first, then perimeter-based from internal_networks.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

The named ranges are libbeat's (`private`, `loopback`, `unicast`, ...), so a
packetbeat.yml that uses them keeps its meaning.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from agent.procs import procfs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
_LINK_LOCAL_UNICAST = ("169.254.0.0/16", "fe80::/10")
_LINK_LOCAL_MULTICAST = ("224.0.0.0/24", "ff02::/16")
_INTERFACE_LOCAL_MULTICAST = ("ff01::/16",)
# What `ipaddress` means by is_loopback, is_multicast, is_unspecified and is_link_local (Python 3.11: an
# IPv4-mapped IPv6 address is judged as IPv6), and the IPv4 broadcast address.
_LOOPBACK = ("127.0.0.0/8", "::1/128")
_MULTICAST = ("224.0.0.0/4", "ff00::/8")
_UNSPECIFIED = ("0.0.0.0/32", "::/128")
_LINK_LOCAL = ("169.254.0.0/16", "fe80::/10")
_BROADCAST = ("255.255.255.255/32",)

# A range as plain integers, (version, network, mask): deciding whether an address is in one is two integer
# operations, where `ipaddress` objects cost thousands of instructions per address (the classifier sees a
# new client address in nearly every DNS transaction of a busy resolver).
Prefix = tuple[int, int, int]


def _prefixes(cidrs: Iterable[str]) -> tuple[Prefix, ...]:
    return tuple(_prefix(ipaddress.ip_network(c)) for c in cidrs)


def _prefix(net: IPNetwork) -> Prefix:
    return net.version, int(net.network_address), int(net.netmask)


def _in(version: int, value: int, prefixes: tuple[Prefix, ...]) -> bool:
    return any(version == net_version and value & mask == network for net_version, network, mask in prefixes)


_PRIVATE_NETS = _prefixes(_PRIVATE)
_LL_UNICAST_NETS = _prefixes(_LINK_LOCAL_UNICAST)
_LL_MULTICAST_NETS = _prefixes(_LINK_LOCAL_MULTICAST)
_IF_MULTICAST_NETS = _prefixes(_INTERFACE_LOCAL_MULTICAST)
_LOOPBACK_NETS = _prefixes(_LOOPBACK)
_MULTICAST_NETS = _prefixes(_MULTICAST)
_UNSPECIFIED_NETS = _prefixes(_UNSPECIFIED)
_LINK_LOCAL_NETS = _prefixes(_LINK_LOCAL)
_BROADCAST_NETS = _prefixes(_BROADCAST)
_HOST_LOCAL_NETS = _LOOPBACK_NETS + _prefixes(("169.254.0.0/16", "224.0.0.0/24", "fe80::/10", "ff02::/16"))


def _host_local(raw: bytes) -> bool:
    """Loopback or link-local (_HOST_LOCAL_NETS); IPv4 by its first bytes, the common case."""
    if len(raw) == 4:
        first = raw[0]
        return first == 127 or (first == 169 and raw[1] == 254) or (first == 224 and raw[1] == 0 and raw[2] == 0)
    return _in(6, int.from_bytes(raw, "big"), _HOST_LOCAL_NETS)


def _global_unicast(version: int, value: int) -> bool:
    return not (_in(version, value, _MULTICAST_NETS) or _in(version, value, _UNSPECIFIED_NETS)
                or _in(version, value, _LOOPBACK_NETS) or _in(version, value, _LINK_LOCAL_NETS)
                or _in(version, value, _BROADCAST_NETS))


_NAMED_TESTS = {
    "private": lambda v, x: _in(v, x, _PRIVATE_NETS),
    "loopback": lambda v, x: _in(v, x, _LOOPBACK_NETS),
    "multicast": lambda v, x: _in(v, x, _MULTICAST_NETS),
    "link_local_unicast": lambda v, x: _in(v, x, _LL_UNICAST_NETS),
    "link_local_multicast": lambda v, x: _in(v, x, _LL_MULTICAST_NETS),
    "interface_local_multicast": lambda v, x: _in(v, x, _IF_MULTICAST_NETS),
    "unspecified": lambda v, x: _in(v, x, _UNSPECIFIED_NETS),
    "unicast": lambda v, x: not (_in(v, x, _MULTICAST_NETS) or _in(v, x, _UNSPECIFIED_NETS)
                                 or _in(v, x, _BROADCAST_NETS)),
    "global_unicast": _global_unicast,
    "public": lambda v, x: _global_unicast(v, x) and not _in(v, x, _PRIVATE_NETS) and not _in(v, x, _LOOPBACK_NETS),
}


class _Named:
    """A named range is a predicate on an address."""

    __slots__ = ("matches", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.matches: Callable[[int, int], bool] = _NAMED_TESTS[name]  # (version, address as an integer)

    def __contains__(self, ip: IPAddress) -> bool:
        return self.matches(ip.version, int(ip))


NAMED_NETWORKS = ("private", "loopback", "unicast", "global_unicast", "multicast", "link_local_unicast",
                  "link_local_multicast", "interface_local_multicast", "unspecified", "public")


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
    return _matches(_matchers(networks), ip.version, int(ip))


Matcher = Prefix | _Named


def _matchers(networks: Iterable[IPNetwork | _Named]) -> list[Matcher]:
    return [net if isinstance(net, _Named) else _prefix(net) for net in networks]


def _matches(matchers: list[Matcher], version: int, value: int) -> bool:
    for matcher in matchers:
        if isinstance(matcher, _Named):
            if matcher.matches(version, value):
                return True
        elif version == matcher[0] and value & matcher[2] == matcher[1]:
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
        # Imported by name: pyroute2 ships no type information, and mypyc's build checks without the
        # project's ignore_missing_imports.
        iproute: Any = importlib.import_module("pyroute2").IPRoute
        with iproute() as ipr:
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


ADDRESS_CACHE_LIMIT: Final = 65536  # addresses whose facts are remembered; the whole cache is dropped when full


class DirectionClassifier:
    """Computes network.direction for (source, destination) pairs.

    What matters about an address (is it this host's, is it internal) is
    cached per address, not per pair: a resolver answering thousands of
    clients makes thousands of pairs but only one new address each.
    """

    __slots__ = ("_facts", "_internal", "internal", "local_ips")

    def __init__(self, local_ips: Collection[bytes], internal: list[IPNetwork | _Named]) -> None:
        self.local_ips = local_ips
        self.internal = internal
        self._internal = _matchers(internal)
        self._facts: dict[bytes, tuple[bool, bool]] = {}  # address -> (on this host, internal)

    def _address(self, raw: bytes) -> tuple[bool, bool]:
        facts = self._facts.get(raw)
        if facts is None:
            facts = (_host_local(raw) or raw in self.local_ips, bool(self._internal) and _matches(
                self._internal, 4 if len(raw) == 4 else 6, int.from_bytes(raw, "big")))
            if len(self._facts) >= ADDRESS_CACHE_LIMIT:
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
