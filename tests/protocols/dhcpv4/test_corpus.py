"""dhcp.pcap through the CLI: DISCOVER, OFFER, REQUEST, ACK, one event each."""

from __future__ import annotations

from tests.helpers.replay import corpus, replay


def test_dhcp_pcap() -> None:
    events, _ = replay(corpus("dhcp.pcap"), [{"type": "dhcpv4", "ports": [67, 68]}])
    assert [e["dhcpv4"]["option"]["message_type"] for e in events] == ["discover", "offer", "request", "ack"]
    assert [e["dhcpv4"]["transaction_id"] for e in events] == ["0x00003d1d"] * 2 + ["0x00003d1e"] * 2
    for e in events:
        assert e["type"] == e["event"]["dataset"] == e["network"]["protocol"] == "dhcpv4"
        assert e["status"] == "OK" and e["network"]["transport"] == "udp"
        assert e["dhcpv4"]["client_mac"] == "00-0B-82-01-FC-42"
        assert e["event"]["start"] == e["@timestamp"] and "end" not in e["event"]
        assert "bytes" not in e["destination"]
    discover, offer, request, ack = events
    assert (discover["client"]["ip"], discover["client"]["port"]) == ("0.0.0.0", 68)
    assert discover["server"] == discover["destination"] == {"ip": "255.255.255.255", "port": 67}
    assert discover["source"]["bytes"] == discover["network"]["bytes"] == 272
    assert discover["dhcpv4"]["option"]["requested_ip_address"] == "0.0.0.0"
    for reply in (offer, ack):
        assert reply["source"] == {"ip": "192.168.0.1", "port": 67, "bytes": 300}
        assert reply["client"] == reply["destination"] == {"ip": "192.168.0.10", "port": 68}
        assert reply["server"] == {"ip": "192.168.0.1", "port": 67, "bytes": 300}
        assert reply["dhcpv4"]["op_code"] == "bootreply" and reply["dhcpv4"]["assigned_ip"] == "192.168.0.10"
        assert reply["dhcpv4"]["option"]["server_identifier"] == "192.168.0.1"
        assert reply["dhcpv4"]["option"]["ip_address_lease_time_sec"] == 3600
    assert request["dhcpv4"]["option"]["requested_ip_address"] == "192.168.0.10"
    assert request["network"]["community_id"] == "1:t9O1j0qj71O4wJM7gnaHtgmfev8="


def test_dhcp_on_other_ports_is_not_decoded() -> None:
    events, _ = replay(corpus("dhcp.pcap"), [{"type": "dhcpv4", "ports": [1067]}])
    assert events == []
