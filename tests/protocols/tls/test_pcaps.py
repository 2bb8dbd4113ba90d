"""Packetbeat's TLS capture files through the real CLI, and the same captures re-segmented at random."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.packet import Packet
from tests.helpers.inprocess import events_for, read_packets, split_tcp
from tests.helpers.replay import corpus, replay

TLS_ONLY = [{"type": "tls", "ports": [443]}]
PCAPS = ["tls-sample1.pcap", "tls-sample2.pcap", "tls-version-13.pcap", "http2-16-ssl.pcap"]


def events_of(pcap: str | Path, **options: Any) -> list[dict[str, Any]]:
    events, _ = replay(pcap, [{"type": "tls", "ports": [443], **options}])
    return events


def test_established_tls12_sample2() -> None:
    [event] = events_of(corpus("tls-sample2.pcap"))
    tls = event["tls"]
    assert event["status"] == "OK" and event["type"] == "tls"
    assert event["event"]["duration"] == 364_625_000
    assert event["destination"]["domain"] == event["server"]["domain"] == "example.net"
    assert "bytes" not in event["source"] and "bytes" not in event.get("network", {})
    assert (tls["version"], tls["cipher"], tls["next_protocol"]) == ("1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                                                      "h2")
    assert tls["server"]["hash"]["sha1"] == "7BB698386970363D2919CC5772846984FFD4A889"
    assert tls["server"]["x509"]["serial_number"] == "FD078DD48F1A2BD4D0F2BA96B6038FE"
    assert [c["subject"]["common_name"] for c in tls["detailed"]["server_certificate_chain"]] == [
        "DigiCert SHA2 Secure Server CA", "DigiCert Global Root CA"]


def test_non_established_sample1_stops_at_the_first_fin() -> None:
    [event] = events_of(corpus("tls-sample1.pcap"))
    assert event["status"] == "Error" and event["tls"]["established"] is False
    assert "server_hello" not in event["tls"]["detailed"]  # it came after the client's FIN
    assert "end" not in event["event"] and "duration" not in event["event"]


def test_tls13_sample() -> None:
    [event] = events_of(corpus("tls-version-13.pcap"), include_ja4=True, include_curve=True)
    tls = event["tls"]
    assert (tls["version"], tls["cipher"], tls["established"]) == ("1.3", "TLS_AES_128_GCM_SHA256", True)
    assert tls["curve"] == "x25519"
    assert tls["client"]["ja4"].startswith("t13d1813h2_")  # 18 ciphers, 13 extensions, h2


def tshark_ja3(pcap: Path) -> list[str]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", "tcp.port==443,tls", "-Y", "tls.handshake.type == 1",
                          "-T", "fields", "-e", "tls.handshake.ja3"], capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.split() if line]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", PCAPS)
def test_ja3_agrees_with_tshark(name: str) -> None:
    [event] = events_for(packets_of(name), TLS_ONLY)
    assert [event["tls"]["client"]["ja3"]] == tshark_ja3(corpus(name))


def tshark_ja3s(pcap: Path) -> list[str]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", "tcp.port==443,tls", "-Y", "tls.handshake.type == 2",
                          "-T", "fields", "-e", "tls.handshake.ja3s"], capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.split() if line]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", ["tls-sample2.pcap", "tls-version-13.pcap", "http2-16-ssl.pcap"])
def test_ja3s_agrees_with_tshark(name: str) -> None:
    [event] = events_for(packets_of(name), TLS_ONLY)
    assert [event["tls"]["server"]["ja3s"]] == tshark_ja3s(corpus(name))


def test_ja3s_packetbeat_variant_matches_packetbeat_golden_file() -> None:
    [event] = events_of(corpus("tls-sample2.pcap"), ja3s="packetbeat")
    assert event["tls"]["server"]["ja3s"] == "1f0e0e89ed879e47f04963f4c1ba1f17"  # Packetbeat's golden event
    [standard] = events_of(corpus("tls-sample2.pcap"))
    assert standard["tls"]["server"]["ja3s"] == "ae53107a2e47ea20c72ac44821a728bf"  # tshark's


def resegment(source: Path, target: Path, cuts: list[int]) -> None:
    """Rewrite `source` with every TCP payload cut into pieces (sizes cycling through `cuts`)."""
    with source.open("rb") as fin, target.open("wb") as fout:
        reader = dpkt.pcap.Reader(fin)
        writer = dpkt.pcap.Writer(fout, linktype=reader.datalink())
        turn = 0
        for ts, frame in reader:
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or len(tcp.data) < 2:
                writer.writepkt(frame, ts)
                continue
            payload, offset = bytes(tcp.data), 0
            while offset < len(payload):
                size = cuts[turn % len(cuts)]
                turn += 1
                piece = payload[offset:offset + size]
                part = dpkt.tcp.TCP(bytes(tcp))
                part.data = piece
                part.seq = (tcp.seq + offset) & 0xFFFFFFFF
                part.sum = 0
                if offset + size < len(payload):
                    part.flags &= ~dpkt.tcp.TH_FIN
                packet = dpkt.ip.IP(bytes(ip))
                packet.data = part
                packet.len = len(packet.pack_hdr()) + len(packet.opts) + len(bytes(part))
                packet.sum = 0
                eth.data = packet
                writer.writepkt(bytes(eth), ts)
                offset += size


def test_resegmented_pcap_through_the_cli_gives_the_same_events(tmp_path: Path) -> None:
    split = tmp_path / "tls-sample2.pcap"
    resegment(corpus("tls-sample2.pcap"), split, [1, 5, 300, 2])
    assert [strip(e) for e in events_of(split)] == [strip(e) for e in events_of(corpus("tls-sample2.pcap"))]


def strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("agent", "host", "ecs", "@metadata")}


@cache
def packets_of(name: str) -> list[Packet]:
    return read_packets(corpus(name))


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["tls-sample1.pcap", "tls-sample2.pcap", "tls-version-13.pcap", "http2-16-ssl.pcap"]),
       cuts=st.lists(st.floats(min_value=0.001, max_value=0.999), min_size=1, max_size=8))
def test_randomly_resegmented_pcap_gives_the_same_events(name: str, cuts: list[float]) -> None:
    original = events_for(packets_of(name), TLS_ONLY)
    assert len(original) == 1
    assert events_for(split_tcp(packets_of(name), cuts), TLS_ONLY) == original
