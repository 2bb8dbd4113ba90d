"""dnsmasq's DHCP server in namespace b, busybox udhcpc as the client in namespace a.

The exchange is captured on namespace a's veth and replayed through the CLI
(`capture_events`); when live eBPF capture lands, only that function
changes.  Every event is checked against what dnsmasq was told to hand out
and what udhcpc reported.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events as live_capture
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("dnsmasq") and shutil.which("busybox") and shutil.which("tcpdump")),
                       reason="needs dnsmasq, busybox (udhcpc) and tcpdump"),
]

LEASE_S = 3600


@dataclass
class Lab:
    pair: VethPair
    subnet: int  # the N of 10.213.N.0/24
    tmp: Path
    mac: str  # namespace a's veth MAC, as dhcpv4.client_mac shows it


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="pktbeat-dhcp-live-") as tmpdir, veth_pair("dhcp") as pair:
        tmp = Path(tmpdir)
        n = int(pair.b_ip.split(".")[2])
        pair.b.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={pair.b_if}",
                      "--bind-interfaces", f"--dhcp-range=10.213.{n}.50,10.213.{n}.60,255.255.255.0,{LEASE_S}",
                      f"--dhcp-leasefile={tmp / 'leases'}", "--pid-file=", "--user=root", "--group=root",
                      f"--dhcp-option=option:router,{pair.b_ip}", f"--dhcp-option=option:dns-server,{pair.b_ip}",
                      "--dhcp-option=option:domain-name,example.test", "--dhcp-authoritative"],
                     log=tmp / "dnsmasq.log")
        pair.b.wait_port(67, udp=True)
        link = pair.a.run(["ip", "-o", "link", "show", pair.a_if]).stdout
        mac = re.search(r"link/ether ([0-9a-f:]{17})", link)
        assert mac, link
        yield Lab(pair, n, tmp, mac.group(1).replace(":", "-").upper())


def capture_events(lab: Lab, traffic: Callable[[], None], name: str) -> list[dict[str, Any]]:
    """Run `traffic` while capturing on namespace a's veth, then replay the capture through the CLI."""
    events = live_capture(lab.pair, lambda _pair: traffic(), [{"type": "dhcpv4", "ports": [67, 68]}])
    return [e for e in events if e["type"] == "dhcpv4"]


def udhcpc(lab: Lab, *extra: str) -> str:
    """Get a lease (without configuring it: the script is /bin/true); returns the address obtained."""
    out = lab.pair.a.run(["busybox", "udhcpc", "-f", "-q", "-n", "-i", lab.pair.a_if, "-s", "/bin/true",
                          "-t", "4", "-T", "2", "-x", "hostname:pktbeat-test", "-V", "pktbeat-vendor", *extra],
                         timeout=40)
    found = re.search(r"lease of ([0-9.]+) obtained from ([0-9.]+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    assert found.group(2) == lab.pair.b_ip
    return found.group(1)


def check_exchange(lab: Lab, events: list[dict[str, Any]], leased: str, broadcast: bool) -> None:
    types = [e["dhcpv4"]["option"]["message_type"] for e in events]
    # udhcpc may send DISCOVER again before it takes the first OFFER.
    assert types[-2:] == ["request", "ack"] and {"discover", "offer"} <= set(types[:-2]), types
    assert len({e["dhcpv4"]["transaction_id"] for e in events}) == 1
    for e in events:
        d = e["dhcpv4"]
        assert re.fullmatch(r"0x[0-9a-f]{8}", d["transaction_id"])
        assert d["client_mac"] == lab.mac and d["hardware_type"] == "Ethernet" and d["hops"] == 0
        assert d["flags"] == ("broadcast" if broadcast else "unicast")
        assert e["status"] == "OK" and e["network"]["protocol"] == "dhcpv4"
        assert e["source"]["bytes"] == e["network"]["bytes"] and "bytes" not in e["destination"]
        option = d["option"]
        if d["op_code"] == "bootrequest":
            assert e["source"] == e["client"] and e["client"]["ip"] == "0.0.0.0" and e["client"]["port"] == 68
            assert e["server"] == e["destination"] == {"ip": "255.255.255.255", "port": 67}
            assert option["hostname"] == "pktbeat-test" and option["class_identifier"] == "pktbeat-vendor"
            assert {"Subnet Mask", "Router", "Domain Name Server"} <= set(option["parameter_request_list"])
        else:
            assert d["op_code"] == "bootreply"
            # The sender is dnsmasq (bound to any address, in b): process attribution names it.
            assert e["source"].pop("process")["name"] == "dnsmasq"
            assert e["source"] == {"ip": lab.pair.b_ip, "port": 67, "bytes": e["network"]["bytes"]}
            assert e["server"] == e["source"]
            assert (e["client"]["ip"], e["client"]["port"]) == ("255.255.255.255" if broadcast else leased, 68)
            assert d["assigned_ip"] == leased and d["server_ip"] == lab.pair.b_ip
            assert option["server_identifier"] == option["router"] == lab.pair.b_ip
            assert option["dns_servers"] == [lab.pair.b_ip] and option["domain_name"] == "example.test"
            assert option["subnet_mask"] == "255.255.255.0"
            assert option["broadcast_address"] == f"10.213.{lab.subnet}.255"
            assert option["ip_address_lease_time_sec"] == LEASE_S
            assert (option["renewal_time_sec"], option["rebinding_time_sec"]) == (LEASE_S // 2, LEASE_S * 7 // 8)
    request = events[-2]["dhcpv4"]["option"]
    assert request["requested_ip_address"] == leased and request["server_identifier"] == lab.pair.b_ip
    assert events[-1]["dhcpv4"]["option"]["hostname"] == "pktbeat-test"


def test_lease_with_unicast_replies(lab: Lab) -> None:
    leased: list[str] = []
    events = capture_events(lab, lambda: leased.append(udhcpc(lab)), "unicast")
    n = lab.subnet
    assert re.fullmatch(rf"10\.213\.{n}\.(5\d|60)", leased[0])
    check_exchange(lab, events, leased[0], broadcast=False)


def test_lease_with_broadcast_replies(lab: Lab) -> None:
    leased: list[str] = []
    events = capture_events(lab, lambda: leased.append(udhcpc(lab, "-B")), "broadcast")
    check_exchange(lab, events, leased[0], broadcast=True)
