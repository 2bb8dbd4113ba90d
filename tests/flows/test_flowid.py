"""flow.id: Packetbeat's byte layout, direction independence, and its published sample id."""

from __future__ import annotations

import base64

from agent.capture.packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from agent.flows.flowid import flow_id
from tests.flows.packets import ip

MAC1 = bytes((1, 2, 3, 4, 5, 6))
MAC2 = bytes((6, 5, 4, 3, 2, 1))
IP1, IP2, IP3, IP4 = bytes((127, 0, 0, 1)), bytes((128, 0, 1, 2)), bytes((128, 1, 1, 3)), bytes((129, 2, 1, 4))


def decode(fid: str) -> tuple[bytes, bytes]:
    raw = base64.b64decode(fid + "=" * (-len(fid) % 4))
    return raw[:17], raw[17:]


def test_mac_order_decides_the_orientation_of_every_later_pair() -> None:
    # Packetbeat's flowid_test vectors: (mac2, mac1) + (ip1, ip2) is stored mac1 mac2 ip2 ip1.
    _, body = decode(flow_id((MAC2, MAC1), (), [(IP1, IP2)], IPPROTO_ICMP, None)[0])
    assert body == MAC1 + MAC2 + IP2 + IP1
    _, body = decode(flow_id((MAC1, MAC2), (), [(IP2, IP1)], IPPROTO_ICMP, None)[0])
    assert body == MAC1 + MAC2 + IP2 + IP1


def test_both_directions_give_the_same_id() -> None:
    fwd = flow_id((MAC1, MAC2), (7,), [(IP3, IP1)], IPPROTO_TCP, (5000, 80))
    rev = flow_id((MAC2, MAC1), (7,), [(IP1, IP3)], IPPROTO_TCP, (80, 5000))
    assert fwd == rev
    other = flow_id((MAC1, MAC2), (7,), [(IP3, IP1)], IPPROTO_UDP, (5000, 80))
    assert other[0] != fwd[0]


def test_two_ip_layers_use_the_outer_slot_for_the_first() -> None:
    header, body = decode(flow_id(None, (), [(IP2, IP1), (IP3, IP4)], IPPROTO_ICMP, None)[0])
    assert body == IP1 + IP2 + IP4 + IP3
    flags = header[0] | header[1] << 8
    assert flags == 0x08 | 0x10  # outer IPv4 and IPv4
    assert header[2 + 3] == 0 and header[2 + 4] == 8  # outer IPv4 at 0, inner at 8
    assert header[14:17] == bytes((0, 0, 2))


def test_q_in_q_tags_keep_wire_order_with_the_first_as_outer() -> None:
    header, body = decode(flow_id((MAC1, MAC2), (101, 600), [(IP1, IP2)], IPPROTO_ICMP, None)[0])
    assert body[12:16] == (101).to_bytes(2, "little") + (600).to_bytes(2, "little")
    assert header[2 + 1] == 12 and header[2 + 2] == 14
    assert header[14:17] == bytes((1, 2, 1))


def test_matches_packetbeats_sample_flow_event_apart_from_its_connection_id() -> None:
    # packetbeat/_meta/sample_outputs/flow.json: 08:00:27:d5:9d:5a 10.0.2.15:23377 -> 52:54:00:12:35:02
    # 130.211.38.145:443.  Packetbeat appends its TCP parser's internal connection counter (flag 0x800,
    # 8 bytes); pktbeat leaves it out (see agent/flows/flowid.py).
    sample = "EQwA////DP//////FBgBAAEIACfVnVpSVAASNQIKAAIPgtMmkVFbuwG7AAAAAAAAAA"
    s_header, s_body = decode(sample)
    ours, _ = flow_id((bytes.fromhex("080027d59d5a"), bytes.fromhex("525400123502")), (),
                      [(ip("10.0.2.15"), ip("130.211.38.145"))], IPPROTO_TCP, (23377, 443))
    header, body = decode(ours)
    assert body == s_body[:-8]
    assert s_header[0] | s_header[1] << 8 == (header[0] | header[1] << 8) | 0x800
    assert header[2:13] == s_header[2:13] and header[13] == 0xFF and header[14:] == s_header[14:]
