"""Every supported link type decodes to the same packet: Ethernet, SLL, SLL2, NULL, LOOP, raw IP."""

from __future__ import annotations

import struct

import pytest

from agent.capture import decode as d
from agent.capture.decode import FrameDecoder
from agent.capture.packet import IPPROTO_TCP

IP = (bytes.fromhex("4500002c000140004006") + b"\x00\x00" + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2])
      + struct.pack("!HHIIBBHHH", 40000, 80, 1000, 0, 0x50, 0x18, 512, 0, 0) + b"GET ")
IP = IP[:2] + struct.pack("!H", len(IP)) + IP[4:]

FRAMES = {
    d.LINKTYPE_ETHERNET: bytes(12) + b"\x08\x00" + IP,
    d.LINKTYPE_LINUX_SLL: struct.pack("!HHH8sH", 0, 1, 6, bytes(8), 0x0800) + IP,
    d.LINKTYPE_LINUX_SLL2: struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8)) + IP,
    d.LINKTYPE_NULL: struct.pack("<I", 2) + IP,
    d.LINKTYPE_LOOP: struct.pack("!I", 2) + IP,
    d.LINKTYPE_RAW: IP,
    d.LINKTYPE_IPV4: IP,
}


@pytest.mark.parametrize("linktype", sorted(FRAMES), ids=lambda lt: d.SUPPORTED_LINKTYPES[lt])
def test_link_types(linktype: int) -> None:
    pkt = FrameDecoder(linktype).decode(FRAMES[linktype], 1)
    assert pkt is not None
    assert (pkt.l4proto, pkt.sport, pkt.dport, pkt.seq, pkt.payload) == (IPPROTO_TCP, 40000, 80, 1000, b"GET ")
    assert pkt.src == bytes([10, 0, 0, 1]) and pkt.dst == bytes([10, 0, 0, 2])


def test_unsupported_link_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported link type"):
        FrameDecoder(147)


@pytest.mark.parametrize("frame", [b"", b"\x00" * 13, bytes(12) + b"\x08\x00" + b"\x45",
                                   bytes(12) + b"\x08\x00" + IP[:30], bytes(12) + b"\x86\xdd" + bytes(10)])
def test_short_and_malformed_frames_are_counted_not_raised(frame: bytes) -> None:
    decoder = FrameDecoder(d.LINKTYPE_ETHERNET)
    assert decoder.decode(frame, 1) is None
    assert decoder.stats["malformed"] + decoder.stats["not_ip"] >= 1


@pytest.mark.parametrize("linktype", sorted(FRAMES), ids=lambda lt: d.SUPPORTED_LINKTYPES[lt])
def test_decoder_never_raises_on_mutated_frames(linktype: int) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    base = FRAMES[linktype]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=8),
           st.integers(0, len(base)), st.binary(max_size=64))
    def check(flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
        frame = bytearray(base)
        for pos, value in flips:
            frame[pos] = value
        decoder = FrameDecoder(linktype, keep_link=True)
        decoder.decode(bytes(frame[:cut]) + tail, 1)  # a Packet or None, never an exception

    check()


def _ipv4_frame(proto: int, l4: bytes, total_len: int) -> bytes:
    import struct

    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total_len, 1, 0, 64, proto, 0, bytes([10, 0, 0, 1]),
                         bytes([10, 0, 0, 2]))
    return b"\x00" * 12 + b"\x08\x00" + header + l4


def test_a_datagram_that_ends_inside_its_transport_header_has_an_empty_payload() -> None:
    """The capture or the IP length ends before the payload starts: empty, never an exception.

    The mypyc build raised SystemError ("Negative size passed to PyBytes_FromStringAndSize")
    on a slice whose stop was before its start (an IP length ending inside the UDP header),
    where Python gives b"".
    """
    import struct

    from agent.capture.decode import LINKTYPE_ETHERNET, FrameDecoder

    decoder = FrameDecoder(LINKTYPE_ETHERNET)
    before = dict(decoder.stats)  # the counters are the process's, shared with other decoders
    ip_cut_udp = _ipv4_frame(17, struct.pack("!HHHH", 1000, 53, 8, 0) + b"abcd", 26)  # IP length: 6 bytes of UDP
    capture_cut_udp = _ipv4_frame(17, struct.pack("!HHH", 1000, 53, 40), 48)
    capture_cut_tcp = _ipv4_frame(6, struct.pack("!HHIIBBH", 1000, 80, 1, 2, 0xF0, 0x18, 100) + b"\x00" * 6, 100)
    cases = ((ip_cut_udp, 0), (capture_cut_udp, 20), (capture_cut_tcp, 20))
    for frame, missing in cases:
        packet = decoder.decode(frame, 1)
        assert packet is not None and packet.payload == b"" and packet.missing == missing
    assert decoder.stats["truncated"] - before["truncated"] == 2
    assert decoder.stats["malformed"] == before["malformed"]
