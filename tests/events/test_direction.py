"""network.direction's address tests: integer prefix matching must agree with `ipaddress` everywhere."""

from __future__ import annotations

import ipaddress

import pytest

from agent.events.direction import NAMED_NETWORKS, DirectionClassifier, contains, parse_networks

# Both sides of every boundary the named ranges draw, in both families (IPv4-mapped ones included).
ADDRESSES = [
    "0.0.0.0", "0.0.0.1", "9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0", "127.0.0.1", "126.255.255.255",
    "128.0.0.0", "169.253.255.255", "169.254.0.1", "169.255.0.0", "172.15.255.255", "172.16.0.1", "172.31.255.255",
    "172.32.0.0", "192.167.255.255", "192.168.1.1", "192.169.0.0", "223.255.255.255", "224.0.0.1", "224.0.0.255",
    "224.0.1.0", "239.255.255.255", "240.0.0.0", "255.255.255.254", "255.255.255.255", "8.8.8.8",
    "::", "::1", "::2", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "2001:db8::1", "fc00::1", "fd00::1",
    "fdff:ffff::1", "fe00::1", "fe80::1", "febf:ffff::1", "fec0::1", "feff::1", "ff00::1", "ff01::1", "ff02::1",
    "ff02:ffff::1", "ff03::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
]
IPS = [ipaddress.ip_address(a) for a in ADDRESSES]


def _reference(name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The named ranges as libbeat defines them, written with `ipaddress`'s own predicates."""
    def inside(*cidrs: str) -> bool:
        return any(ip.version == n.version and ip in n for n in map(ipaddress.ip_network, cidrs))

    broadcast = ip.version == 4 and str(ip) == "255.255.255.255"
    global_unicast = not (ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local or broadcast)
    private = inside("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
    return {
        "private": private,
        "loopback": ip.is_loopback,
        "multicast": ip.is_multicast,
        "link_local_unicast": inside("169.254.0.0/16", "fe80::/10"),
        "link_local_multicast": inside("224.0.0.0/24", "ff02::/16"),
        "interface_local_multicast": inside("ff01::/16"),
        "unspecified": ip.is_unspecified,
        "unicast": not ip.is_multicast and not ip.is_unspecified and not broadcast,
        "global_unicast": global_unicast,
        "public": global_unicast and not private and not ip.is_loopback,
    }[name]


@pytest.mark.parametrize("name", NAMED_NETWORKS)
def test_named_ranges_agree_with_ipaddress(name: str) -> None:
    nets = parse_networks([name])
    assert [str(ip) for ip in IPS if contains(nets, ip)] == [str(ip) for ip in IPS if _reference(name, ip)]


def test_cidrs_match_by_prefix_and_family() -> None:
    nets = parse_networks(["10.1.0.0/16", "2001:db8::/32", "192.0.2.7"])
    inside = [str(ip) for ip in map(ipaddress.ip_address, ["10.1.255.3", "2001:db8:ffff::9", "192.0.2.7"])]
    outside = ["10.2.0.1", "2001:db9::1", "192.0.2.8", "::a01:1"]  # ::a01:1 is 10.1.0.1's value as IPv6
    assert all(contains(nets, ipaddress.ip_address(a)) for a in inside)
    assert not any(contains(nets, ipaddress.ip_address(a)) for a in outside)


def test_classifier_host_local_and_perimeter() -> None:
    def raw(text: str) -> bytes:
        return ipaddress.ip_address(text).packed

    classify = DirectionClassifier(frozenset({raw("10.9.9.9")}), parse_networks(["private"]))
    assert classify(raw("8.8.8.8"), raw("10.9.9.9")) == "ingress"
    assert classify(raw("10.9.9.9"), raw("8.8.8.8")) == "egress"
    assert classify(raw("8.8.8.8"), raw("127.0.0.1")) == "ingress"  # loopback is this host
    assert classify(raw("fe80::1"), raw("8.8.8.8")) == "egress"  # link-local too
    assert classify(raw("10.1.1.1"), raw("192.168.1.1")) == "internal"
    assert classify(raw("10.1.1.1"), raw("8.8.8.8")) == "outbound"
    assert classify(raw("8.8.8.8"), raw("fd00::5")) == "inbound"
    assert classify(raw("8.8.8.8"), raw("9.9.9.9")) == "external"
    assert DirectionClassifier(frozenset(), [])(raw("8.8.8.8"), raw("9.9.9.9")) == "unknown"


def test_host_local_by_first_bytes_agrees_with_the_prefixes() -> None:
    from agent.events.direction import _HOST_LOCAL_NETS, _host_local, _in

    for ip in IPS:
        assert _host_local(ip.packed) == _in(ip.version, int(ip), _HOST_LOCAL_NETS), ip
