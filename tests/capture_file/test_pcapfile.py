"""Capture files: formats, byte orders, precision, and hostile or truncated input."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import dpkt
import pytest

from agent.capture.pcapfile import MAX_RECORD_BYTES, CaptureFileError, CaptureReader
from tests.helpers.replay import CORPUS, PKTBEAT, write_config

FRAME = bytes.fromhex("ffffffffffff0011223344550800") + b"\x45" + bytes(19)


def _pcap(path: Path, records: list[tuple[int, int, bytes]], endian: str = "<", nano: bool = False,
          linktype: int = 1, caplen_override: int | None = None) -> Path:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, sub, frame in records:
        caplen = len(frame) if caplen_override is None else caplen_override
        out += struct.pack(endian + "IIII", sec, sub, caplen, len(frame)) + frame
    path.write_bytes(out)
    return path


def test_little_and_big_endian_micro_and_nano(tmp_path: Path) -> None:
    for endian in "<>":
        for nano in (False, True):
            path = _pcap(tmp_path / f"x{endian == '<'}{nano}.pcap", [(10, 5, FRAME)], endian, nano)
            with CaptureReader(path) as reader:
                [(ts, frame, wire)] = list(reader)
            assert frame == FRAME and wire == len(FRAME)
            assert ts == 10 * 10**9 + (5 if nano else 5000)


def test_pcapng_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    with open(path, "wb") as handle:
        writer = dpkt.pcapng.Writer(handle)
        writer.writepkt(FRAME, ts=1700000000.5)
        writer.writepkt(FRAME, ts=1700000001.25)
    with CaptureReader(path) as reader:
        assert reader.info.format == "pcapng" and reader.info.linktype == 1
        stamps = [ts for ts, _, _ in reader]
    assert stamps == [1700000000_500000000, 1700000001_250000000]


def test_truncated_record_is_a_typed_error_after_the_good_packets(tmp_path: Path) -> None:
    path = _pcap(tmp_path / "t.pcap", [(1, 0, FRAME), (2, 0, FRAME)])
    path.write_bytes(path.read_bytes()[:-10])
    got = []
    with CaptureReader(path) as reader, pytest.raises(CaptureFileError, match="truncated record"):
        for item in reader:
            got.append(item)
    assert len(got) == 1


def test_truncated_header_and_garbage(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    with pytest.raises(CaptureFileError, match="header is truncated"):
        CaptureReader(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"GET / HTTP/1.1\r\n" * 4)
    with pytest.raises(CaptureFileError, match="not a pcap"):
        CaptureReader(tmp_path / "junk")


def test_hostile_record_length_is_refused_without_allocating(tmp_path: Path) -> None:
    path = _pcap(tmp_path / "h.pcap", [(1, 0, FRAME)], caplen_override=0xFFFFFFF0)
    with CaptureReader(path) as reader, pytest.raises(CaptureFileError, match=f"exceeds {MAX_RECORD_BYTES}"):
        list(reader)


def test_cli_reports_a_truncated_file_and_keeps_the_events_before_it(tmp_path: Path) -> None:
    source = (CORPUS / "icmp4_ping.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(source[:-20])
    config = write_config(tmp_path, [{"type": "icmp", "enabled": True}])
    proc = subprocess.run([PKTBEAT, "run", "-t", "-e", "-I", str(cut), "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "truncated record" in proc.stderr


def test_cli_refuses_a_non_capture_file_with_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pcap"
    bogus.write_text("not a capture")
    config = write_config(tmp_path, [{"type": "icmp", "enabled": True}])
    proc = subprocess.run([PKTBEAT, "run", "-t", "-e", "-I", str(bogus), "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not a pcap or pcapng file" in proc.stderr
