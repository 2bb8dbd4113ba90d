"""The publisher pipeline: events in, batches to the output, retried until acknowledged.

This is the in-process pipeline used by file replay and the console/file
outputs: it batches by `queue.mem.flush.min_events` / `flush.timeout`,
blocks the producer when `queue.mem.events` are in flight (replay must
never drop), and retries what the output says to retry with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent import metrics
from agent.publisher.types import EncodedEvent, Outcome, Output

log = logging.getLogger("pktbeat.publisher")

PIPELINE_COUNTERS = ("published", "acked", "retried", "dropped", "batches")


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
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.output = output
        self.max_events = max_events
        self.flush_min_events = max(1, min(flush_min_events, max_events))
        self.flush_timeout = flush_timeout
        self.bulk_max_size = max(1, bulk_max_size)
        self._buffer: list[EncodedEvent] = []
        self._oldest = 0.0
        self._clock = clock
        self._sleep = sleep
        self.counters = metrics.register("pipeline", PIPELINE_COUNTERS)

    def publish(self, event: EncodedEvent) -> None:
        if not self._buffer:
            self._oldest = self._clock()
        self._buffer.append(event)
        self.counters["published"] += 1
        if len(self._buffer) >= self.flush_min_events:
            self.flush()

    def tick(self) -> None:
        """Flush a partial batch whose flush.timeout passed."""
        if self._buffer and self._clock() - self._oldest >= self.flush_timeout:
            self.flush()

    def flush(self, deadline: float | None = None) -> None:
        """Deliver everything buffered; retry with backoff until acknowledged or `deadline`."""
        while self._buffer:
            batch = self._buffer[: self.bulk_max_size]
            self._deliver(batch, deadline)
            del self._buffer[: len(batch)]

    def _deliver(self, batch: list[EncodedEvent], deadline: float | None) -> None:
        backoff = 1.0
        pending = batch
        while pending:
            self.counters["batches"] += 1
            try:
                outcomes = self.output.publish(pending)
            except Exception as exc:  # an output failing wholesale: retry the batch
                log.warning("output %s failed: %s", self.output.name, exc)
                outcomes = [Outcome.RETRY] * len(pending)
            retry = []
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
            if deadline is not None and self._clock() + backoff > deadline:
                raise PublishTimeout(f"{len(retry)} events not acknowledged by the {self.output.name} output")
            self._sleep(backoff)
            backoff = min(backoff * 2, 60.0)
            pending = retry

    def close(self, deadline: float | None = None) -> None:
        try:
            self.flush(deadline)
        finally:
            self.output.close()
