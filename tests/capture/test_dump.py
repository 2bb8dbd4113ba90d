"""--dump files: packets rebuilt as raw IP decode back into the same records (the file-replay decoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture import dump
from agent.capture.decode import LINKTYPE_RAW, FrameDecoder
from agent.capture.packet import (
    F_FRAGMENT,
    F_LAST_CHUNK,
    F_MORE_FRAGS,
    F_TRUNCATED,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Packet,
)
from agent.capture.pcapfile import CaptureReader

V4A, V4B = bytes([10, 1, 2, 3]), bytes([192, 168, 7, 9])
V6A, V6B = bytes.fromhex("fd000000000000000000000000000001"), bytes.fromhex("fd000000000000000000000000000002")

PACKETS = [
    Packet(1_700_000_000_123_456_789, 4, IPPROTO_TCP, V4A, V4B, 40000, 80, b"GET / HTTP/1.1\r\n\r\n", seq=1000,
           ack=2000, tcp_flags=0x18, window=501),
    Packet(1_700_000_000_223_456_789, 6, IPPROTO_TCP, V6A, V6B, 443, 50000, b"", seq=5, ack=6, tcp_flags=0x11,
           window=9),
    Packet(1_700_000_001_000_000_000, 4, IPPROTO_UDP, V4A, V4B, 5353, 53, b"\x12\x34" + b"\0" * 10),
    Packet(1_700_000_001_000_000_001, 6, IPPROTO_UDP, V6A, V6B, 53, 5353, b"x" * 300),
    Packet(1_700_000_002_000_000_000, 4, IPPROTO_ICMP, V4A, V4B, 0, 0, bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"ping"),
    Packet(1_700_000_002_000_000_000, 6, IPPROTO_ICMPV6, V6A, V6B, 0, 0, bytes([129, 0, 0, 0, 0, 1, 0, 2])),
    # cut at snaplen: the IP length says what was on the wire
    Packet(1_700_000_003_000_000_000, 4, IPPROTO_TCP, V4A, V4B, 40000, 80, b"A" * 100, seq=77, ack=1,
           tcp_flags=0x10, flags=F_LAST_CHUNK | F_TRUNCATED, missing=900),
    Packet(1_700_000_003_000_000_001, 4, IPPROTO_UDP, V4A, V4B, 1, 53, b"B" * 50, flags=F_LAST_CHUNK | F_TRUNCATED,
           missing=10),
]
FRAGMENTS = [
    Packet(1_700_000_004_000_000_000, 4, IPPROTO_UDP, V4A, V4B, 0, 0, b"\x00\x35\x13\x88\x00\x18\x00\x00" + b"C" * 8,
           flags=F_LAST_CHUNK | F_FRAGMENT | F_MORE_FRAGS, frag_id=0x1234, frag_off=0),
    Packet(1_700_000_004_000_000_001, 4, IPPROTO_UDP, V4A, V4B, 0, 0, b"D" * 8,
           flags=F_LAST_CHUNK | F_FRAGMENT, frag_id=0x1234, frag_off=16),
    Packet(1_700_000_004_000_000_002, 6, IPPROTO_UDP, V6A, V6B, 0, 0, b"E" * 16,
           flags=F_LAST_CHUNK | F_FRAGMENT | F_MORE_FRAGS, frag_id=0xABCDEF01, frag_off=1448),
]


def _write(path: Path, packets: list[Packet]) -> None:
    dump.create(str(path))
    writer = dump.DumpWriter(str(path))
    for pkt in packets:
        writer.write(pkt)
    writer.close()


def _read(path: Path) -> list[Packet | None]:
    out = []
    with CaptureReader(path) as reader:
        assert reader.info.linktype == LINKTYPE_RAW
        decoder = FrameDecoder(reader.info.linktype)
        for ts_ns, frame, wire_len in reader:
            out.append(decoder.decode(frame, ts_ns, wire_len))
    return out


FIELDS = ("ts_ns", "family", "l4proto", "src", "dst", "sport", "dport", "payload", "seq", "ack", "tcp_flags",
          "window", "missing", "frag_id", "frag_off")


@pytest.mark.parametrize("index", range(len(PACKETS)))
def test_packet_survives_the_dump(tmp_path: Path, index: int) -> None:
    pkt = PACKETS[index]
    path = tmp_path / "d.pcap"
    _write(path, [pkt])
    (back,) = _read(path)
    assert back is not None
    for name in FIELDS:
        assert getattr(back, name) == getattr(pkt, name), name
    assert bool(back.flags & F_TRUNCATED) == bool(pkt.flags & F_TRUNCATED)


def test_fragments_survive_the_dump(tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    _write(path, FRAGMENTS)
    back = _read(path)
    for pkt, got in zip(FRAGMENTS, back, strict=True):
        assert got is not None
        assert got.flags & (F_FRAGMENT | F_MORE_FRAGS) == pkt.flags & (F_FRAGMENT | F_MORE_FRAGS)
        assert (got.frag_id, got.frag_off, got.payload, got.src, got.dst, got.l4proto) == \
            (pkt.frag_id, pkt.frag_off, pkt.payload, pkt.src, pkt.dst, pkt.l4proto)


def test_ipv4_header_checksum_is_valid() -> None:
    frame, orig = dump.raw_ip_frame(PACKETS[0])
    assert orig == len(frame)
    assert dump._checksum(frame[:20]) == 0


def test_several_writers_append_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "m.pcap"
    dump.create(str(path))
    writers = [dump.DumpWriter(str(path)) for _ in range(3)]
    for i in range(300):
        writers[i % 3].write(PACKETS[i % len(PACKETS)])
        if i % 7 == 0:
            writers[(i + 1) % 3].flush()
    for writer in writers:
        writer.close()
    back = _read(path)
    assert len(back) == 300 and all(p is not None for p in back)
