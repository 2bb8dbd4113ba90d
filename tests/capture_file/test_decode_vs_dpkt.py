"""The fast frame decoder and the dpkt reference agree on every corpus capture."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.capture import decode_dpkt
from agent.capture.decode import FrameDecoder
from agent.capture.pcapfile import CaptureReader
from tests.helpers.replay import CORPUS

PCAPS = sorted(CORPUS.glob("*.pcap"))
FIELDS = ("family", "l4proto", "src", "dst", "sport", "dport", "seq", "ack", "tcp_flags", "window", "payload",
          "frag_id", "frag_off", "vlan")


def test_corpus_present() -> None:
    assert len(PCAPS) >= 100


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
            compared += 1
    assert compared > 0 or pcap.name == "flowhash_arp.pcap"
