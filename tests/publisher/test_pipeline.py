"""The pipeline: acknowledgement, backpressure in replay, never blocking in live mode, spool and drops."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from agent.publisher.pipeline import Pipeline, PublishTimeout
from agent.publisher.spool import Spool, spool_pending
from agent.publisher.types import EncodedEvent, Outcome


def ev(i: int) -> EncodedEvent:
    return EncodedEvent(b'{"n":%d}' % i, f"id-{i}", None, "icmp")


class GatedOutput:
    """Acknowledges only while the gate is open; records every event it acknowledged, in order."""

    name = "gated"

    def __init__(self, open_: bool = True, batch_size: int = 50) -> None:
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.batch_size = batch_size
        self.acked: list[str] = []
        self.calls = 0
        self.closed = False

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        self.calls += 1
        if not self.gate.is_set():
            time.sleep(0.01)
            return [Outcome.RETRY] * len(batch)
        self.acked.extend(e.event_id for e in batch)
        return [Outcome.ACKED] * len(batch)

    def close(self) -> None:
        self.closed = True


def ids(n: int, start: int = 0) -> list[str]:
    return [f"id-{i}" for i in range(start, start + n)]


def test_replay_delivers_everything_in_order_and_closes_the_output() -> None:
    out = GatedOutput()
    pipe = Pipeline(out, max_events=100, flush_min_events=30, flush_timeout=0.05)
    for i in range(1000):
        pipe.publish(ev(i))
    pipe.close(time.monotonic() + 10)
    assert out.acked == ids(1000)
    assert out.closed
    assert pipe.counters["acked"] >= 1000


def test_replay_publish_blocks_while_the_queue_is_full() -> None:
    out = GatedOutput(open_=False)
    pipe = Pipeline(out, max_events=20, flush_min_events=10, flush_timeout=0.01, backoff_init=0.01,
                    backoff_max=0.02)
    done = threading.Event()

    def produce() -> None:
        for i in range(100):
            pipe.publish(ev(i))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.5)
    assert not done.is_set()  # blocked: nothing acknowledged, 20 in the queue
    assert pipe.pending() == 20
    out.gate.set()
    assert done.wait(10)
    pipe.close(time.monotonic() + 10)
    assert out.acked == ids(100)


def test_close_raises_publish_timeout_at_the_deadline() -> None:
    out = GatedOutput(open_=False)
    pipe = Pipeline(out, max_events=100, flush_min_events=5, flush_timeout=0.01, backoff_init=0.01)
    for i in range(10):
        pipe.publish(ev(i))
    started = time.monotonic()
    with pytest.raises(PublishTimeout, match="10 events not acknowledged"):
        pipe.close(time.monotonic() + 0.5)
    assert time.monotonic() - started < 3
    assert out.closed


def test_retries_back_off_and_dropped_events_are_counted() -> None:
    class Flaky:
        name = "flaky"
        batch_size = 10

        def __init__(self) -> None:
            self.attempts: list[float] = []
            self.acked: list[str] = []

        def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
            self.attempts.append(time.monotonic())
            if len(self.attempts) <= 3:
                return [Outcome.RETRY] * len(batch)
            out = []
            for e in batch:
                if e.event_id.endswith("7"):
                    out.append(Outcome.DROPPED)
                else:
                    out.append(Outcome.ACKED)
                    self.acked.append(e.event_id)
            return out

        def close(self) -> None:
            pass

    out = Flaky()
    pipe = Pipeline(out, max_events=100, flush_min_events=10, flush_timeout=0.01, backoff_init=0.05,
                    backoff_max=0.1)
    for i in range(10):
        pipe.publish(ev(i))
    pipe.close(time.monotonic() + 10)
    gaps = [b - a for a, b in zip(out.attempts, out.attempts[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.095  # 0.05, then capped at 0.1
    assert pipe.counters["dropped"] == 1
    assert out.acked == [i for i in ids(10) if not i.endswith("7")]


def test_an_output_that_raises_is_retried_not_fatal() -> None:
    class Raising(GatedOutput):
        def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
            if self.calls == 0:
                self.calls += 1
                raise OSError("boom")
            return super().publish(batch)

    out = Raising()
    pipe = Pipeline(out, max_events=50, flush_min_events=5, flush_timeout=0.01, backoff_init=0.01)
    for i in range(20):
        pipe.publish(ev(i))
    pipe.close(time.monotonic() + 5)
    assert out.acked == ids(20)
    assert pipe.counters["output_errors"] >= 1


@pytest.mark.parametrize("batch", [1, 512], ids=["publish", "publish_many"])
def test_live_publish_never_blocks_and_overflows_to_the_spool(tmp_path: Path, batch: int) -> None:
    out = GatedOutput(open_=False)
    spool = Spool(tmp_path, 50_000_000, segment_size=1_000_000)
    pipe = Pipeline(out, max_events=100, flush_min_events=50, flush_timeout=0.01, live=True, spool=spool,
                    backoff_init=0.01, backoff_max=0.05)
    started = time.monotonic()
    worst = 0.0
    for first in range(0, 20_000, batch):
        t0 = time.perf_counter()
        if batch == 1:
            pipe.publish(ev(first))
        else:  # a live worker's batch, as the parent hands it over
            pipe.publish_many([ev(i) for i in range(first, min(first + batch, 20_000))])
        worst = max(worst, time.perf_counter() - t0)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert worst < 0.25, f"a publish() took {worst:.3f}s"
    assert pipe.counters["spooled"] == 20_000 - 100
    assert pipe.counters["queue_full_drops"] == 0
    out.gate.set()
    pipe.close(time.monotonic() + 30)
    assert out.acked == ids(20_000)  # memory first, then the spool: order kept


def test_live_drops_only_when_the_spool_is_full_and_logs_once_per_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = GatedOutput(open_=False)
    spool = Spool(tmp_path, 200_000, segment_size=20_000)
    pipe = Pipeline(out, max_events=100, flush_min_events=50, flush_timeout=0.01, live=True, spool=spool,
                    backoff_init=0.01, backoff_max=0.05, drop_log_interval=3600)
    caplog.set_level(logging.WARNING, "pktbeat.publisher")
    for i in range(20_000):
        pipe.publish(ev(i))
    dropped = pipe.counters["queue_full_drops"]
    assert dropped > 10_000
    assert spool.size <= 200_000
    warnings = [r for r in caplog.records if "dropped" in r.getMessage() and "disk spool is full" in r.getMessage()]
    assert len(warnings) == 1  # once per interval, not once per event
    out.gate.set()
    pipe.close(time.monotonic() + 30)
    assert len(out.acked) == 20_000 - dropped
    assert len(set(out.acked)) == len(out.acked)
    final = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(final) == 2 and f"{dropped} dropped in total" in final[-1].getMessage()


def test_live_publish_many_without_a_spool_keeps_order_and_counts_what_did_not_fit() -> None:
    out = GatedOutput(open_=False)
    pipe = Pipeline(out, max_events=100, flush_min_events=50, flush_timeout=0.01, live=True,
                    backoff_init=0.01, backoff_max=0.05, drop_log_interval=3600)
    pipe.publish_many([ev(i) for i in range(300)])
    assert pipe.counters["published"] == 300
    assert pipe.counters["queue_full_drops"] == 200
    out.gate.set()
    pipe.close(time.monotonic() + 30)
    assert out.acked == ids(100)  # the first 100 fitted, in order


def test_durable_spool_keeps_everything_published_across_a_crash(tmp_path: Path) -> None:
    out = GatedOutput(open_=False)
    pipe = Pipeline(out, max_events=100, flush_min_events=10, flush_timeout=0.01, live=False,
                    spool=Spool(tmp_path, 50_000_000, write_ahead=1), durable=True, backoff_init=0.01)
    for i in range(500):
        pipe.publish(ev(i))
    time.sleep(0.2)
    # The process "dies" here: no close, nothing acknowledged.
    assert spool_pending(tmp_path) == 500
    out2 = GatedOutput()
    pipe2 = Pipeline(out2, max_events=100, flush_min_events=10, flush_timeout=0.01,
                     spool=Spool(tmp_path, 50_000_000), durable=True)
    pipe2.close(time.monotonic() + 10)
    assert out2.acked == ids(500)
    assert spool_pending(tmp_path) == 0


def test_live_close_moves_unsent_memory_events_to_the_spool(tmp_path: Path) -> None:
    out = GatedOutput(open_=False)
    pipe = Pipeline(out, max_events=1000, flush_min_events=500, flush_timeout=3600, live=True,
                    spool=Spool(tmp_path, 50_000_000))
    for i in range(40):
        pipe.publish(ev(i))
    with pytest.raises(PublishTimeout):
        pipe.close(time.monotonic() + 0.3)
    assert spool_pending(tmp_path) == 40
