"""Replay of real traffic captured inside every encapsulation (tests/pcaps/tunnels, made by
tests/helpers/make_tunnel_pcaps.py): the transactions inside, with the inner addresses and the tunnel.

Each capture holds an HTTP GET over inner IPv4, a DNS query over inner IPv6
and a line sent to port 9999 (no protocol there), as seen on the underlay.
manifest.json says what is inside; tshark, which knows every one of these
encapsulations, confirms it independently of pktbeat.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.replay import replay

PCAPS = Path(__file__).resolve().parents[1] / "pcaps" / "tunnels"
MANIFEST: dict[str, dict[str, Any]] = json.loads((PCAPS / "manifest.json").read_text())
PROTOCOLS = [{"type": "http", "ports": [80]}, {"type": "dns", "ports": [53]}]
SETTINGS = {"packetbeat.flows": {"timeout": "30s", "period": "-1s"}}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    """Every capture in one replay: each tunnel has inner addresses of its own."""
    args = [arg for name in sorted(MANIFEST) for arg in ("-I", str(PCAPS / name))]
    found, _ = replay(args[1], PROTOCOLS, SETTINGS, extra_args=args[2:])
    return found


def test_every_encapsulation_has_a_capture() -> None:
    kinds = {entry["type4"] for entry in MANIFEST.values()} | {entry["type6"] for entry in MANIFEST.values()}
    assert kinds == {"vxlan", "geneve", "gre", "erspan1", "erspan2", "ip-in-ip", "ipv6-in-ip", "pppoe"}
    assert MANIFEST["gre-key-seq.pcap"]["id"] and not MANIFEST["gre.pcap"]["id"]
    assert ":" in MANIFEST["ipip-over-ipv6.pcap"]["outer"][0]
    assert all((PCAPS / name).stat().st_size < 8192 for name in MANIFEST)


def _tunnel(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    expected: dict[str, Any] = {"type": kind, "depth": 1}
    if entry["id"]:
        expected["id"] = entry["id"]
    if entry["outer"]:
        expected["source"] = {"ip": entry["outer"][0]}
        expected["destination"] = {"ip": entry["outer"][1]}
    return expected


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_transactions_inside_the_tunnel(events: list[dict[str, Any]], name: str) -> None:
    entry = MANIFEST[name]
    http = [e for e in events if e["type"] == "http" and e["client"]["ip"] == entry["client"]]
    dns = [e for e in events if e["type"] == "dns" and e["client"]["ip"] == entry["client6"]]
    assert len(http) == 1 and len(dns) == 1, (http, dns)
    assert (http[0]["server"]["ip"], http[0]["server"]["port"], http[0]["url"]["path"]) == (
        entry["server"], 80, "/index.html")
    assert http[0]["http"]["response"]["status_code"] == 200 and http[0]["network"]["type"] == "ipv4"
    assert (dns[0]["server"]["ip"], dns[0]["dns"]["question"]["name"], dns[0]["network"]["type"]) == (
        entry["server6"], "inside.example.test", "ipv6")
    assert http[0]["pktbeat"]["tunnel"] == _tunnel(entry, entry["type4"])
    assert dns[0]["pktbeat"]["tunnel"] == _tunnel(entry, entry["type6"])
    inner = {entry["client"], entry["server"], entry["client6"], entry["server6"]}
    assert not [e for e in events if e["type"] not in ("http", "dns", "flow") and e["client"]["ip"] in inner]
    flows = [e for e in events if e["type"] == "flow" and e["source"]["ip"] == entry["client"]]
    assert {f["destination"]["port"] for f in flows} == {80, 9999}
    assert all(f["pktbeat"]["tunnel"] == _tunnel(entry, entry["type4"]) for f in flows)
    if entry["outer"]:  # the tunnel's own flow, between the outer addresses
        assert [e for e in events if e["type"] == "flow" and "pktbeat" not in e
                and {e["source"]["ip"], e["destination"]["ip"]} == set(entry["outer"])]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_tshark_sees_the_same_inside(name: str) -> None:
    entry = MANIFEST[name]
    out = subprocess.run(["tshark", "-r", str(PCAPS / name), "-Y", "http.request or dns.flags.response == 0",
                          "-T", "fields", "-e", "ip.src", "-e", "ipv6.src", "-e", "http.request.uri",
                          "-e", "dns.qry.name"], capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    # Nested IP headers are listed outer first: the last one is the inner packet's.
    requests = {(row[0].split(",")[-1], row[2]) for row in rows if row[2]}
    queries = {(row[1].split(",")[-1], row[3]) for row in rows if row[3]}
    assert requests == {(entry["client"], "/index.html")}
    assert queries == {(entry["client6"], "inside.example.test")}


@pytest.mark.parametrize("keep_link", [False, True], ids=["transactions", "flows"])
def test_the_decoder_never_raises_on_mutated_tunnel_frames(keep_link: bool) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agent.capture.decode import LINKTYPE_ETHERNET, FrameDecoder
    from agent.capture.pcapfile import CaptureReader

    frames: list[bytes] = []
    for name in sorted(MANIFEST):
        with CaptureReader(PCAPS / name) as reader:
            frames += [frame for _, frame, _ in reader][:4]

    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(frames), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
           st.integers(0, 300))
    def check(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
        frame = bytearray(base)
        for pos, value in flips:
            if pos < len(frame):
                frame[pos] = value
        FrameDecoder(LINKTYPE_ETHERNET, keep_link=keep_link).decode(bytes(frame[:cut]), 1)  # never raises

    check()


def test_a_tunnel_packet_fragmented_on_the_underlay_is_opened_once_reassembled(tmp_path: Path) -> None:
    """One HTTP exchange in GRE whose request was fragmented, one in VXLAN whose response was."""
    import struct

    import dpkt

    from tests.helpers import encap

    client, server = bytes((10, 77, 0, 1)), bytes((10, 77, 0, 2))
    outer_a, outer_b = bytes((192, 0, 2, 1)), bytes((192, 0, 2, 2))
    mac = bytes.fromhex("020000000001")

    def exchange(port: int) -> tuple[bytes, bytes]:
        request = f"GET /fragmented/{port} HTTP/1.1\r\nHost: inside\r\n\r\n".encode()
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        tcp = struct.Struct("!HHIIBBHHH")
        return (encap.ipv4(client, server, 6, tcp.pack(port, 80, 1, 1, 0x50, 0x18, 512, 0, 0) + request),
                encap.ipv4(server, client, 6, tcp.pack(80, port, 1, 1 + len(request), 0x50, 0x18, 512, 0, 0)
                           + response))

    def eth(packet: bytes) -> bytes:
        return encap.ethernet(mac, mac, encap.ETH_P_IP, packet)

    def gre(src: bytes, dst: bytes, packet: bytes) -> bytes:
        return encap.ipv4(src, dst, 47, encap.gre(encap.ETH_P_IP, packet, key=9))

    def vxlan(src: bytes, dst: bytes, packet: bytes) -> bytes:
        return encap.ipv4(src, dst, 17, encap.udp(src, dst, 50000, 4789, encap.vxlan(eth(packet), 9)))

    request, response = exchange(40001)
    frames = [eth(piece) for piece in encap.ipv4_fragments(gre(outer_a, outer_b, request), 24)]
    frames.append(eth(gre(outer_b, outer_a, response)))
    request, response = exchange(40002)
    frames.append(eth(vxlan(outer_a, outer_b, request)))
    frames += [eth(piece) for piece in encap.ipv4_fragments(vxlan(outer_b, outer_a, response), 40)]
    pcap = tmp_path / "fragmented.pcap"
    with pcap.open("wb") as out:
        writer = dpkt.pcap.Writer(out)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + i / 1000)
    found, _ = replay(pcap, PROTOCOLS)
    http = sorted((e for e in found if e["type"] == "http"), key=lambda e: e["client"]["port"])
    assert [(e["url"]["path"], e["http"]["response"]["status_code"], e["pktbeat"]["tunnel"]["type"],
             e["pktbeat"]["tunnel"]["id"]) for e in http] == [
        ("/fragmented/40001", 200, "gre", 9), ("/fragmented/40002", 200, "vxlan", 9)]
    assert all((e["client"]["ip"], e["server"]["ip"]) == ("10.77.0.1", "10.77.0.2") for e in http)
