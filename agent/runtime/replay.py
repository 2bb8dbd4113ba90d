"""File replay (-I): pcap/pcapng through the same transport, protocols and events as live capture.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

With `-t` packets run at full speed with their own timestamps; without it
replay is paced in real time and timestamps become the wall clock, as
Packetbeat does.  Timeouts (transaction expiry, flow reports) follow the
packet clock, so `-t` runs are deterministic.

With `-l N` each loop starts from a fresh transport state (as a new run
would), so every loop gives the same transactions; their ids differ by loop.

The first SIGINT/SIGTERM stops reading, stops waiting for room in the queue,
and gives the output `packetbeat.shutdown_timeout` (INTERRUPT_GRACE when that
is 0) to acknowledge what is queued.  Exit code 3 says that events were not
delivered: not acknowledged in time, refused by the output (too large, mapping
errors) or dropped (larger than the disk queue, or left behind by the stop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agent import metrics
from agent.capture.decode import SUPPORTED_LINKTYPES, FrameDecoder
from agent.capture.pcapfile import CaptureFileError, CaptureReader
from agent.config.load import AgentConfig
from agent.events.builder import AgentIdentity
from agent.publisher.pipeline import Pipeline, PublishTimeout
from agent.publisher.types import EncodedEvent, Output
from agent.runtime import wiring
from agent.runtime.exitcodes import Exit
from agent.runtime.progress import Progress
from agent.runtime.progress import wanted as progress_wanted

log: Final = logging.getLogger("pktbeat")

TICK_NS: Final = 100_000_000  # timers run at most every 100 ms of packet time

EVENT_BATCH: Final = 64  # events built before they go to the pipeline together
INTERRUPT_GRACE: Final = 1.0  # after a stop with shutdown_timeout 0: time left for a fast output


@dataclass
class ReplayOptions:
    files: list[str]
    topspeed: bool = False
    loops: int = 1
    progress: bool | None = None  # None: when stderr is a terminal


class ReplayRunner:
    """Replay in this process.  Multi-worker replay (agent/runtime/replay_shards.py) runs one in each
    worker, with the parent's `identity`, a `pipeline` whose output is the parent, and an
    `open_capture` that keeps the worker's shard of each file."""

    def __init__(self, config: AgentConfig, options: ReplayOptions, pipeline: Pipeline | None = None,
                 identity: AgentIdentity | None = None) -> None:
        self.config = config
        self.options = options
        self.identity = identity if identity is not None else wiring.agent_identity(config)
        self.builder = wiring.event_builder(config, self.identity)
        self.output: Output | None = None
        if pipeline is None:
            self.output = wiring.make_output(config)
            pipeline = wiring.make_pipeline(config, self.output)
        self.pipeline = pipeline
        self.open_capture: Callable[[str], CaptureReader] = CaptureReader
        self.dispatcher = wiring.dispatcher(config, self._emit)
        self.flows = None
        if config.flows is not None:
            from agent.flows.table import FlowTable

            self.flows = FlowTable(config.flows, self._publish_flow, timestamp_digits=config.timestamp_digits,
                                   follow_clock=not options.topspeed)
        self.stats = metrics.register("replay", ("files", "packets", "undecoded", "events", "read_errors"))
        self._events: list[EncodedEvent] = []  # built, not handed to the pipeline yet (_publish_events)
        self._stop = False
        self._input_error = False
        self._timer_origin: tuple[int, int] | None = None

    def stop(self) -> None:
        """Called from the signal handler: sets flags only (see Pipeline.interrupt)."""
        self._stop = True
        timeout = self.config.shutdown_timeout
        self.pipeline.interrupt(timeout if timeout > 0 else INTERRUPT_GRACE)

    # -- event path ------------------------------------------------------------

    def _emit(self, txn: object) -> None:
        built = self.builder.encode_transaction(txn)  # type: ignore[arg-type]
        if built is None:
            return
        events = self._events
        events.append(built[1])
        if len(events) >= EVENT_BATCH:
            self._publish_events()

    def _publish_events(self) -> None:
        """Hand the events built so far to the pipeline: one (interpreted) call per batch, not per event."""
        events = self._events
        if events:
            self._events = []
            self.stats["events"] += len(events)
            self.pipeline.publish_many(events)

    def _publish_flow(self, event: dict[str, object]) -> None:
        from agent.events.builder import EventSettings

        self._publish_events()  # the transactions' events before it, as they were built

        finished = self.builder.finish(event, self.builder.settings.get("flow", EventSettings()))
        if finished is None:
            return
        self.stats["events"] += 1
        self.pipeline.publish(self.builder.encode(finished, self.builder.index_for("flow")))

    # -- the loop ------------------------------------------------------------------

    def run(self) -> Exit:
        log.info("Process watcher disabled when file input is used")
        wiring.tune_gc()
        code = Exit.OK
        now_ns = 0
        loops = max(1, self.options.loops)
        try:
            for loop in range(loops):
                if loop:
                    self._next_loop(now_ns, loop)
                for path in self.options.files:
                    if self._stop:
                        break
                    result = self._replay_file(path, now_ns)
                    if result is None:
                        code = Exit.INPUT
                        continue
                    now_ns = max(now_ns, result)
            now_ns = self._drain_timeouts(now_ns)
            self._finish(now_ns)
            if self._input_error:
                code = Exit.INPUT
        finally:
            code = self._close(code)
        return code

    def _next_loop(self, now_ns: int, loop: int) -> None:
        """End a loop as a run ends, then start the next from a fresh transport state: without it the
        next loop's packets meet the connections of the last one and look like retransmissions."""
        self._end_of_input(now_ns)
        self.dispatcher = wiring.dispatcher(self.config, self._emit)
        self.builder.new_run(loop.to_bytes(8, "little"))
        self._timer_origin = None

    def _open_capture(self, path: str) -> CaptureReader | None:
        """The file's reader, or None (logged and counted) when it cannot be read or its link type is unknown."""
        try:
            reader = self.open_capture(path)
        except (CaptureFileError, OSError) as exc:
            log.error("%s", exc)
            self.stats["read_errors"] += 1
            return None
        linktype = reader.info.linktype
        if linktype not in SUPPORTED_LINKTYPES:
            log.error("%s: unsupported link type %d (supported: %s)", path, linktype,
                      ", ".join(sorted(set(SUPPORTED_LINKTYPES.values()))))
            self.stats["read_errors"] += 1
            reader.close()
            return None
        return reader

    def _replay_file(self, path: str, clock_ns: int) -> int | None:
        """Replay one file; returns the last packet time, or None when the file was unreadable."""
        reader = self._open_capture(path)
        if reader is None:
            return None
        with reader:
            self.stats["files"] += 1
            decoder = FrameDecoder(reader.info.linktype, keep_link=self.flows is not None,
                                   tunnels=wiring.tunnel_settings(self.config))
            progress = Progress(path, reader.info.size, enabled=progress_wanted(self.options.progress))
            last_ns = clock_ns
            next_tick = 0
            pace = None if self.options.topspeed else _Pacer()
            # Methods are called on the typed objects, not through bound-method locals: compiled, those are
            # direct C calls, while a bound method (or *args) goes through Python's call protocol per packet.
            dispatcher = self.dispatcher
            fast_tcp = self.flows is None  # flows need whole Packets
            stats = self.stats
            count = 0
            try:
                stopping = False
                for batch in reader.batches():
                    plain = 0  # frames taken by plain_tcp, counted once per batch
                    for ts_ns, frame, wire_len in batch:
                        if pace is not None:
                            ts_ns = pace.wait(ts_ns)
                        count += 1
                        fields = decoder.plain_tcp(frame) if fast_tcp else None
                        if fields is not None:  # the common case, without a Packet object
                            plain += 1
                            src, dst, sport, dport, seq, ack, flags, payload, missing = fields
                            dispatcher.tcp(ts_ns, src, dst, sport, dport, seq, ack, flags, payload, missing)
                        else:
                            self._packet(decoder, frame, ts_ns, wire_len)
                        if ts_ns > last_ns:
                            last_ns = ts_ns
                            if last_ns >= next_tick:
                                self._tick(last_ns)
                                next_tick = last_ns + TICK_NS
                                progress.update(reader.offset, count, stats["events"])
                        elif ts_ns < last_ns - 1_000_000_000:
                            log.debug("time went backwards in %s", path)
                        if not count & 1023 and self._stop:
                            stopping = True
                            break
                    decoder.count_plain(plain)
                    if stopping:
                        break
            except CaptureFileError as exc:
                log.error("%s (the packets before it were processed)", exc)
                self.stats["read_errors"] += 1
                self._input_error = True
            finally:
                self.stats["packets"] += count
                progress.done(count, stats["events"])
        return max(last_ns, reader.skipped_ns)  # a sharded reader's file ends where its last frame is

    def _packet(self, decoder: FrameDecoder, frame: bytes, ts_ns: int, wire_len: int) -> None:
        """A frame that is not plain IPv4 TCP (or any frame, with flows on): as a whole Packet."""
        pkt = decoder.decode(frame, ts_ns, wire_len)
        if pkt is None:
            self.stats["undecoded"] += 1
            return
        if self.flows is not None:
            self.flows.packet(pkt)
        self.dispatcher.handle(pkt)

    def _tick(self, now_ns: int) -> None:
        if self.options.topspeed:
            now_ns = self._timer_clock(now_ns)
        self.dispatcher.expire(now_ns)
        if self.flows is not None:
            self.flows.tick(now_ns)
        self._publish_events()
        self.pipeline.tick()

    def _timer_clock(self, packet_ns: int) -> int:
        """With -t, timeouts run on the wall clock as in Packetbeat: the time elapsed since the
        first packet was read, laid onto the capture's own timeline.  A fast replay therefore
        expires nothing that a live agent would not have expired in the same wall time."""
        if self._timer_origin is None:
            self._timer_origin = (packet_ns, time.monotonic_ns())
        first_packet, first_wall = self._timer_origin
        return first_packet + (time.monotonic_ns() - first_wall)

    def _drain_timeouts(self, now_ns: int) -> int:
        """Real-time replay waits for pending transactions to time out, as a live agent would."""
        if self.options.topspeed or self._stop:
            return now_ns
        timeouts = [e.config.transaction_timeout for e in self.config.protocols]
        wait_s = max(timeouts, default=0.0)
        deadline = time.monotonic() + wait_s + 0.2
        while self.dispatcher.pending() and time.monotonic() < deadline and not self._stop:
            time.sleep(0.05)
            now_ns = time.time_ns()
            self._tick(now_ns)
        return now_ns

    def _finish(self, now_ns: int) -> None:
        self._end_of_input(now_ns)
        if self.flows is not None:
            self.flows.final(now_ns)

    def _end_of_input(self, now_ns: int) -> None:
        self.dispatcher.flush_reordering(now_ns)
        pending = self.dispatcher.pending()
        if pending:
            # Packetbeat discards requests still waiting at the end of a file; say so.
            log.info("%d request(s) had no response by the end of the input and were not published", pending)
            metrics.register("replay").inc("pending_at_end", pending)

    def _close(self, code: Exit) -> Exit:
        self._publish_events()
        return close_pipeline(self.pipeline, self.config.shutdown_timeout, code)



