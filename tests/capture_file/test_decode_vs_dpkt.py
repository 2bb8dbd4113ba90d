"""The fast frame decoder and the dpkt reference agree on every corpus capture."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture import decode_dpkt
from agent.capture.decode import FrameDecoder
from agent.capture.packet import F_FRAGMENT, F_MORE_FRAGS, F_TUNNEL, F_VLAN
from agent.capture.pcapfile import CaptureReader
from tests.helpers.replay import CORPUS

TUNNEL_PCAPS = sorted((Path(__file__).resolve().parents[1] / "pcaps" / "tunnels").glob("*.pcap"))
PCAPS = sorted(CORPUS.glob("*.pcap")) + TUNNEL_PCAPS
FIELDS = ("family", "l4proto", "src", "dst", "sport", "dport", "seq", "ack", "tcp_flags", "window", "payload",
          "frag_id", "frag_off", "vlan", "tunnel")
LAYER_FLAGS = F_FRAGMENT | F_MORE_FRAGS | F_VLAN | F_TUNNEL  # the reference does not work out truncation


def test_corpus_present() -> None:
    assert len(PCAPS) >= 100 and len(TUNNEL_PCAPS) >= 9


@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: p.name)
def test_fast_decoder_matches_dpkt(pcap: Path) -> None:
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        compared = 0
        for ts, frame, wire_len in reader:
            fast = decoder.decode(frame, ts, wire_len)
            slow = decode_dpkt.decode(reader.info.linktype, frame, ts, wire_len)
            if slow is None:
                assert fast is None or fast.payload == b"", f"dpkt refused a frame the fast path decoded: {fast}"
                continue
            assert fast is not None, f"fast decoder dropped a frame dpkt decodes ({slow})"
            for name in FIELDS:
                assert getattr(fast, name) == getattr(slow, name), f"{name} differs: {fast} vs {slow}"
            assert fast.flags & LAYER_FLAGS == slow.flags & LAYER_FLAGS
            compared += 1
    assert compared > 0 or pcap.name == "flowhash_arp.pcap"


TCP_FIELDS = ("src", "dst", "sport", "dport", "seq", "ack", "tcp_flags", "payload", "missing")


@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: p.name)
def test_replay_tcp_fields_match_the_packet(pcap: Path) -> None:
    """What replay hands Dispatcher.tcp without a Packet is what decode() puts in one."""
    with CaptureReader(pcap) as reader:
        fields_decoder = FrameDecoder(reader.info.linktype)
        packet_decoder = FrameDecoder(reader.info.linktype)
        for ts, frame, wire_len in reader:
            fields = fields_decoder.tcp_fields(frame)
            pkt = packet_decoder.decode(frame, ts, wire_len)
            if fields is None:
                continue  # decode() alone handles it
            assert pkt is not None and pkt.l4proto == 6 and pkt.family == 4 and not pkt.flags & F_FRAGMENT
            assert fields == tuple(getattr(pkt, name) for name in TCP_FIELDS)


def test_tcp_fields_decline_frames_it_does_not_cover() -> None:
    decoder = FrameDecoder(1)
    ethernet = bytes(12) + b"\x08\x00"
    ipv4 = b"\x45\x00\x00\x28" + bytes(5) + b"\x06" + bytes(10)  # 40 bytes in all, protocol 6
    tcp = bytes(12) + b"\x50\x10" + bytes(6)  # 20-byte header, ACK
    ipv4_tcp = ethernet + ipv4 + tcp
    assert decoder.tcp_fields(ipv4_tcp) is not None
    assert decoder.tcp_fields(ipv4_tcp[:53]) is None  # too short for both headers
    assert decoder.tcp_fields(ipv4_tcp[:23] + b"\x11" + ipv4_tcp[24:]) is None  # UDP
    assert decoder.tcp_fields(ipv4_tcp[:14] + b"\x46" + ipv4_tcp[15:]) is None  # IPv4 options
    assert decoder.tcp_fields(ipv4_tcp[:20] + b"\x20\x00" + ipv4_tcp[22:]) is None  # a fragment
    assert FrameDecoder(1, keep_link=True).tcp_fields(ipv4_tcp) is None  # flows want the link layer
