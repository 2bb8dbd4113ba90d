"""IPv4/IPv6 fragment reassembly: any order, duplicates, and every bound with its counter."""

from __future__ import annotations

import struct

import pytest

from agent import metrics
from agent.capture.packet import F_FRAGMENT, F_LAST_CHUNK, F_MORE_FRAGS, IPPROTO_UDP, Packet
from agent.transport.ipfrag import FragmentLimits, FragmentReassembler

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def udp_datagram(payload: bytes, sport: int = 53, dport: int = 40000) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def fragments(data: bytes, size: int, frag_id: int = 7, ts: int = 0) -> list[Packet]:
    out = []
    for off in range(0, len(data), size):
        more = off + size < len(data)
        out.append(Packet(ts, 4, IPPROTO_UDP, SRC, DST, 0, 0, data[off:off + size],
                          flags=F_FRAGMENT | F_LAST_CHUNK | (F_MORE_FRAGS if more else 0), frag_id=frag_id,
                          frag_off=off, wire_len=size + 34))
    return out


@pytest.fixture
def reassembler() -> FragmentReassembler:
    metrics.reset_for_tests()
    return FragmentReassembler(metrics.register("ip_fragments"))


@pytest.mark.parametrize("order", ["forward", "reverse", "middle_first"])
def test_reassembles_in_any_order(reassembler: FragmentReassembler, order: str) -> None:
    payload = bytes(range(256)) * 13
    frags = fragments(udp_datagram(payload), 1480)
    if order == "reverse":
        frags.reverse()
    elif order == "middle_first":
        frags = frags[1:2] + frags[:1] + frags[2:]
    results = [reassembler.add(f) for f in frags]
    whole = [r for r in results if r is not None]
    assert len(whole) == 1 and results[-1] is whole[0]
    pkt = whole[0]
    assert (pkt.sport, pkt.dport, pkt.payload) == (53, 40000, payload)
    assert pkt.wire_len == sum(f.wire_len for f in frags)
    assert len(reassembler) == 0


def test_duplicate_fragment_does_not_corrupt(reassembler: FragmentReassembler) -> None:
    frags = fragments(udp_datagram(b"x" * 2992), 1000)
    assert len(frags) == 3
    assert reassembler.add(frags[0]) is None
    assert reassembler.add(frags[0]) is None
    assert reassembler.add(frags[1]) is None
    pkt = reassembler.add(frags[2])
    assert pkt is not None and pkt.payload == b"x" * 2992
    assert reassembler.counters["overlapping"] == 1


def test_expiry_after_the_hold_time(reassembler: FragmentReassembler) -> None:
    frags = fragments(udp_datagram(b"y" * 3000), 1000, ts=0)
    reassembler.add(frags[0])
    reassembler.expire(2_000_000_000)
    assert len(reassembler) == 0
    assert reassembler.counters["expired"] == 1
    late = frags[1]
    late.ts_ns = 2_000_000_000
    assert reassembler.add(late) is None  # starts a new, incomplete set


def test_limits_fragments_sets_and_bytes() -> None:
    metrics.reset_for_tests()
    r = FragmentReassembler(metrics.register("ip_fragments"), FragmentLimits(max_fragments=4, max_sets=2,
                                                                              max_bytes=5000))
    for frag in fragments(udp_datagram(b"z" * 4000), 500)[:6]:
        r.add(frag)
    assert r.counters["too_many_fragments"] == 1
    big = fragments(udp_datagram(b"q" * 9000), 1480, frag_id=9)
    for frag in big:
        r.add(frag)
    assert r.counters["too_large"] >= 1
    for i in range(5):
        r.add(fragments(udp_datagram(b"w" * 2000), 1000, frag_id=100 + i)[0])
    assert len(r) <= 2 and r.counters["sets_evicted"] >= 3


def test_dispatcher_reassembles_the_corpus_edns0_response() -> None:
    """Packetbeat's decoder test: a 3-fragment EDNS0 response (3398 bytes of DNS) becomes one datagram."""
    from agent.capture.decode import FrameDecoder
    from agent.capture.pcapfile import CaptureReader
    from agent.transport.dispatcher import Dispatcher
    from agent.transport.session import DatagramBinding
    from tests.helpers.replay import corpus

    seen: list[tuple[int, int]] = []

    class Handler:
        def datagram(self, direction: object, conn: object, data: bytes, ts_ns: int) -> None:
            seen.append((len(data), ts_ns))

        def tick(self, now_ns: int) -> None:
            pass

        def pending(self) -> int:
            return 0

    metrics.reset_for_tests()
    dispatcher = Dispatcher({}, {53: DatagramBinding("dns", Handler())})
    for reverse in (False, True):
        seen.clear()
        with CaptureReader(corpus("udp_edns0_resp.pcap")) as reader:
            decoder = FrameDecoder(reader.info.linktype)
            packets = [decoder.decode(frame, ts, wire) for ts, frame, wire in reader]
        for pkt in reversed(packets) if reverse else packets:
            assert pkt is not None
            dispatcher.handle(pkt)
        assert [n for n, _ in seen] == [3398]