def close_pipeline(pipeline: Pipeline, timeout: float, code: Exit) -> Exit:
    """Deliver what is queued (within `timeout`, 0: no limit) and close; the exit code, 3 when events
    were not delivered (each cause said in one line)."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        pipeline.close(deadline)
    except PublishTimeout as exc:
        when = "after the stop" if pipeline.interrupted else f"within packetbeat.shutdown_timeout ({timeout:g}s)"
        kept = " (they stay in the disk queue for the next run)" if pipeline.spool is not None else \
            " (lost: without queue.disk they are kept in memory only; replaying the file again sends them)"
        log.error("%s %s%s", exc, when, kept)
        return Exit.PUBLISH_TIMEOUT
    undelivered = pipeline.undelivered()
    if undelivered:
        counters = pipeline.counters
        causes = {"refused by the output": counters["dropped"],
                  "larger than the disk queue": counters["too_large_drops"],
                  "left behind by the stop": counters["interrupted_drops"],
                  "no room in the queue": counters["queue_full_drops"] + counters["disk_full_drops"]}
        log.error("%d event(s) were not delivered: %s", undelivered,
                  ", ".join(f"{n} {why}" for why, n in causes.items() if n))
        return Exit.PUBLISH_TIMEOUT
    return code


class _Pacer:
    """Real-time pacing: sleeps to keep the capture's spacing, returns wall-clock timestamps."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._first_pkt: int | None = None
        self._start = 0
        self._sleep = sleep

    def wait(self, ts_ns: int) -> int:
        now = time.time_ns()
        if self._first_pkt is None:
            self._first_pkt = ts_ns
            self._start = now
            return now
        due = self._start + max(0, ts_ns - self._first_pkt)
        if due > now:
            self._sleep((due - now) / 1e9)
            now = time.time_ns()
        return now
