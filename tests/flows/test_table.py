"""The user-space flow table and reporter on literal packets."""

from __future__ import annotations

from agent.capture.packet import (
    F_FRAGMENT,
    F_LAST_CHUNK,
    F_MORE_FRAGS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_SYN,
)
from agent.events.community_id import community_id
from agent.flows.flowid import flow_id
from tests.flows.packets import MAC_A, MAC_B, T0, S, ip, packet, reply, table

HTTP = ("10.0.0.1", "10.0.0.2", 40000, 80)


def test_both_directions_sum_into_one_flow_with_the_first_sender_as_source() -> None:
    flows, events = table()
    syn = packet(T0, *HTTP, wire_len=74, tcp_flags=TCP_SYN)
    flows.packet(syn)
    flows.packet(reply(syn, T0 + 1_000_000, wire_len=74))
    flows.packet(packet(T0 + 2_000_000, *HTTP, wire_len=66, tcp_flags=TCP_ACK))  # no payload: still counts
    flows.packet(packet(T0 + 3_000_000, *HTTP, wire_len=200, payload=b"GET / HTTP/1.1\r\n"))
    flows.packet(reply(syn, T0 + 4_000_000, wire_len=1514, payload=b"x" * 1448))
    flows.final(T0 + S)

    assert len(events) == 1
    ev = events[0]
    assert ev["type"] == "flow"
    assert ev["source"] == {"mac": "02-42-AC-11-00-02", "ip": "10.0.0.1", "port": 40000, "packets": 3,
                            "bytes": 74 + 66 + 200}
    assert ev["destination"] == {"mac": "02-42-AC-11-00-03", "ip": "10.0.0.2", "port": 80, "packets": 2,
                                 "bytes": 74 + 1514}
    assert ev["network"] == {"type": "ipv4", "transport": "tcp", "bytes": 74 + 66 + 200 + 74 + 1514, "packets": 5,
                             "community_id": community_id(ip("10.0.0.1"), ip("10.0.0.2"), 6, 40000, 80)}
    assert ev["event"]["kind"] == "event"
    assert ev["event"]["category"] == ["network"]
    assert ev["event"]["action"] == "network_flow"
    assert ev["event"]["dataset"] == "flow"
    assert ev["event"]["type"] == ["connection", "end"]
    assert ev["flow"]["final"] is True
    assert "vlan" not in ev["flow"]


def test_the_server_is_source_when_it_sent_the_first_packet_seen() -> None:
    flows, events = table()
    flows.packet(packet(T0, "10.0.0.2", "10.0.0.1", 80, 40000, macs=(MAC_B, MAC_A)))
    flows.packet(packet(T0 + 1, *HTTP))
    flows.final(T0 + 1)
    assert events[0]["source"]["ip"] == "10.0.0.2"
    assert events[0]["source"]["port"] == 80
    assert events[0]["source"]["mac"] == "02-42-AC-11-00-03"


def test_one_way_flow_has_no_destination_stats() -> None:
    flows, events = table()
    for i in range(3):
        flows.packet(packet(T0 + i * S // 10, "192.168.1.5", "192.168.1.9", 63888, 11211, proto=IPPROTO_UDP,
                            wire_len=90 + i))
    flows.final(T0 + S)
    ev = events[0]
    assert ev["source"]["packets"] == 3
    assert ev["source"]["bytes"] == 90 + 91 + 92
    assert ev["destination"] == {"mac": "02-42-AC-11-00-03", "ip": "192.168.1.9", "port": 11211}
    assert ev["network"]["packets"] == 3
    assert ev["network"]["transport"] == "udp"


