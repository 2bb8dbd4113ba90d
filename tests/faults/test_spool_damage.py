"""Issue 15, defect 5 and acceptance c: spool damage costs only the records that hold it, and says so.

Byte flips at every kind of place (segment header, record magic, length, CRC,
payload), cut and emptied segments, and every kind of bad ack.json; then a
restart through the real CLI delivers what survived.  Also defect 6: the spool
is private (0700 directory, 0600 files).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import metrics
from agent.publisher import spoolformat as fmt
from agent.publisher.spool import Spool, spool_pending
from agent.publisher.types import EncodedEvent
from tests.helpers.replay import PKTBEAT

SEGMENT = 8192


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    metrics.reset_for_tests()
    yield


def event(i: int) -> EncodedEvent:
    return EncodedEvent(b'{"type":"icmp","n":%d,"pad":"%s"}' % (i, b"p" * (40 + i % 50)), f"id-{i}",
                        f"idx-{i % 3}" if i % 2 else None, "icmp")


def build(directory: Path, count: int) -> None:
    spool = Spool(directory, 10_000_000, segment_size=SEGMENT, write_ahead=16)
    for i in range(count):
        assert spool.append(event(i))
    spool.close()


def drain(spool: Spool) -> list[str]:
    out: list[str] = []
    for _ in range(100_000):
        events, pos = spool.read(13)
        if not events:
            break
        out += [e.event_id for e in events]
        spool.ack(pos, len(events))
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def layout(directory: Path) -> list[tuple[Path, int, int, str]]:
    """Every record of an undamaged spool: (segment, first byte, end, event id)."""
    out = []
    for path in segments(directory):
        data = path.read_bytes()
        at = len(fmt.SEGMENT_HEADER)
        found = fmt.split(data[at:], 1 << 30)
        for payload in found.payloads:
            end = at + fmt.RECORD_OVERHEAD + len(payload)
            out.append((path, at, end, fmt.decode(payload).event_id))
            at = end
        assert at == len(data)
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_one_flipped_byte_loses_exactly_the_record_holding_it(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    pristine = tmp_path / "pristine"
    build(pristine, 150)
    records = layout(pristine)
    all_ids = [r[3] for r in records]
    assert len(segments(pristine)) >= 3
    # Every 157th byte of every segment, plus each part of one record's framing and each header byte.
    probes = [(path, off) for path in segments(pristine) for off in range(0, path.stat().st_size, 157)]
    seg, start, _, _ = records[len(records) // 2]
    probes += [(seg, start + k) for k in range(fmt.RECORD_OVERHEAD + 2)]
    probes += [(segments(pristine)[0], k) for k in range(len(fmt.SEGMENT_HEADER))]
    caplog.set_level(logging.WARNING, "pktbeat.publisher.spool")
    for path, offset in probes:
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        flip(work / path.name, offset)
        holder = [r[3] for r in records if r[0].name == path.name and r[1] <= offset < r[2]]
        metrics.reset_for_tests()
        caplog.clear()
        spool = Spool(work, 10_000_000, segment_size=SEGMENT)
        expected = [i for i in all_ids if i not in holder]
        assert spool.pending == len(expected), (path.name, offset)
        assert drain(spool) == expected, (path.name, offset)
        assert spool.counters["corrupt_records"] == len(holder), (path.name, offset)
        if holder:
            assert any("damaged" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)
        spool.close()


def test_a_cut_segment_loses_only_its_cut_record(tmp_path: Path) -> None:
    build(tmp_path, 200)
    records = layout(tmp_path)
    last = segments(tmp_path)[-1]
    cut_record = [r for r in records if r[0] == last][-3]
    data = last.read_bytes()
    # Cut mid-record, then append the bytes that followed: as if a stretch of the disk vanished.
    last.write_bytes(data[:cut_record[1] + 5] + data[cut_record[2]:])
    spool = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    assert drain(spool) == [r[3] for r in records if r[3] != cut_record[3]]
    assert spool.counters["corrupt_records"] == 1


def test_a_torn_tail_loses_the_torn_record_only(tmp_path: Path) -> None:
    build(tmp_path, 50)
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes()[:-7])  # a crash in the middle of the last write
    spool = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    assert drain(spool) == [f"id-{i}" for i in range(49)]
    assert spool.counters["corrupt_records"] == 1


@pytest.mark.parametrize("which", ["middle", "last"])
def test_an_emptied_segment_is_counted_and_logged(tmp_path: Path, which: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path, 300)
    records = layout(tmp_path)
    target = segments(tmp_path)[1 if which == "middle" else -1]
    lost = [r[3] for r in records if r[0] == target]
    target.write_bytes(b"")
    caplog.set_level(logging.WARNING, "pktbeat.publisher.spool")
    spool = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    assert drain(spool) == [r[3] for r in records if r[3] not in lost]
    if which == "middle":  # the next segment's name says how many records it held
        assert spool.counters["corrupt_records"] == len(lost)
        assert f"its {len(lost)} event(s) are lost" in caplog.text
    else:
        assert target.name in caplog.text or spool.counters["corrupt_records"] == 0


def _ack_cases(directory: Path) -> dict[str, dict[str, int] | str]:
    segs = segments(directory)
    first, last = int(segs[0].stem), int(segs[-1].stem)
    return {
        "mid-record": {"segment": first, "offset": len(fmt.SEGMENT_HEADER) + 5},
        "past the end": {"segment": last, "offset": 10**9},
        "future segment": {"segment": last + 10**6, "offset": len(fmt.SEGMENT_HEADER)},
        "between segments": {"segment": first + 1, "offset": len(fmt.SEGMENT_HEADER)},
        "garbage": "{not json",
        "wrong types": json.dumps({"segment": "x", "offset": []}),
    }


@pytest.mark.parametrize("case", ["mid-record", "past the end", "future segment", "between segments", "garbage",
                                  "wrong types"])
def test_a_bad_ack_position_resends_from_what_is_certainly_acknowledged(
        tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path, 300)
    spool = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    events, pos = spool.read(140)
    spool.ack(pos, len(events))  # the first segment is gone: the ack is really past 140 events
    spool.close()
    remaining = [f"id-{i}" for i in range(300)]
    oldest = int(segments(tmp_path)[0].stem)
    remaining = remaining[oldest:]  # the oldest segment left starts at its name's sequence number
    value = _ack_cases(tmp_path)[case]
    (tmp_path / "ack.json").write_text(value if isinstance(value, str) else json.dumps(value))
    caplog.set_level(logging.WARNING, "pktbeat.publisher.spool")
    again = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    assert again.pending == len(remaining)
    assert oldest > 0 and drain(again) == remaining  # resent from the oldest segment: duplicates, no loss
    assert "resending" in caplog.text
    assert again.counters["corrupt_records"] == 0


def test_a_good_ack_position_is_kept(tmp_path: Path) -> None:
    build(tmp_path, 300)
    spool = Spool(tmp_path, 10_000_000, segment_size=SEGMENT)
    events, pos = spool.read(123)
    spool.ack(pos, len(events))
    spool.close()
    assert spool_pending(tmp_path) == 177
    assert drain(Spool(tmp_path, 10_000_000, segment_size=SEGMENT)) == [f"id-{i}" for i in range(123, 300)]


def test_legacy_segments_from_the_previous_format_are_still_read(tmp_path: Path) -> None:
    # Format 1: u32 length, u32 crc32, payload; no header, no magic.
    records = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p
                       for p in (fmt.encode(event(i))[fmt.RECORD_OVERHEAD:] for i in range(20)))
    (tmp_path / f"{0:016d}.seg").write_bytes(records)
    spool = Spool(tmp_path, 10_000_000)
    assert drain(spool) == [f"id-{i}" for i in range(20)]


def test_the_spool_is_private_even_when_it_was_not(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    build(directory, 100)
    os.chmod(directory, 0o755)
    for path in directory.iterdir():
        os.chmod(path, 0o644)
    spool = Spool(directory, 10_000_000, segment_size=SEGMENT)
    spool.append(event(1000))
    events, pos = spool.read(5)
    spool.ack(pos, len(events))
    spool.close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert any(p.name == "ack.json" for p in files) and any(p.suffix == ".seg" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    fresh = tmp_path / "new" / "deeper"
    Spool(fresh, 1_000_000).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_a_damaged_spool_is_delivered_by_the_next_run(tmp_path: Path) -> None:
    """Through the CLI: a replay with queue.disk on a spool with a flipped byte and a bad ack.json."""
    queue = tmp_path / "queue"
    build(queue, 300)
    records = layout(queue)
    victim = records[150]
    flip(victim[0], (victim[1] + victim[2]) // 2)
    (queue / "ack.json").write_text(json.dumps({"segment": 0, "offset": 7}))
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    out = tmp_path / "out"
    config = tmp_path / "pktbeat.yml"
    config.write_text(f"packetbeat.protocols: [{{type: icmp, enabled: true}}]\n"
                      f"queue.disk: {{path: {queue}}}\noutput.file: {{path: {out}}}\npath.data: {tmp_path / 'data'}\n")
    proc = subprocess.run([PKTBEAT, "run", "-e", "-t", "-I", str(empty), "-c", str(config)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    lines = [json.loads(line) for path in out.iterdir() for line in path.read_text().splitlines()]
    delivered = sorted(e["n"] for e in lines)
    assert delivered == [i for i in range(300) if i != 150]
    assert "1 damaged or missing event(s) skipped" in log
    assert "ack.json points at segment 0, offset 7" in log
    assert spool_pending(queue) == 0
