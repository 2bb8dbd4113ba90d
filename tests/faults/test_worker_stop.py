"""At stop a capture worker empties its ring within its budget, and what it cannot is counted, never lost silently.

A worker reads a ring laid out like the kernel's (FakeRing) until it is empty
or its share of packetbeat.shutdown_timeout runs out; bytes left in the ring
then are `capture.stop_unread_bytes`, sent to the parent with its last stats.
A worker that does not say goodbye in time is killed and counted
(`capture.workers.killed`) with what its ring held at its last report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.record import encode_record
from agent.config.load import load
from agent.events.builder import AgentIdentity
from agent.runtime import channel
from agent.runtime.worker import READ_BATCH, CaptureWorker, WorkerHandle, WorkerPool, WorkerSetup, stop_budget
from tests.capture.test_capture_units import FakeRing, _pkt

RING_BYTES = 1 << 20
PACKETS = READ_BATCH + 900


def _setup(tmp_path: Path, shutdown_timeout: str) -> WorkerSetup:
    config_file = tmp_path / "pb.yml"
    config_file.write_text(f"packetbeat.shutdown_timeout: {shutdown_timeout}\npath.data: {tmp_path}/data\n")
    return WorkerSetup(load(str(config_file)), AgentIdentity.create("t", "id"), RING_BYTES, None)


@pytest.fixture
def full_ring(tmp_path: Path) -> Iterator[FakeRing]:
    ring = FakeRing(tmp_path / "ring", RING_BYTES)
    sync = ring._sync
    ring._sync = lambda: None  # type: ignore[method-assign]  # one write of the whole ring, not one per record
    for i in range(PACKETS):
        ring.put(encode_record(_pkt(i, 40)))
    sync()
    yield ring
    os.close(ring.fd)


def _stop(worker: CaptureWorker, chan_r: int) -> list[tuple[int, bytes]]:
    worker._finish(0)
    reader = channel.ChannelReader(chan_r)
    return reader.read(64 << 20)


def _worker(setup: WorkerSetup, ring: FakeRing) -> tuple[CaptureWorker, int]:
    chan_r, chan_w = os.pipe()
    channel.enlarge_pipe(chan_w)
    os.set_blocking(chan_r, False)
    ctl_r, _ctl_w = os.pipe()
    return CaptureWorker(setup, ring.fd, chan_w, ctl_r), chan_r


def test_stop_budget_is_half_the_shutdown_timeout_and_at_least_the_minimum() -> None:
    assert stop_budget(0) == 1.2 and stop_budget(1) == 1.2 and stop_budget(30) == 15


def test_a_worker_drains_its_whole_ring_within_its_budget(tmp_path: Path, full_ring: FakeRing) -> None:
    worker, chan_r = _worker(_setup(tmp_path, "10s"), full_ring)
    messages = _stop(worker, chan_r)
    stats = json.loads([p for k, p in messages if k == channel.STATS][-1])  # counts since the worker started
    assert worker.reader.pending_bytes() == 0
    assert stats["capture.records"] == PACKETS
    assert "capture.stop_unread_bytes" not in stats
    assert messages[-1][0] == channel.DONE


def test_what_the_budget_leaves_in_the_ring_is_counted(tmp_path: Path, full_ring: FakeRing,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    worker, chan_r = _worker(_setup(tmp_path, "0s"), full_ring)
    worker.drain_s = 0  # a worker far behind: its budget runs out after one batch
    pending = full_ring.prod
    with caplog.at_level(logging.WARNING, "pktbeat"):
        messages = _stop(worker, chan_r)
    stats = json.loads([p for k, p in messages if k == channel.STATS][-1])
    unread = worker.reader.pending_bytes()
    assert 0 < unread < pending
    assert stats["capture.stop_unread_bytes"] == unread
    assert stats["capture.records"] == READ_BATCH
    assert f"{unread} captured bytes were still in the ring at stop" in caplog.text
    assert messages[-1][0] == channel.DONE


def test_a_worker_that_does_not_stop_in_time_is_killed_and_counted(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    chan_r, chan_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker stuck in a long session close: never says goodbye
        time.sleep(30)
        os._exit(0)
    os.close(chan_w)
    os.set_blocking(chan_r, False)
    pool = WorkerPool(_setup(tmp_path, "0s"))
    handle = WorkerHandle(0, pid, channel.ChannelReader(chan_r), -1, stats={"capture.ring_pending_bytes": 4096})
    pool.workers.append(handle)
    killed = pool.counters["killed"]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "pktbeat"):
        pool.collect(time.monotonic() + 0.3, lambda events: None)
    assert time.monotonic() - started < 5
    assert handle.exited and pool.counters["killed"] == killed + 1
    assert "capture worker 0 did not stop in time" in caplog.text and "4096 bytes" in caplog.text