def test_event_duration_is_last_minus_first_packet_and_times_are_packet_times() -> None:
    flows, events = table()
    first = packet(T0 + 123_456_789, *HTTP)
    flows.packet(first)
    flows.packet(reply(first, T0 + 2 * S + 500_000_000))
    flows.packet(packet(T0 + S, *HTTP))  # in between: end stays the latest packet
    flows.final(T0 + 10 * S)
    ev = events[0]
    assert ev["event"]["duration"] == 2 * S + 500_000_000 - 123_456_789
    assert ev["event"]["start"] == "2023-11-14T22:13:20.123Z"
    assert ev["event"]["end"] == "2023-11-14T22:13:22.500Z"
    assert ev["@timestamp"] == "2023-11-14T22:13:30.000Z"


def test_final_at_end_reports_every_flow_once_and_empties_the_table() -> None:
    flows, events = table(follow_clock=True, timeout="30s", period="10s")
    flows.packet(packet(T0, *HTTP))
    flows.packet(packet(T0, "10.0.0.3", "10.0.0.4", 1000, 53, proto=IPPROTO_UDP))
    flows.tick(T0 + S)
    assert events == []
    flows.final(T0 + 2 * S)
    assert [e["flow"]["final"] for e in events] == [True, True]
    assert all(e["event"]["type"] == ["connection", "end"] for e in events)
    assert len(flows.source) == 0
    flows.final(T0 + 3 * S)
    assert len(events) == 2


def test_period_minus_one_reports_only_when_flows_end() -> None:
    flows, events = table(follow_clock=True, timeout="5s", period="-1s")
    for i in range(4):  # active for 3 s
        flows.packet(packet(T0 + i * S, *HTTP))
        flows.tick(T0 + i * S)
    flows.tick(T0 + 5 * S)  # first timer tick (T0 + 5s): idle 2 s only
    assert events == []
    flows.tick(T0 + 10 * S)  # idle 7 s > 5 s
    assert len(events) == 1
    assert events[0]["flow"]["final"] is True
    assert events[0]["source"]["packets"] == 4
    assert events[0]["@timestamp"] == "2023-11-14T22:13:30.000Z"


