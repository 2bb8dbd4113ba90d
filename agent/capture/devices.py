"""Network interfaces: what they are, whether pktbeat can attach, which ones a config selects.

`pktbeat devices` prints `list_devices()`; its row numbers are the numeric
values `packetbeat.interfaces.device` accepts, as in Packetbeat.  Rows are
ordered by ifindex, so the numbering is stable while interfaces stay.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# ARPHRD_* (include/uapi/linux/if_arp.h)
ARPHRD_ETHER = 1
ARPHRD_PPP = 512
ARPHRD_RAWIP = 519
ARPHRD_TUNNEL = 768
ARPHRD_TUNNEL6 = 769
ARPHRD_LOOPBACK = 772
ARPHRD_SIT = 776
ARPHRD_IPGRE = 778
ARPHRD_IP6GRE = 823
ARPHRD_NONE = 0xFFFE

ETH_HLEN = 14
# Devices whose packets reach TC without a link header: IP starts at offset 0.
L3_TYPES = {ARPHRD_PPP: "ppp", ARPHRD_RAWIP: "rawip", ARPHRD_TUNNEL: "ipip", ARPHRD_TUNNEL6: "ip6tnl",
            ARPHRD_SIT: "sit", ARPHRD_IPGRE: "gre", ARPHRD_IP6GRE: "ip6gre", ARPHRD_NONE: "none"}
L2_TYPES = {ARPHRD_ETHER: "ether", ARPHRD_LOOPBACK: "loopback"}

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    kind: str  # veth, tun, wireguard, bridge, loopback, ether, ...
    up: bool
    carrier: bool
    arphrd: int
    addresses: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if not self.up:
            return "down"
        return "up" if self.carrier else "up,no-carrier"

    @property
    def link(self) -> str:
        if self.arphrd in L2_TYPES:
            return "L2"
        if self.arphrd in L3_TYPES:
            return "L3"
        return "-"

    @property
    def link_len(self) -> int:
        """Bytes of link header the kernel program skips (0 for L3 devices)."""
        return ETH_HLEN if self.arphrd in L2_TYPES else 0

    @property
    def attachable(self) -> bool:
        return self.link != "-"

    @property
    def reason(self) -> str:
        if not self.attachable:
            return f"link type {self.arphrd} is neither Ethernet nor raw IP"
        if self.arphrd == ARPHRD_LOOPBACK:
            return "ingress only: every looped packet passes egress and ingress"
        return ""

    @property
    def ingress_only(self) -> bool:
        return self.arphrd == ARPHRD_LOOPBACK


def _device(link: Any, addresses: dict[int, list[str]]) -> Device:
    index = int(link["index"])
    arphrd = int(link["ifi_type"])
    flags = int(link["flags"])
    kind = ""
    info = link.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
    if not kind:
        kind = L2_TYPES.get(arphrd) or L3_TYPES.get(arphrd) or f"arphrd-{arphrd}"
    return Device(index, link.get_attr("IFLA_IFNAME") or f"if{index}", kind, bool(flags & IFF_UP),
                  bool(flags & IFF_LOWER_UP), arphrd, tuple(addresses.get(index, ())))


def list_devices(ipr: Any | None = None) -> list[Device]:
    """Interfaces of this network namespace, by ifindex."""
    from pyroute2 import IPRoute

    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        addresses: dict[int, list[str]] = {}
        for addr in ipr.get_addr():
            # IFA_LOCAL is our end of a point-to-point link (IFA_ADDRESS is the peer there)
            text = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
            if text:
                addresses.setdefault(int(addr["index"]), []).append(f"{text}/{addr['prefixlen']}")
        devices = [_device(link, addresses) for link in ipr.get_links()]
    finally:
        if own:
            ipr.close()
    return sorted(devices, key=lambda d: d.index)


class DeviceSpecError(ValueError):
    pass


@dataclass(frozen=True)
class DeviceSpec:
    """`packetbeat.interfaces.device` resolved: `any`, or names (numbers already turned into names)."""

    any: bool
    names: tuple[str, ...]
    ignore: tuple[str, ...] = ()

    @classmethod
    def parse(cls, values: Sequence[str], ignore: Sequence[str], devices: Sequence[Device]) -> DeviceSpec:
        names: list[str] = []
        wants_any = False
        for raw in values:
            value = str(raw).strip()
            if not value:
                continue
            if value == "any":
                wants_any = True
            elif value.isdigit():
                number = int(value)
                if number >= len(devices):
                    raise DeviceSpecError(f"device {number}: there are only {len(devices)} devices "
                                          "(see pktbeat devices)")
                names.append(devices[number].name)
            elif value.startswith("default_route"):
                raise DeviceSpecError(f"device {value} is not supported; name the interface or use any")
            else:
                if len(value) > 15 or "/" in value or " " in value:
                    raise DeviceSpecError(f"device {value!r} is not a valid interface name")
                names.append(value)
        if not wants_any and not names:
            wants_any = True
        return cls(wants_any, tuple(dict.fromkeys(names)), tuple(ignore))

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore)

    def selects(self, device: Device) -> bool:
        """Whether `device` should be attached now."""
        if not device.attachable:
            return False
        if self.any:
            return device.up and not self.ignored(device.name)
        return device.name in self.names

    def select(self, devices: Iterable[Device]) -> list[Device]:
        return [d for d in devices if self.selects(d)]

    def describe(self) -> str:
        if self.any:
            extra = f" except {', '.join(self.ignore)}" if self.ignore else ""
            return f"any (every interface that is up{extra})"
        return ", ".join(self.names)
