"""Live capture end to end: the agent in a namespace, real traffic over a veth, events out.

Also, one level down (tests/helpers/kernel_probe.py): records split into
PB_CHUNK pieces, and the joining of non-TCP pieces in user space.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from agent import metrics
from agent.capture.chunks import CHUNK_COUNTERS, ChunkJoiner
from agent.capture.packet import F_L3_DEVICE, F_LAST_CHUNK, Packet
from agent.protocols import registry
from tests.helpers.live import capture_events, kernel_probe, live_agent, live_available, start_tcpdump
from tests.helpers.netns import VethPair, namespace, veth_pair
from tests.helpers.replay import replay

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

ICMP = [{"type": "icmp", "enabled": True}]
HTTP_PORT = 8080


def _http_available() -> bool:
    return "http" in registry.available()


def test_icmp_v4_and_v6_transactions_live() -> None:
    def traffic(pair: VethPair) -> None:
        pair.b.run(f"ping -c 3 -i 0.2 {pair.a_ip}")
        pair.a.run(f"ping -6 -c 2 -i 0.2 {pair.b_ip6}")

    with veth_pair() as pair:
        events = capture_events(pair, traffic, ICMP)
        echo4 = [e for e in events if e["type"] == "icmp" and e["icmp"]["version"] == 4]
        echo6 = [e for e in events if e["type"] == "icmp" and e["icmp"]["version"] == 6
                 and e["icmp"]["request"]["type"] == 128]
    assert len(echo4) == 3
    for event in echo4:
        assert event["source"]["ip"] == pair.b_ip and event["destination"]["ip"] == pair.a_ip
        assert event["icmp"]["request"]["type"] == 8 and event["icmp"]["response"]["type"] == 0
        assert event["@timestamp"].endswith("Z")
        assert abs(time.time() - _epoch(event["@timestamp"])) < 120  # wall clock, not boot time
    assert len(echo6) == 2
    assert all(e["source"]["ip"] == pair.a_ip6 and e["icmp"]["response"]["type"] == 129 for e in echo6)


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.server
@pytest.mark.skipif(not _http_available(), reason="the HTTP parser is not in this build")
def test_http_transactions_live_over_veth(tmp_path: Path) -> None:
    """Requests and large responses (veth hands TC 64 KB super-packets): every transaction decoded."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "small.txt").write_text("hello\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1200)  # 300 KB: several GSO super-packets
    paths = ["/small.txt", "/big.bin", "/missing", "/small.txt?x=1"]

    with veth_pair() as pair:
        pair.b.popen(["python3", "-m", "http.server", "-b", pair.b_ip, "-d", str(root), str(HTTP_PORT)])
        pair.b.wait_port(HTTP_PORT, host=pair.b_ip)

        def traffic(pair: VethPair) -> None:
            for path in paths:
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:{HTTP_PORT}{path}"])

        dump_file = tmp_path / "http.pcap"
        protocols = [{"type": "http", "ports": [HTTP_PORT]}]
        with live_agent(pair.a, [pair.a_if], protocols, extra_args=["--dump", str(dump_file)]) as agent:
            traffic(pair)
            time.sleep(0.3)
            assert agent.stop() == 0, agent.log()[-3000:]
        events = agent.events()
    http = sorted((e for e in events if e["type"] == "http"), key=lambda e: e["@timestamp"])
    assert [e["url"]["path"] for e in http] == ["/small.txt", "/big.bin", "/missing", "/small.txt"]
    assert [e["http"]["response"]["status_code"] for e in http] == [200, 200, 404, 200]
    big = http[1]
    assert big["http"]["response"]["body"]["bytes"] == 300 * 1024
    assert big["source"]["ip"] == pair.a_ip and big["destination"]["port"] == HTTP_PORT
    assert big["destination"]["bytes"] > 300 * 1024
    # the dump (super-packets rebuilt as raw IP) replays into the same transactions
    replayed, _ = replay(dump_file, protocols)
    replayed = sorted((e for e in replayed if e["type"] == "http"), key=lambda e: e["@timestamp"])

    def same(e: dict) -> tuple:
        return (e["@timestamp"], e["url"]["full"], e["http"]["response"]["status_code"],
                e["http"]["response"].get("body", {}).get("bytes"), e["source"]["port"], e["event"]["duration"])

    assert [same(e) for e in replayed] == [same(e) for e in http]


