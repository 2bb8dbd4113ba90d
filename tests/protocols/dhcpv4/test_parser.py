"""DHCPv4 messages from literal bytes: decoding, option rendering, events, and malformed input.

Packetbeat's TestParseDHCPRequest and TestParseDHCPACK are re-created on the
same two messages (they are byte for byte the ones in dhcp.pcap).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from agent import metrics
from agent.events.builder import AgentIdentity, EventBuilder
from agent.events.direction import DirectionClassifier, parse_networks
from agent.protocols.base import Transaction
from agent.protocols.dhcpv4 import fields as F
from agent.protocols.dhcpv4 import plugin as P
from agent.protocols.dhcpv4.parser import parse
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes
from tests.helpers.replay import corpus
from tests.helpers.sessions import protocol_config
from tests.protocols.dhcpv4.messages import ACK, MAC, REQUEST, bootp, ip, opt, udp_payloads

T0 = 1_700_000_000 * 10**9


def handle(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> tuple[list[Transaction], metrics.Counters]:
    """One datagram through the handler, with `conn` oriented as the dispatcher orients it (by port)."""
    out: list[Transaction] = []
    counters = metrics.Counters("test.dhcpv4")
    handler = P.SPEC.udp(protocol_config("dhcpv4"), out.append, counters)  # type: ignore[misc]
    s, d = Endpoint(ip_bytes(src[0]), src[1]), Endpoint(ip_bytes(dst[0]), dst[1])
    # Both 67 and 68 are DHCP ports: the source port matches first, so the sender is the "server".
    conn = ConnectionInfo(d, s, 4, "udp")
    try:
        handler.datagram(Direction.TO_CLIENT, conn, data, T0)
    except ParseError:
        pass
    return out, counters


def event(txn: Transaction) -> dict[str, Any]:
    builder = EventBuilder(AgentIdentity.create("test", "id"), DirectionClassifier(frozenset(), parse_networks([])))
    out = builder.transaction_event(txn)
    assert out is not None
    return out


def test_literal_messages_are_the_ones_in_the_corpus() -> None:
    assert udp_payloads(corpus("dhcp.pcap"))[2:] == [REQUEST, ACK]


def test_request() -> None:
    (txn,), counters = handle(REQUEST, ("0.0.0.0", 68), ("255.255.255.255", 67))
    e = event(txn)
    assert e["type"] == "dhcpv4" and e["status"] == "OK"
    assert e["source"] == e["client"] == {"ip": "0.0.0.0", "port": 68, "bytes": 272}
    assert e["destination"] == e["server"] == {"ip": "255.255.255.255", "port": 67}
    assert e["event"]["category"] == ["network"] and e["event"]["type"] == ["connection", "protocol"]
    assert e["event"]["start"] and "end" not in e["event"]
    assert e["network"] == {"type": "ipv4", "transport": "udp", "protocol": "dhcpv4", "bytes": 272,
                            "community_id": "1:t9O1j0qj71O4wJM7gnaHtgmfev8=", "direction": "unknown"}
    assert e["related"] == {"ip": ["0.0.0.0", "255.255.255.255"]}
    assert e["dhcpv4"] == {
        "client_mac": "00-0B-82-01-FC-42", "flags": "unicast", "hardware_type": "Ethernet", "hops": 0,
        "op_code": "bootrequest", "seconds": 0, "transaction_id": "0x00003d1e",
        "option": {"message_type": "request",
                   "parameter_request_list": ["Subnet Mask", "Router", "Domain Name Server", "NTP Servers"],
                   "requested_ip_address": "192.168.0.10", "server_identifier": "192.168.0.1"}}
    assert counters["total_packets"] == 1 and counters["parse_failures"] == 0


def test_ack_reverses_client_and_server() -> None:
    (txn,), _ = handle(ACK, ("192.168.0.1", 67), ("192.168.0.10", 68))
    e = event(txn)
    assert e["source"] == {"ip": "192.168.0.1", "port": 67, "bytes": 300}
    assert e["destination"] == {"ip": "192.168.0.10", "port": 68}
    # Packetbeat's client has no bytes; the builder's client copy keeps source.bytes (reported).
    assert (e["client"]["ip"], e["client"]["port"]) == ("192.168.0.10", 68)
    assert e["server"] == {"ip": "192.168.0.1", "port": 67, "bytes": 300}
    assert e["network"]["bytes"] == 300 and e["network"]["community_id"] == "1:VbRSZnvQqvLiQRhYHLrdVI17sLQ="
    assert e["related"] == {"ip": ["192.168.0.1", "192.168.0.10"]}
    assert e["dhcpv4"] == {
        "assigned_ip": "192.168.0.10", "client_mac": "00-0B-82-01-FC-42", "flags": "unicast",
        "hardware_type": "Ethernet", "hops": 0, "op_code": "bootreply", "seconds": 0,
        "transaction_id": "0x00003d1e",
        "option": {"ip_address_lease_time_sec": 3600, "message_type": "ack", "rebinding_time_sec": 3150,
                   "renewal_time_sec": 1800, "server_identifier": "192.168.0.1",
                   "subnet_mask": "255.255.255.0"}}


def test_every_rendered_option() -> None:
    vivc = struct.pack("!IB", 4491, 3) + b"\x01\x02\x03" + struct.pack("!IB", 9, 0)
    data = bootp(2, 1, ciaddr="10.0.0.5", yiaddr="10.0.0.6", siaddr="10.0.0.7", giaddr="10.0.0.8", hops=2,
                 secs=7, flags=0x8000, sname=b"boot-server", file=b"pxelinux.0", options=(
                     opt(53, b"\x02") + opt(28, ip("10.0.0.255")) + opt(57, struct.pack("!H", 1500))
                     + opt(60, b"MSFT 5.0") + opt(15, b"example.test") + opt(6, ip("10.0.0.1") + ip("10.0.0.2"))
                     + opt(124, vivc) + opt(2, struct.pack("!i", -3600)) + opt(3, ip("10.0.0.1"))
                     + opt(4, ip("10.0.0.3")) + opt(42, ip("10.0.0.4") + ip("10.0.0.9"))
                     + opt(12, b"laptop\x00") + opt(56, b"all good") + opt(67, b"boot.efi")
                     + opt(55, bytes([1, 121, 250])) + opt(61, b"\x01" + MAC)))
    (txn,), _ = handle(data, ("10.0.0.7", 67), ("10.0.0.6", 68))
    d = txn.fields["dhcpv4"]
    assert (d["client_ip"], d["assigned_ip"], d["server_ip"], d["relay_ip"]) == (
        "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8")
    assert (d["hops"], d["seconds"], d["flags"]) == (2, 7, "broadcast")
    assert (d["server_name"], d["boot_file_name"]) == ("boot-server", "pxelinux.0")
    assert d["option"] == {
        "message_type": "offer", "broadcast_address": "10.0.0.255", "max_dhcp_message_size": 1500,
        "class_identifier": "MSFT 5.0", "domain_name": "example.test", "dns_servers": ["10.0.0.1", "10.0.0.2"],
        "vendor_identifying_options": [{"id": 4491, "data": "010203"}, {"id": 9, "data": ""}],
        "utc_time_offset_sec": -3600, "router": "10.0.0.1", "time_servers": ["10.0.0.3"],
        "ntp_servers": ["10.0.0.4", "10.0.0.9"], "hostname": "laptop", "message": "all good",
        "boot_file_name": "boot.efi",
        "parameter_request_list": ["Subnet Mask", "Classless Static Route Option", "Unknown (250)"]}
    assert txn.fields["related"] == {"ip": ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"]}
    assert txn.notes == []


def test_several_routers_are_all_kept() -> None:
    (txn,), _ = handle(bootp(2, 1, options=opt(3, ip("10.0.0.1") + ip("10.0.0.2"))), ("10.0.0.1", 67),
                       ("10.0.0.9", 68))
    assert txn.fields["dhcpv4"]["option"]["router"] == ["10.0.0.1", "10.0.0.2"]


def test_long_option_split_in_two_is_joined_rfc3396() -> None:
    data = bootp(1, 1, options=opt(12, b"very-long-") + opt(53, b"\x01") + opt(12, b"hostname"))
    (txn,), _ = handle(data, ("0.0.0.0", 68), ("255.255.255.255", 67))
    assert txn.fields["dhcpv4"]["option"]["hostname"] == "very-long-hostname"


def test_overloaded_file_and_sname_carry_options() -> None:
    file_area = opt(12, b"from-file") + b"\xff"
    sname_area = opt(15, b"from.sname") + b"\xff"
    data = bootp(1, 1, options=opt(52, b"\x03") + opt(53, b"\x01"), file=file_area, sname=sname_area)
    msg = parse(data)
    assert (msg.sname, msg.file) == (b"", b"")
    (txn,), _ = handle(data, ("0.0.0.0", 68), ("255.255.255.255", 67))
    d = txn.fields["dhcpv4"]
    assert d["option"]["hostname"] == "from-file" and d["option"]["domain_name"] == "from.sname"
    assert "server_name" not in d and "boot_file_name" not in d


def test_pad_options_and_missing_end_are_fine() -> None:
    data = bootp(1, 1, options=b"\x00\x00" + opt(53, b"\x03"), end=False)
    (txn,), _ = handle(data, ("0.0.0.0", 68), ("255.255.255.255", 67))
    assert txn.fields["dhcpv4"]["option"] == {"message_type": "request"}


def test_bytes_after_end_are_ignored() -> None:
    data = bootp(1, 1, options=opt(53, b"\x03")) + b"\x35\x09garbage"
    (txn,), _ = handle(data, ("0.0.0.0", 68), ("255.255.255.255", 67))
    assert txn.fields["dhcpv4"]["option"] == {"message_type": "request"}


def test_unknown_values_are_named_not_dropped() -> None:
    data = bootp(3, 1, htype=200, hlen=0, options=opt(53, b"\x0d"))
    (txn,), _ = handle(data, ("10.0.0.1", 68), ("10.0.0.2", 67))
    d = txn.fields["dhcpv4"]
    assert (d["op_code"], d["hardware_type"], d["option"]["message_type"]) == ("invalid", "Invalid", "unknown (13)")
    assert "client_mac" not in d


def test_chaddr_length_is_capped_at_16() -> None:
    msg = parse(bootp(1, 1, hlen=200, chaddr=bytes(range(16))))
    assert F.client_mac(msg.chaddr) == "00-01-02-03-04-05-06-07-08-09-0A-0B-0C-0D-0E-0F"


@pytest.mark.parametrize(("options", "code"), [
    (opt(53, b"\x01\x02"), 53), (opt(50, b"\x0a\x00"), 50), (opt(6, b"\x0a\x00\x00"), 6),
    (opt(57, b"\x05"), 57), (opt(51, b"\x00"), 51), (opt(124, b"\x00\x00\x00\x01\x05ab"), 124),
])
def test_a_malformed_option_value_is_left_out_with_a_note(options: bytes, code: int) -> None:
    (txn,), counters = handle(bootp(1, 1, options=options + opt(12, b"host")), ("0.0.0.0", 68),
                              ("255.255.255.255", 67))
    assert txn.fields["dhcpv4"]["option"] == {"hostname": "host"}
    assert txn.notes == [P.malformed_option_note(code)]
    assert counters["malformed_options"] == 1
    assert event(txn)["error"]["message"] == P.malformed_option_note(code)


@pytest.mark.parametrize("data", [
    b"", REQUEST[:239], REQUEST[:236] + b"\x63\x82\x53\x64" + REQUEST[240:],
    bootp(1, 1, options=b"\x0c", end=False), bootp(1, 1, options=b"\x0c\x05abc", end=False),
    bootp(1, 1, options=opt(52, b"\x01"), file=b"\x00" * 120 + b"\x0c\x40abc"),
], ids=["empty", "short", "cookie", "no-length", "past-end", "overload-past-end"])
def test_not_dhcp_is_a_parse_failure(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse(data)
    out, counters = handle(data, ("0.0.0.0", 68), ("255.255.255.255", 67))
    assert out == []
    assert (counters["total_packets"], counters["parse_failures"]) == (1, 1)


def test_default_ports_are_packetbeats() -> None:
    assert protocol_config("dhcpv4").ports == (67, 68)
    assert protocol_config("dhcpv4", ports=[1067]).ports == (1067,)
