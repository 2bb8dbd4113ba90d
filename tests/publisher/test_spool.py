"""The disk spool: order, acknowledgement, restart, damaged tails, the size cap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.publisher.spool import Spool, spool_pending
from agent.publisher.types import EncodedEvent


def event(i: int, size: int = 40) -> EncodedEvent:
    return EncodedEvent(b'{"n":%d,"pad":"%s"}' % (i, b"x" * size), f"id-{i}", f"idx-{i % 3}" if i % 2 else None,
                        "icmp")


def drain(spool: Spool, batch: int = 7) -> list[EncodedEvent]:
    out: list[EncodedEvent] = []
    while True:
        events, pos = spool.read(batch)
        if not events:
            return out
        out.extend(events)
        spool.ack(pos, len(events))


def test_events_come_back_in_order_with_all_their_parts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, segment_size=4096)
    sent = [event(i) for i in range(500)]
    for e in sent:
        assert spool.append(e)
    assert spool.pending == 500
    got = drain(spool)
    assert got == sent
    assert spool.pending == 0
    assert list(tmp_path.glob("*.seg")) == []  # drained segments are deleted
    spool.close()


def test_restart_resends_exactly_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, segment_size=4096, write_ahead=1)
    for i in range(300):
        spool.append(event(i))
    events, pos = spool.read(120)
    spool.ack(pos, len(events))
    spool.read(50)  # read, sent, never acknowledged: must come back
    spool.flush()
    del spool  # no close(): as after SIGKILL
    assert spool_pending(tmp_path) == 180
    again = Spool(tmp_path, 10_000_000, segment_size=4096)
    assert again.pending == 180
    assert [e.event_id for e in drain(again)] == [f"id-{i}" for i in range(120, 300)]


def test_damaged_tail_is_cut_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, write_ahead=1)
    for i in range(10):
        spool.append(event(i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last record cut short, as a crash mid-write leaves it
    again = Spool(tmp_path, 10_000_000)
    assert again.pending == 9
    assert again.counters["corrupt_records"] >= 1
    assert [e.event_id for e in drain(again)] == [f"id-{i}" for i in range(9)]


def test_full_spool_refuses_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 20_000, segment_size=4096)
    accepted = sum(spool.append(event(i)) for i in range(1000))
    assert 0 < accepted < 1000
    assert spool.size <= 20_000
    assert spool.counters["full_drops"] >= 1000 - accepted
    drain(spool)
    assert spool.append(event(5000))  # room again once acknowledged


def test_acknowledged_segments_free_their_space(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000, segment_size=4096, write_ahead=1)
    for i in range(400):
        spool.append(event(i))
    before = len(list(tmp_path.glob("*.seg")))
    events, pos = spool.read(300)
    spool.ack(pos, len(events))
    after = len(list(tmp_path.glob("*.seg")))
    assert before > 3 and after < before
    assert spool.pending == 100


def test_unwritable_directory_is_a_typed_error(tmp_path: Path) -> None:
    from agent.publisher.spool import SpoolError

    target = tmp_path / "file"
    target.write_text("not a directory")
    with pytest.raises(SpoolError):
        Spool(target / "spool", 1000)


def test_garbage_ack_file_means_resend_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000, write_ahead=1)
    for i in range(5):
        spool.append(event(i))
    spool.close()
    (tmp_path / "ack.json").write_text("{not json")
    again = Spool(tmp_path, 1_000_000)
    assert again.pending == 5
    assert os.path.exists(tmp_path / "ack.json")