def test_split_records_carry_the_whole_payload() -> None:
    """A kernel built with 2 KB chunks: TCP super-packets arrive as pieces with advancing seq, nothing lost."""
    payload = (bytes(range(33, 127)) * 2200)[:200_003]  # ASCII (sent as text), not a multiple of the chunk
    with veth_pair() as pair:
        pair.b.popen(["socat", "-u", f"TCP-LISTEN:{HTTP_PORT},bind={pair.b_ip},reuseaddr", "OPEN:/dev/null"])
        pair.b.wait_port(HTTP_PORT, host=pair.b_ip)
        with kernel_probe(pair.a, [pair.a_if], ports=[f"tcp:{HTTP_PORT}"], chunk=2048) as probe:
            pair.a.run(["socat", "-u", "STDIN", f"TCP:{pair.b_ip}:{HTTP_PORT}"], input=payload.decode())
            time.sleep(0.3)
            data = probe.finish()
    sent = [r for r in data["records"] if r["dport"] == HTTP_PORT]
    assert sent
    assert max(len(r["payload"]) // 2 for r in sent) == 2048
    assert any(r["payload_off"] > 0 for r in sent), "no super-packet was split"
    first = min(r["seq"] for r in sent if r["tcp_flags"] & 0x02) + 1  # data starts after the SYN
    stream = bytearray(len(payload))
    covered = 0
    for r in sent:
        chunk = bytes.fromhex(r["payload"])
        if not chunk:
            continue
        at = (r["seq"] - first) % 2**32
        stream[at:at + len(chunk)] = chunk
        covered += len(chunk)
        # FIN only on the last piece of a packet
        if not r["flags"] & F_LAST_CHUNK:
            assert not r["tcp_flags"] & 0x01
    assert bytes(stream) == payload
    assert covered >= len(payload)
    counters = data["counters"][str(data["ifindex"][pair.a_if])]
    assert counters["ring_full"] == counters["load_failed"] == counters["emit_failed"] == 0
    assert counters["emitted"] == len(data["records"])


def test_split_udp_datagram_is_joined_in_user_space() -> None:
    """On loopback (64 KB MTU) a 10 KB datagram is one skb: 5 pieces in the ring, one packet after joining."""
    datagram = bytes(range(256)) * 40
    with namespace("pbl") as ns, kernel_probe(ns, ["lo"], ports=["udp:5353"], chunk=2048) as probe:
        ns.run([sys.executable, "-c", "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.sendto(bytes(range(256))*40, ('127.0.0.1', 5353))"])
        time.sleep(0.2)
        data = probe.finish()
    pieces = [r for r in data["records"] if r["dport"] == 5353]
    assert [r["payload_off"] for r in pieces] == [0, 2048, 4096, 6144, 8192]
    assert [bool(r["flags"] & F_LAST_CHUNK) for r in pieces] == [False, False, False, False, True]
    joiner = ChunkJoiner(metrics.Counters("test.chunks", CHUNK_COUNTERS))
    whole = []
    for r in pieces:
        pkt = Packet(r["ts_ns"], r["family"], r["l4proto"], bytes.fromhex(r["src"]), bytes.fromhex(r["dst"]),
                     r["sport"], r["dport"], bytes.fromhex(r["payload"]), flags=r["flags"], ifindex=r["ifindex"],
                     direction=r["direction"])
        got = joiner.add(pkt)
        if got is not None:
            whole.append(got)
    assert len(whole) == 1 and whole[0].payload == datagram
    assert not whole[0].flags & F_L3_DEVICE


def test_dump_replays_to_the_same_transactions(tmp_path: Path) -> None:
    dump_file = tmp_path / "live.pcap"
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], ICMP, extra_args=["--dump", str(dump_file)]) as agent:
        pair.b.run(f"ping -c 4 -i 0.2 {pair.a_ip}")
        pair.a.run(f"ping -6 -c 2 -i 0.2 {pair.b_ip6}")
        time.sleep(0.3)
        assert agent.stop() == 0, agent.log()[-3000:]
        live = agent.events("icmp")
    replayed, _ = replay(dump_file, ICMP)
    replayed = [e for e in replayed if e["type"] == "icmp"]

    def key(e: dict) -> tuple:
        return (e["@timestamp"], e["source"]["ip"], e["destination"]["ip"], e["icmp"]["request"]["type"],
                e["icmp"].get("response", {}).get("type"), e.get("event", {}).get("duration"))

    assert len(live) >= 6
    assert sorted(map(key, live)) == sorted(map(key, replayed))


def test_pcap_of_the_same_traffic_matches_tcpdump_timestamps(tmp_path: Path) -> None:
    """Record timestamps are wall clock close to tcpdump's for the same packets (boot-time offset applied)."""
    pcap = tmp_path / "t.pcap"
    dump_file = tmp_path / "d.pcap"
    with veth_pair() as pair:
        dumper = start_tcpdump(pair.a, pair.a_if, pcap, "icmp")
        with live_agent(pair.a, [pair.a_if], ICMP, extra_args=["--dump", str(dump_file)]) as agent:
            pair.b.run(f"ping -c 2 -i 0.2 {pair.a_ip}")
            time.sleep(0.2)
            agent.stop()
        dumper.stop()
    from agent.capture.pcapfile import CaptureReader

    with CaptureReader(pcap) as reader:
        theirs = sorted(ts for ts, _, _ in reader)
    with CaptureReader(dump_file) as reader:
        ours = sorted(ts for ts, frame, _ in reader if frame[0] >> 4 == 4)  # tcpdump's "icmp" is IPv4 only
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a - b) < 5_000_000  # 5 ms
