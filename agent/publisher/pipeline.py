"""The publisher pipeline: a bounded memory queue, an optional disk spool, one sender thread.

Events enter with `publish()` and leave only when the output acknowledges
them (ACKED, or DROPPED for a failure that retrying cannot fix).  A sender
thread takes batches of up to the output's batch size, from the memory queue
first and then from the spool, and resends what the output says to retry,
with backoff (`backoff.init` doubling up to `backoff.max`, reset by success).

Modes (chosen by the runner):
  - replay (`live=False`): `publish()` blocks while the queue is full, so a
    file replay never drops; `close(deadline)` waits for every event to be
    acknowledged, or raises PublishTimeout at the deadline.
  - live (`live=True`): `publish()` never waits for the output.  When the
    memory queue is full, events go to the disk spool; once the spool has a
    backlog, new events follow it there (order is kept).  Only when the spool
    is full (or there is none) is an event dropped: counted, and logged at
    most once per `drop_log_interval` with the number dropped since.
  - durable (`durable=True`, i.e. `queue.disk` configured): every event is
    written to the spool first, as Packetbeat's disk queue does, so a crash
    loses nothing that was published; the memory queue is not used.

With a spool, a restart first resends what the previous run spooled and the
output had not acknowledged.

A full disk never stops publish(): the spool holds a bounded write-ahead
buffer in memory while its disk cannot be written, and beyond that events are
dropped and counted by cause (`queue_full_drops`: no room; `disk_full_drops`:
the spool's disk cannot be written; `too_large_drops`: an event larger than
the whole disk queue), logged at most once per `drop_log_interval` saying what
is full.  In replay and durable modes a full spool or disk makes publish()
wait (replay never drops) until `interrupt()`; an event that can never fit is
dropped at once with an error.  `undelivered()` says how many events did not
reach the output (refused by it, dropped, or still queued at close), which
the runners turn into an exit code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from agent import metrics
from agent.publisher.spool import Position, Refusal, Spool
from agent.publisher.types import EncodedEvent, Outcome, Output

log = logging.getLogger("pktbeat.publisher")

PIPELINE_COUNTERS = ("published", "acked", "retried", "dropped", "batches", "spooled", "queue_full_drops",
                     "disk_full_drops", "too_large_drops", "interrupted_drops", "output_errors")
DROP_COUNTERS = ("queue_full_drops", "disk_full_drops", "too_large_drops", "interrupted_drops")
_REFUSAL_COUNTER = {Refusal.FULL: "queue_full_drops", Refusal.DISK: "disk_full_drops",
                    Refusal.TOO_LARGE: "too_large_drops"}
SENDER_JOIN_MAX = 5.0


class PublishTimeout(Exception):
    """Events could not be delivered within packetbeat.shutdown_timeout."""


class Pipeline:
    def __init__(
        self,
        output: Output,
        *,
        max_events: int = 3200,
        flush_min_events: int = 1600,
        flush_timeout: float = 10.0,
        bulk_max_size: int = 1600,
        live: bool = False,
        spool: Spool | None = None,
        durable: bool = False,
        backoff_init: float = 1.0,
        backoff_max: float = 60.0,
        drop_log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output = output
        self.max_events = max(1, max_events)
        self.flush_min_events = max(1, min(flush_min_events or 1, self.max_events))
        self.flush_timeout = flush_timeout
        self.batch_size = max(1, int(getattr(output, "batch_size", 0) or bulk_max_size))
        self.live = live
        self.spool = spool
        self.durable = durable and spool is not None
        self.backoff_init = max(0.001, backoff_init)
        self.backoff_max = max(self.backoff_init, backoff_max)
        self.drop_log_interval = drop_log_interval
        self._clock = clock
        self.counters = metrics.register("pipeline", PIPELINE_COUNTERS)
        self._mem: deque[EncodedEvent] = deque()
        self._staged: list[EncodedEvent] = []  # replay: published, not yet handed to the queue
        self._stage_size = max(1, min(self.flush_min_events, 256))
        self._oldest = 0.0  # when the oldest event in memory arrived
        self._cond = threading.Condition()
        self._flushing = 0  # callers waiting in flush(): send partial batches at once
        self._stopping = False
        self._interrupted = False  # producers stop waiting for room (a stop was asked for)
        self._interrupt_deadline: float | None = None  # and flush()/close() give up at this time
        self._closed = False
        self._failed: BaseException | None = None
        self._drops_unlogged: dict[str, int] = {}
        self._last_drop_log: float | None = None  # None: the first drop is logged at once
        self._last_wait_log: float | None = None
        self._not_delivered_at_close = 0
        self._sender = threading.Thread(target=self._run, name="pktbeat-publisher", daemon=True)
        self._sender.start()

    # -- producer side ----------------------------------------------------------------

    def publish(self, event: EncodedEvent) -> None:
        """Queue one event: blocks while full in replay mode, never blocks in live mode."""
        self.publish_many([event])

    def publish_many(self, events: list[EncodedEvent]) -> None:
        """`publish` each of `events`, in order: a live worker's batch under one lock, replay's staged at once."""
        if not self.live and not self.durable:
            # Replay hands events over in small batches: one lock and one wake-up per batch, not per
            # event (per-event hand-off to the sender thread cost more than building the event).
            self._staged.extend(events)
            if len(self._staged) >= self._stage_size:
                self._hand_over()
            return
        with self._cond:
            self.counters["published"] += len(events)
            for event in events:
                self._enqueue(event)

    def _enqueue(self, event: EncodedEvent) -> None:
        """One event into the spool or the memory queue, or dropped and counted (the lock is held)."""
        if self.durable:
            self._publish_to_spool(event)
            return
        if self.spool is not None and (self.spool.unread or len(self._mem) >= self.max_events) \
                and self._publish_to_spool(event):
            return
        if len(self._mem) >= self.max_events:
            why = self.spool.refusal if self.spool is not None else None
            self._drop(_REFUSAL_COUNTER.get(why, "queue_full_drops") if why else "queue_full_drops")
            return
        self._append_memory(event)

    def _append_memory(self, event: EncodedEvent) -> None:
        if not self._mem:
            self._oldest = self._clock()
        self._mem.append(event)
        if len(self._mem) >= self.flush_min_events:
            self._cond.notify_all()

    def _hand_over(self) -> None:
        """Move the staged events into the memory queue, waiting for room (replay never drops)."""
        staged = self._staged
        if not staged:
            return
        self._staged = []
        mem = self._mem
        limit = self.max_events
        with self._cond:
            self.counters["published"] += len(staged)
            for event in staged:
                if len(mem) >= limit:
                    while len(mem) >= limit and not self._stopping and not self._interrupted:
                        self._check_sender()
                        self._cond.wait(0.5)
                    if len(mem) >= limit:
                        self._drop("interrupted_drops")
                        continue
                if not mem:
                    self._oldest = self._clock()
                mem.append(event)
            if len(mem) >= self.flush_min_events:
                self._cond.notify_all()

    def _publish_to_spool(self, event: EncodedEvent) -> bool:
        """Spool one event; False when the spool refused it (live mode: the caller decides what then)."""
        assert self.spool is not None
        spool = self.spool
        while not spool.append(event):
            why = spool.refusal
            if why is Refusal.TOO_LARGE:
                self._drop("too_large_drops", len(event.data))
                return True  # handled: it can never be queued anywhere
            if self.live and not self.durable:
                return False
            if self.live:
                self._drop(_REFUSAL_COUNTER.get(why or Refusal.FULL, "queue_full_drops"))
                return True
            # Replay with a disk queue: wait for room rather than drop.
            if self._stopping or self._interrupted:
                self._drop("interrupted_drops")
                return True
            self._log_waiting(why)
            self._check_sender()
            self._cond.notify_all()
            self._cond.wait(0.2)
        self.counters["spooled"] += 1
        self._cond.notify_all()
        return True

    def _log_waiting(self, why: Refusal | None) -> None:
        now = self._clock()
        if self._last_wait_log is not None and now - self._last_wait_log < self.drop_log_interval:
            return
        self._last_wait_log = now
        assert self.spool is not None
        if why is Refusal.DISK:
            log.warning("waiting: the disk queue cannot be written (%s); replay resumes when there is space",
                        self.spool.describe_error())
        else:
            log.info("waiting: the disk queue is full (%d of %d bytes) until the %s output acknowledges events",
                     self.spool.size, self.spool.max_size, self.output.name)

    def _drop(self, counter: str, size: int = 0) -> None:
        self.counters[counter] += 1
        if counter == "too_large_drops" and self.spool is not None:
            # Each one is worth its own line: it is never a transient condition.
            log.error("an event of %d bytes is larger than the disk queue (queue.disk.max_size: %d bytes) and was "
                      "dropped; %d dropped so far for that reason", size, self.spool.max_size,
                      self.counters[counter])
            return
        self._drops_unlogged[counter] = self._drops_unlogged.get(counter, 0) + 1
        now = self._clock()
        if self._last_drop_log is None or now - self._last_drop_log >= self.drop_log_interval:
            self._log_drops(now)

    def _log_drops(self, now: float) -> None:
        since = f"in the last {now - self._last_drop_log:.0f}s" if self._last_drop_log is not None else "now"
        for counter, count in self._drops_unlogged.items():
            if count:
                log.warning("dropped %d event(s) %s: %s; %d dropped in total for that reason", count, since,
                            self._drop_reason(counter), self.counters[counter])
        self._drops_unlogged = {}
        self._last_drop_log = now

    def _drop_reason(self, counter: str) -> str:
        spool = self.spool
        if counter == "interrupted_drops":
            return "stopping, and the queue was full"
        if spool is None:
            return f"the memory queue is full ({self.max_events} events, no disk spool)"
        if counter == "disk_full_drops":
            error = spool.describe_error()
            now = f"cannot be written ({error})" if error else f"could not be written ({spool.directory})"
            return f"the disk under the spool {now} and the memory queue is full"
        return f"the disk spool is full (cap {spool.max_size} bytes, now {spool.size}; {spool.directory})"

    def _drop_log_due(self) -> bool:
        return any(self._drops_unlogged.values()) and (
            self._last_drop_log is None or self._clock() - self._last_drop_log >= self.drop_log_interval)

    def tick(self) -> None:
        """Periodic work from the runner: spool write-ahead to disk, flush.timeout, pending drop counts."""
        self._hand_over()
        if self.spool is not None:
            self.spool.flush()  # bounds what a crash can lose while the sender is stuck retrying
        with self._cond:
            if self._drop_log_due():
                self._log_drops(self._clock())
            if self._mem and self._clock() - self._oldest >= self.flush_timeout:
                self._cond.notify_all()

    # -- waiting for acknowledgement ---------------------------------------------------------

    def pending(self) -> int:
        """Events published and not yet acknowledged (memory and spool)."""
        with self._cond:
            return len(self._staged) + len(self._mem) + (self.spool.pending if self.spool is not None else 0)

    def flush(self, deadline: float | None = None) -> None:
        """Wait until every event published so far is acknowledged, or raise PublishTimeout at `deadline`."""
        self._hand_over()
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending_locked():
                    self._check_sender()
                    if self.spool is not None:
                        self.spool.flush()
                    until = self._deadline(deadline)
                    remaining = None if until is None else until - self._clock()
                    if remaining is not None and remaining <= 0:
                        raise PublishTimeout(
                            f"{self._pending_locked()} events not acknowledged by the {self.output.name} output")
                    self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
            finally:
                self._flushing -= 1

    def _pending_locked(self) -> int:
        return len(self._mem) + (self.spool.pending if self.spool is not None else 0)

    def _check_sender(self) -> None:
        if self._failed is not None:
            raise RuntimeError(f"the publisher thread failed: {self._failed!r}") from self._failed

    def interrupt(self, grace: float) -> None:
        """A stop was asked for: producers waiting for room give up (their events are counted as dropped)
        and flush()/close() wait at most `grace` seconds more.  Safe to call from a signal handler: it never
        waits for the queue lock (every wait here wakes up on its own within half a second)."""
        self._interrupt_deadline = self._clock() + grace
        self._interrupted = True
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def _deadline(self, deadline: float | None) -> float | None:
        stop = self._interrupt_deadline
        if stop is None:
            return deadline
        return stop if deadline is None else min(stop, deadline)

    def undelivered(self) -> int:
        """Events published that the output did not acknowledge: refused by it, dropped, or left at close."""
        counters = self.counters
        return counters["dropped"] + sum(counters[name] for name in DROP_COUNTERS) + self._not_delivered_at_close

    def close(self, deadline: float | None = None) -> None:
        """Deliver what is queued (until `deadline`), then stop the sender and close the output.

        With a spool, events still in memory at the deadline are moved to the
        spool so that the next run sends them.  The sender is waited for only
        until the deadline (at most SENDER_JOIN_MAX): a request stuck on a
        dead server does not hold the exit; its answer, if one comes, is ignored.
        """
        try:
            self.flush(deadline)
        finally:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            until = self._deadline(deadline)
            wait = SENDER_JOIN_MAX if until is None else max(0.05, min(SENDER_JOIN_MAX, until - self._clock()))
            self._sender.join(timeout=wait)
            with self._cond:
                self._closed = True  # from here a late acknowledgement from the sender is ignored
                self._hand_over_locked_leftovers()
                if self.spool is not None:
                    self._save_memory_to_spool()
                self._not_delivered_at_close = len(self._mem) + (self.spool.pending if self.spool else 0)
                if any(self._drops_unlogged.values()):
                    self._log_drops(self._clock())
            if self.spool is not None:
                self.spool.close()
            try:
                self.output.close()
            except Exception as exc:  # closing never fails the shutdown
                log.warning("closing the %s output failed: %s", self.output.name, exc)

    def _hand_over_locked_leftovers(self) -> None:
        """Staged replay events that never reached the queue (the run was interrupted) count as not delivered."""
        if self._staged:
            self.counters["interrupted_drops"] += len(self._staged)
            self._staged = []

    def _save_memory_to_spool(self) -> None:
        assert self.spool is not None
        moved = 0
        while self._mem:
            if not self.spool.append(self._mem[0]):
                break
            self._mem.popleft()
            moved += 1
        if moved:
            log.info("%d unacknowledged event(s) moved from memory to the spool for the next run", moved)

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, source = self._next_batch()
                if batch is None:
                    return
                self._deliver(batch)
                self._acknowledge(source, len(batch))
        except _Stopped:
            return
        except BaseException as exc:  # reported to the producer instead of dying silently
            log.exception("publisher thread failed")
            with self._cond:
                self._failed = exc
                self._cond.notify_all()

    def _next_batch(self) -> tuple[list[EncodedEvent] | None, Position | None]:
        """Wait for a batch; (None, None) when stopping.  Memory events are peeked, not removed."""
        while True:
            if self.spool is not None:
                self.spool.flush()  # outside the queue lock: publish() never waits for the disk
            with self._cond:
                if self._stopping:
                    return None, None
                if self._mem:
                    due = (len(self._mem) >= self.flush_min_events or self._flushing
                           or self._clock() - self._oldest >= self.flush_timeout)
                    if due:
                        count = min(self.batch_size, len(self._mem))
                        return [self._mem[i] for i in range(count)], None
                read_spool = self.spool is not None and self.spool.unread > 0
                if not read_spool:
                    if self._drop_log_due():
                        self._log_drops(self._clock())
                    wait = 1.0
                    if self._mem:
                        wait = max(0.01, min(wait, self.flush_timeout - (self._clock() - self._oldest)))
                    self._cond.wait(wait)
                    continue
            assert self.spool is not None
            events, position = self.spool.read(self.batch_size)
            if events:
                return events, position

    def _acknowledge(self, source: Position | None, count: int) -> None:
        with self._cond:
            if self._closed:
                return
            if source is None:
                for _ in range(count):
                    self._mem.popleft()
                if self._mem:
                    self._oldest = self._clock()
            else:
                assert self.spool is not None
                self.spool.ack(source, count)
            self._cond.notify_all()

    def _deliver(self, batch: list[EncodedEvent]) -> None:
        """Send until every event is ACKED or DROPPED; retries wait with backoff (stopping ends the wait)."""
        backoff = self.backoff_init
        pending = batch
        while pending:
            self.counters["batches"] += 1
            try:
                outcomes = self.output.publish(pending)
                if len(outcomes) != len(pending):
                    raise ValueError(f"{len(outcomes)} outcomes for {len(pending)} events")
            except Exception as exc:  # an output failing wholesale: retry the batch
                self.counters["output_errors"] += 1
                log.warning("output %s failed: %s", self.output.name, exc)
                outcomes = [Outcome.RETRY] * len(pending)
            retry: list[EncodedEvent] = []
            for event, outcome in zip(pending, outcomes, strict=True):
                if outcome is Outcome.ACKED:
                    self.counters["acked"] += 1
                elif outcome is Outcome.DROPPED:
                    self.counters["dropped"] += 1
                else:
                    retry.append(event)
            if not retry:
                return
            self.counters["retried"] += len(retry)
            if len(retry) < len(pending):
                backoff = self.backoff_init  # the output is accepting events again
            with self._cond:
                if self._stopping:
                    raise _Stopped
                self._cond.wait_for(lambda: self._stopping, timeout=backoff)
                if self._stopping:
                    raise _Stopped
            backoff = min(backoff * 2, self.backoff_max)
            pending = retry


class _Stopped(BaseException):
    """The pipeline is closing while a batch still waits for a retry."""