def test_periodic_reports_are_cumulative_by_default() -> None:
    flows, events = table(follow_clock=True, timeout="30s", period="1s")
    flows.tick(T0)  # the runner ticks from its first packet on; Packetbeat's timer grid starts at T0
    first = packet(T0 + S // 2, *HTTP, wire_len=100)
    flows.packet(first)
    flows.tick(T0 + S)  # tick at T0+1s: one report
    flows.packet(reply(first, T0 + S + 1, wire_len=50))
    flows.packet(packet(T0 + S + 2, *HTTP, wire_len=100))
    flows.tick(T0 + 2 * S)
    assert [e["flow"]["final"] for e in events] == [False, False]
    assert [e["event"]["type"] for e in events] == [["connection"], ["connection"]]
    assert [e["source"]["packets"] for e in events] == [1, 2]
    assert [e["source"]["bytes"] for e in events] == [100, 200]
    assert "packets" not in events[0]["destination"]
    assert events[1]["destination"]["packets"] == 1
    assert [e["network"]["bytes"] for e in events] == [100, 250]


def test_delta_reports_count_only_what_happened_since_the_last_report() -> None:
    flows, events = table(follow_clock=True, timeout="30s", period="1s", enable_delta_flow_reports=True)
    flows.tick(T0)
    first = packet(T0 + S // 2, *HTTP, wire_len=100)
    flows.packet(first)
    flows.tick(T0 + S)
    flows.packet(reply(first, T0 + S + 1, wire_len=50))
    flows.packet(packet(T0 + S + 2, *HTTP, wire_len=100))
    flows.tick(T0 + 2 * S)
    flows.tick(T0 + 3 * S)  # nothing new: zeros, destination stats stay present
    flows.packet(packet(T0 + 3 * S + 5, *HTTP, wire_len=70))
    flows.final(T0 + 4 * S)
    assert [e["source"]["packets"] for e in events] == [1, 1, 0, 1]
    assert [e["source"]["bytes"] for e in events] == [100, 100, 0, 70]
    assert [e["destination"].get("packets") for e in events] == [None, 1, 0, 0]
    assert [e["network"]["packets"] for e in events] == [1, 2, 0, 1]
    assert [e["flow"]["final"] for e in events] == [False, False, False, True]


def test_timeout_sends_a_final_report_and_forgets_the_flow() -> None:
    flows, events = table(follow_clock=True, timeout="2s", period="-1s")
    flows.tick(T0)
    flows.packet(packet(T0 + S // 2, *HTTP, wire_len=100))
    flows.tick(T0 + 2 * S)  # tick at T0+2s: idle 1.5 s, kept
    assert events == [] and len(flows.source) == 1
    flows.tick(T0 + 4 * S)  # idle 3.5 s
    assert len(events) == 1 and events[0]["flow"]["final"] is True
    assert len(flows.source) == 0
    # The same 5-tuple later is a new flow with fresh counters and start time.
    flows.packet(packet(T0 + 5 * S, *HTTP, wire_len=40))
    flows.final(T0 + 6 * S)
    assert len(events) == 2
    assert events[1]["source"]["packets"] == 1
    assert events[1]["source"]["bytes"] == 40
    assert events[1]["event"]["start"] == "2023-11-14T22:13:25.000Z"
    assert events[0]["flow"]["id"] == events[1]["flow"]["id"]


def test_a_quiet_gap_replays_the_ticks_a_live_agent_would_have_run() -> None:
    flows, events = table(follow_clock=True, timeout="3s", period="1s")
    flows.tick(T0)
    flows.packet(packet(T0 + S // 2, *HTTP))
    flows.tick(T0 + 3600 * S)  # one hour later: reports at +1s, +2s, +3s, final at the +6s tick
    assert [e["flow"]["final"] for e in events] == [False, False, False, False, False, True]
    assert events[-1]["@timestamp"] == "2023-11-14T22:13:26.000Z"


def test_without_follow_clock_nothing_is_reported_before_the_end() -> None:
    """-t replay: Packetbeat's wall-clock timer never fires during a fast replay."""
    flows, events = table(timeout="2s", period="1s")
    flows.packet(packet(T0, *HTTP))
    flows.tick(T0 + 60 * S)
    flows.packet(packet(T0 + 60 * S, *HTTP))
    flows.tick(T0 + 120 * S)
    assert events == []
    flows.final(T0 + 120 * S)
    assert len(events) == 1
    assert events[0]["source"]["packets"] == 2


def test_a_full_table_evicts_the_least_recently_active_flows_with_a_final_report() -> None:
    flows, events = table(max_flows=4)
    evicted_before = flows.source.stats["flows_evicted"]
    for i in range(6):
        flows.packet(packet(T0 + i * S, "10.0.0.1", "10.0.0.2", 1000 + i, 80, wire_len=100))
    flows.packet(packet(T0 + 6 * S, "10.0.0.1", "10.0.0.2", 1005, 80, wire_len=100))
    assert len(flows.source) <= 4
    assert flows.source.stats["flows_evicted"] - evicted_before == 2
    assert [e["source"]["port"] for e in events] == [1000, 1001]  # the oldest, at once
    assert all(e["flow"]["final"] for e in events)
    flows.final(T0 + 10 * S)
    assert sum(e["network"]["packets"] for e in events) == 7  # nothing lost
    assert sorted(e["source"]["port"] for e in events) == [1000, 1001, 1002, 1003, 1004, 1005]


def test_icmp_flows_follow_packetbeat_keys_not_echo_ids() -> None:
    """Packetbeat keys an ICMP flow by MACs, VLANs and addresses only: pings with different ids between
    the same hosts share a flow (its flowhash_icmp6 vectors count on it); another host pair or ICMPv6
    is another flow."""
    flows, events = table()
    echo = bytes((8, 0)) + b"\x00\x00"
    flows.packet(packet(T0, "10.0.0.1", "10.0.0.2", proto=IPPROTO_ICMP, payload=echo + b"\x00\x07\x00\x01"))
    flows.packet(packet(T0 + 1, "10.0.0.1", "10.0.0.2", proto=IPPROTO_ICMP, payload=echo + b"\x00\x09\x00\x01"))
    flows.packet(packet(T0 + 2, "10.0.0.2", "10.0.0.1", proto=IPPROTO_ICMP, macs=(MAC_B, MAC_A),
                        payload=bytes((0, 0, 0, 0, 0, 7, 0, 1))))
    flows.packet(packet(T0 + 3, "10.0.0.1", "10.0.0.3", proto=IPPROTO_ICMP, payload=echo + b"\x00\x07\x00\x02"))
    flows.packet(packet(T0 + 4, "fd00::1", "fd00::2", proto=IPPROTO_ICMPV6, payload=bytes((128, 0, 0, 0, 0, 7, 0, 1))))
    flows.final(T0 + S)
    assert [(e["destination"]["ip"], e["network"]["packets"]) for e in events] == [
        ("10.0.0.2", 3), ("10.0.0.3", 1), ("fd00::2", 1)]
    assert [e["network"]["transport"] for e in events] == ["icmp", "icmp", "ipv6-icmp"]
    assert all("port" not in e["source"] for e in events)


def test_icmp_community_id_uses_the_latest_message_of_the_source_side() -> None:
    flows, events = table()
    a, b = "fe80::1", "fe80::2"
    flows.packet(packet(T0, a, b, proto=IPPROTO_ICMPV6, payload=bytes((135, 0, 0, 0))))  # neighbour solicitation
    flows.packet(packet(T0 + 1, b, a, proto=IPPROTO_ICMPV6, macs=(MAC_B, MAC_A), payload=bytes((136, 0, 0, 0))))
    flows.packet(packet(T0 + 2, a, b, proto=IPPROTO_ICMPV6, payload=bytes((128, 0, 0, 0))))  # echo request
    flows.packet(packet(T0 + 3, b, a, proto=IPPROTO_ICMPV6, macs=(MAC_B, MAC_A), payload=bytes((129, 0, 0, 0))))
    flows.final(T0 + S)
    assert events[0]["network"]["community_id"] == community_id(ip(a), ip(b), 58, icmp_type=128)
    assert events[0]["network"]["community_id"] != community_id(ip(a), ip(b), 58, icmp_type=135)


def test_vlan_and_q_in_q_tags_are_part_of_the_flow() -> None:
    flows, events = table()
    flows.packet(packet(T0, "10.0.0.1", "10.0.0.2", proto=IPPROTO_ICMP, payload=b"\x08\x00\x00\x00", vlans=(10,)))
    flows.packet(packet(T0 + 1, "10.0.0.1", "10.0.0.2", proto=IPPROTO_ICMP, payload=b"\x08\x00\x00\x00",
                        vlans=(101, 600)))
    flows.packet(packet(T0 + 2, "10.0.0.1", "10.0.0.2", proto=IPPROTO_ICMP, payload=b"\x08\x00\x00\x00"))
    flows.final(T0 + S)
    assert [e["flow"].get("vlan") for e in events] == [10, [101, 600], None]
    assert len({e["flow"]["id"] for e in events}) == 3


def test_ip_in_ip_reports_the_inner_conversation_with_the_outer_pair_as_tunnel_fields() -> None:
    """Unlike Packetbeat (source.ip = [outer, inner], community id of the outer pair), the flow is described
    from the inside, as every tunnelled flow is; the id keeps Packetbeat's two-IP-layer layout."""
    flows, events = table()
    inner = packet(T0, "192.168.0.1", "192.168.0.2", 5000, 80, outer=("10.1.1.1", "10.2.2.2"))
    flows.packet(inner)
    flows.packet(reply(inner, T0 + 1))
    # The same inner addresses between two other tunnel endpoints: another flow.
    flows.packet(packet(T0 + 2, "192.168.0.1", "192.168.0.2", 5000, 80, outer=("10.3.3.3", "10.2.2.2")))
    flows.final(T0 + S)
    ev = events[0]
    assert ev["source"]["ip"] == "192.168.0.1" and ev["destination"]["ip"] == "192.168.0.2"
    assert ev["network"]["type"] == "ipv4" and ev["network"]["packets"] == 2
    assert ev["network"]["community_id"] == community_id(ip("192.168.0.1"), ip("192.168.0.2"), 6, 5000, 80)
    assert ev["pktbeat"]["tunnel"] == {"type": "ip-in-ip", "depth": 1, "source": {"ip": "10.1.1.1"},
                                       "destination": {"ip": "10.2.2.2"}}
    expected_id, _ = flow_id((MAC_A, MAC_B), (), [(ip("10.1.1.1"), ip("10.2.2.2")),
                                                  (ip("192.168.0.1"), ip("192.168.0.2"))], 6, (5000, 80))
    assert ev["flow"]["id"] == expected_id
    assert len(events) == 2 and events[1]["pktbeat"]["tunnel"]["source"]["ip"] == "10.3.3.3"
    assert events[1]["flow"]["id"] != expected_id


def test_macs_are_part_of_the_key_unless_mismatched_eth_is_allowed() -> None:
    """A reply routed back through another MAC is another flow in Packetbeat (flowhash_tcp.pcap)."""
    router = bytes.fromhex("00000c07ac01")
    request = packet(T0, *HTTP, macs=(MAC_A, router))
    answer = packet(T0 + 1, "10.0.0.2", "10.0.0.1", 80, 40000, macs=(MAC_B, MAC_A))
    strict, strict_events = table()
    loose, loose_events = table(allow_mismatched_eth=True)
    for flows in (strict, loose):
        flows.packet(request)
        flows.packet(answer)
        flows.final(T0 + S)
    assert [e["network"]["packets"] for e in strict_events] == [1, 1]
    assert [e["network"]["packets"] for e in loose_events] == [2]
    assert "mac" not in loose_events[0]["source"]


def test_links_without_ethernet_have_no_macs() -> None:
    flows, events = table()
    flows.packet(packet(T0, *HTTP, macs=None))
    flows.final(T0 + 1)
    assert "mac" not in events[0]["source"] and "mac" not in events[0]["destination"]


def test_only_the_last_chunk_of_a_split_super_packet_counts() -> None:
    flows, events = table()
    flows.packet(packet(T0, *HTTP, wire_len=30000, flags=0))
    flows.packet(packet(T0, *HTTP, wire_len=30000, flags=F_LAST_CHUNK))
    flows.final(T0 + 1)
    assert events[0]["source"]["packets"] == 1


def test_fragments_in_reverse_order_count_in_their_datagrams_flow() -> None:
    flows, events = table()
    udp_header = (53).to_bytes(2, "big") + (33000).to_bytes(2, "big") + b"\x0d\x4e\x00\x00"
    frag = F_FRAGMENT | F_LAST_CHUNK
    flows.packet(packet(T0, "8.8.8.8", "10.0.0.1", proto=IPPROTO_UDP, wire_len=1514, payload=b"z" * 1480,
                        flags=frag, frag_id=77, frag_off=2960))
    flows.packet(packet(T0 + 1, "8.8.8.8", "10.0.0.1", proto=IPPROTO_UDP, wire_len=1514, payload=b"y" * 1480,
                        flags=frag | F_MORE_FRAGS, frag_id=77, frag_off=1480))
    flows.packet(packet(T0 + 2, "8.8.8.8", "10.0.0.1", proto=IPPROTO_UDP, wire_len=1514,
                        payload=udp_header + b"x" * 1472, flags=frag | F_MORE_FRAGS, frag_id=77, frag_off=0))
    flows.final(T0 + S)
    assert len(events) == 1
    assert events[0]["source"]["port"] == 53
    assert events[0]["destination"]["port"] == 33000
    assert events[0]["source"]["packets"] == 3
    assert events[0]["source"]["bytes"] == 3 * 1514


def test_fragments_whose_first_never_comes_count_without_ports() -> None:
    flows, events = table(follow_clock=True, timeout="30s", period="-1s")
    unmatched_before = flows.source.stats["fragments_unmatched"]
    flows.packet(packet(T0, "8.8.8.8", "10.0.0.1", proto=IPPROTO_UDP, wire_len=600, payload=b"z" * 500,
                        flags=F_FRAGMENT | F_LAST_CHUNK, frag_id=9, frag_off=1480))
    flows.tick(T0 + S // 2)
    assert flows.source.stats["fragments_unmatched"] == unmatched_before
    flows.tick(T0 + 2 * S)  # held longer than a second
    assert flows.source.stats["fragments_unmatched"] == unmatched_before + 1
    flows.final(T0 + 3 * S)
    assert len(events) == 1
    assert events[0]["source"]["packets"] == 1
    assert "port" not in events[0]["source"]
    assert events[0]["network"]["transport"] == "udp"


def test_an_icmp_flow_keeps_its_transport_when_the_source_last_sent_an_echo_reply() -> None:
    """Packetbeat drops network.transport and community_id when the source's last type/code is 0/0
    (a capture that starts with a reply); pktbeat knows the protocol and keeps both."""
    flows, events = table()
    flows.packet(packet(T0, "10.0.0.2", "10.0.0.1", proto=IPPROTO_ICMP, payload=bytes((0, 0, 0, 0, 0, 7, 0, 1))))
    flows.final(T0 + S)
    assert events[0]["network"]["transport"] == "icmp"
    assert events[0]["network"]["community_id"] == community_id(ip("10.0.0.2"), ip("10.0.0.1"), 1, icmp_type=0)


def test_other_ip_protocols_are_separate_flows_named_by_number() -> None:
    flows, events = table()
    flows.packet(packet(T0, "10.0.0.1", "10.0.0.2", proto=47, wire_len=120))  # GRE
    flows.packet(packet(T0 + 1, "10.0.0.1", "10.0.0.2", proto=50, wire_len=130))  # ESP
    flows.final(T0 + S)
    assert [(e["network"].get("iana_number"), e["network"]["bytes"]) for e in events] == [("47", 120), ("50", 130)]
    assert all("transport" not in e["network"] and "community_id" not in e["network"] for e in events)


def test_a_real_fragmented_dns_answer_counts_in_its_udp_flow_in_any_order() -> None:
    """udp_edns0_resp.pcap: a 3-fragment EDNS0 answer from 8.8.8.8, fed first-to-last and last-to-first."""
    from agent.capture.decode import FrameDecoder
    from agent.capture.pcapfile import CaptureReader
    from tests.helpers.replay import corpus

    path = corpus("udp_edns0_resp.pcap")
    if not path.exists():
        import pytest

        pytest.skip("corpus not present")
    with CaptureReader(str(path)) as reader:
        decoder = FrameDecoder(reader.info.linktype, keep_link=True)
        frames = [decoder.decode(frame, ts, wire_len) for ts, frame, wire_len in reader]
    assert len(frames) == 3 and all(p is not None and p.flags & F_FRAGMENT for p in frames)
    for order in (frames, frames[::-1]):
        flows, events = table()
        for p in order:
            assert p is not None
            flows.packet(p)
        flows.final(order[-1].ts_ns if order[-1] is not None else T0)
        assert len(events) == 1
        ev = events[0]
        assert (ev["source"]["ip"], ev["source"]["port"], ev["destination"]["port"]) == ("8.8.8.8", 53, 35873)
        assert ev["source"]["packets"] == 3
        assert ev["source"]["bytes"] == 1162 + 1162 + 1184
