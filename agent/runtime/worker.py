"""Capture workers: forked processes that each decode one ring of the eBPF program.

A worker inherits one ring's fd, maps it (agent/capture/ring.py) and runs the
same transport, protocols and event builder as file replay, on the wall clock.
It sends encoded events to the parent in batches over a bounded pipe
(agent/runtime/channel.py) and never blocks on it: what does not fit is dropped
and counted.  The kernel steers each flow to one ring (TCP by 5-tuple, the rest
by address pair), so both directions of a connection meet in one worker.

`WorkerPool` is the parent's side: it forks the workers, reads what they send,
and stops them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from agent import metrics
from agent.capture.chunks import CHUNK_COUNTERS, ChunkJoiner
from agent.capture.clock import boot_offset_ns
from agent.capture.dump import DumpWriter
from agent.capture.packet import Packet
from agent.capture.ring import RingReader
from agent.config.load import AgentConfig
from agent.events.builder import AgentIdentity
from agent.publisher.types import EncodedEvent
from agent.runtime import channel, wiring
from agent.runtime.topstats import TransactionStats
from agent.runtime.worksteps import EventBatch, PacketSteps

if TYPE_CHECKING:
    from agent.runtime.plaintext import TlsPlaintext

log = logging.getLogger("pktbeat")

WORKER_TICK_S = 0.1  # transaction timeouts and event batches
WORKER_STATS_S = 1.0
WORKER_POLL_S = 0.01  # the ring is written without wake-ups: this bounds the latency
WORKER_STOP_S = 1.2  # at stop, the least time a worker gets to empty its ring, close its sessions and send
WORKER_CLOSE_S = 0.7  # of that time, what is kept for closing the sessions and sending their events
READ_BATCH = 2048
EVENT_BATCH = 512

# stop_unread_bytes: captured bytes still in the ring when the stop budget ran out (never decoded).
WORKER_COUNTERS = ("records", "bad_records", "packets", "events", "events_dropped", "dump_packets", "dump_errors",
                   "stop_unread_bytes")


def stop_budget(shutdown_timeout: float) -> float:
    """Seconds a worker has at stop before the parent kills it: half of packetbeat.shutdown_timeout (the other
    half is the output's last delivery), and at least WORKER_STOP_S."""
    return max(WORKER_STOP_S, shutdown_timeout / 2)


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker inherits from the parent at fork."""

    config: AgentConfig
    identity: AgentIdentity
    ring_bytes: int
    dump_path: str | None
    procs: bool = False  # the kernel sends socket owners: attribute transactions to processes
    tls_plaintext: bool = False  # the kernel sends TLS plaintext: decode it (agent/runtime/plaintext.py)
    close_fds: tuple[int, ...] = ()  # the parent's fds a worker must not keep (raw tracepoint links)


class CaptureWorker:
    """Runs in a forked process: one ring in, encoded events out."""

    def __init__(self, setup: WorkerSetup, ring_fd: int, chan_fd: int, control_fd: int) -> None:
        self.control_fd = control_fd
        self.drain_s = stop_budget(setup.config.shutdown_timeout) - WORKER_CLOSE_S
        self._baseline = metrics.snapshot()
        self.counters = metrics.register("capture", WORKER_COUNTERS)
        self.by_status = metrics.register("events")  # events.<type>.<status>: /metrics' pktbeat_events_total
        self.top = TransactionStats()  # latency and endpoints: /metrics and `pktbeat top`
        self.joiner = ChunkJoiner(metrics.register("capture.chunks", CHUNK_COUNTERS))
        self.builder = wiring.event_builder(setup.config, setup.identity)
        self.plaintext: TlsPlaintext | None = None
        self.batch = EventBatch(self.builder, self.by_status, self.top, EVENT_BATCH, self._send_events)
        emit = self.batch.emit
        if setup.tls_plaintext:
            from agent.runtime.plaintext import TlsPlaintext

            self.plaintext = TlsPlaintext(self.batch.emit, lambda e: wiring.plaintext_bindings(setup.config, e),
                                          setup.config.tls_plaintext.max_connections)
            emit = self.plaintext.wire_transaction  # remembers TLS handshakes for the plaintext's events
        self.dispatcher = wiring.dispatcher(setup.config, emit)
        self.reader = RingReader(ring_fd, setup.ring_bytes)
        self.processes = wiring.process_table(setup.config) if setup.procs else None
        self.builder.processes = self.processes
        self.chan = channel.ChannelWriter(chan_fd)
        self.dump = DumpWriter(setup.dump_path) if setup.dump_path else None
        self.steps = PacketSteps(self.dispatcher, self.joiner, self.counters, self.dump)
        self._newest_ns = 0  # wall-clock time of the newest packet processed

    def _send_events(self) -> None:
        batch = self.batch.take()
        if not batch:
            return
        payload = channel.encode_events(batch)
        if self.chan.send(channel.EVENTS, payload, droppable=True):
            self.counters["events"] += len(batch)
        else:
            self.counters["events_dropped"] += len(batch)

    def _send_stats(self) -> None:
        now = metrics.snapshot()
        delta = {k: v - self._baseline.get(k, 0) for k, v in now.items() if v != self._baseline.get(k, 0)}
        delta["capture.ring_pending_bytes"] = self.reader.pending_bytes()
        self.chan.send(channel.STATS, json.dumps(delta).encode(), droppable=False)
        self.chan.send(channel.TOP, json.dumps(self.top.snapshot()).encode(), droppable=True)

    def _learn_sockets(self) -> None:
        """Socket owners read with the packets: known before any of those packets makes an event."""
        records = self.reader.sockets
        if self.processes is not None:
            add = self.processes.add_record
            for raw in records:
                add(raw)
        records.clear()

    def _process(self, packets: list[Packet]) -> None:
        self._newest_ns = max(self._newest_ns, self.steps.process(packets))

    def _process_in_order(self, packets: list[Packet], offset: int) -> None:
        """Packets and TLS plaintext records in the ring's order: a handshake's packets come before its plaintext."""
        plain, self.reader.plaintext = self.reader.plaintext, []
        if self.plaintext is None:
            self._process(packets)
            return
        done = 0
        for before, raw in plain:
            if before > done:
                self._process(packets[done:before])
                done = before
            self.plaintext.record(raw, offset)
        if done < len(packets):
            self._process(packets[done:])

    def run(self) -> int:
        wiring.tune_gc()
        poller = select.epoll()
        poller.register(self.reader.fileno(), select.EPOLLIN)
        poller.register(self.control_fd, select.EPOLLIN | select.EPOLLHUP)
        offset = boot_offset_ns()
        now = time.monotonic()
        next_tick = now + WORKER_TICK_S
        next_stats = now
        next_offset = now + 1.0
        stopping = False
        while not stopping:
            packets = self.reader.read(READ_BATCH, offset)
            if self.reader.sockets:
                self._learn_sockets()
            if self.reader.plaintext:
                self._process_in_order(packets, offset)
            elif packets:
                self._process(packets)
            else:
                for fd, _ in poller.poll(WORKER_POLL_S):
                    if fd == self.control_fd:
                        stopping = True
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick = now + WORKER_TICK_S
            if now >= next_offset:
                offset = boot_offset_ns()
                next_offset = now + 1.0
            if now >= next_stats:
                self._send_stats()
                next_stats = now + WORKER_STATS_S
        self._finish(offset)
        poller.close()
        return 0

    def _tick(self) -> None:
        wall = time.time_ns()
        expire_at = wall
        if self._newest_ns and self.reader.pending_bytes():
            # Behind on the ring: time is where the packets are, or a backlog longer than
            # transaction_timeout would expire live connections with their requests in flight.
            expire_at = min(wall, self._newest_ns + int(WORKER_TICK_S * 1e9))
        self.dispatcher.expire(expire_at)
        if self.plaintext is not None:
            self.plaintext.expire(expire_at)
        self.joiner.expire(expire_at)
        self._send_events()
        self.chan.flush()
        if self.dump is not None:
            self.dump.flush()

    def _finish(self, offset: int) -> None:
        """Drain what the kernel wrote before the filters went, then close every session.

        The ring is read until it is empty or the stop budget's share for it ran out; what is left then is
        counted (stop_unread_bytes) and said, not lost silently."""
        deadline = time.monotonic() + self.drain_s
        while True:
            packets = self.reader.read(READ_BATCH, offset)
            self._learn_sockets()
            if not packets and not self.reader.plaintext:
                break
            self._process_in_order(packets, offset)
            if time.monotonic() >= deadline:
                break
        unread = self.reader.pending_bytes()
        if unread:
            self.counters["stop_unread_bytes"] += unread
            log.warning("capture worker: %d captured bytes were still in the ring at stop and are not decoded "
                        "(capture.stop_unread_bytes; a longer packetbeat.shutdown_timeout gives more time)", unread)
        self.dispatcher.close_all(time.time_ns())
        if self.plaintext is not None:
            self.plaintext.close_all(time.time_ns())
        self._send_events()
        if self.dump is not None:
            self.dump.close()
            self.counters["dump_packets"] = self.dump.packets
            self.counters["dump_errors"] = self.dump.errors
        self._send_stats()
        self.chan.send(channel.DONE, b"", droppable=False)
        self.chan.drain(time.monotonic() + 0.5)


def _worker_main(setup: WorkerSetup, index: int, ring_fd: int, chan_fd: int, control_fd: int,
                 close_fds: list[int]) -> NoReturn:
    channel.run_child(f"capture worker {index}", close_fds,
                      lambda: CaptureWorker(setup, ring_fd, chan_fd, control_fd).run())


# ---------------------------------------------------------------------------------------------------------------
# the parent's side
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class WorkerHandle:
    index: int
    pid: int
    reader: channel.ChannelReader
    control_fd: int
    stats: dict[str, int] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)  # its last TransactionStats snapshot
    done: bool = False  # said goodbye: it stopped because it was asked to
    exited: bool = False


EventSink = Callable[[list[EncodedEvent]], None]


class WorkerPool:
    """The parent's handles on its capture workers."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.workers: list[WorkerHandle] = []
        # Workers killed at stop: their open sessions and whatever their ring still held are lost.
        self.counters = metrics.register("capture.workers", ("killed",))

    def fork(self, ring_fds: list[int]) -> None:
        """One worker per ring.  Call before any thread or netlink socket exists: forks inherit them."""
        parent_fds: list[int] = []
        for index, ring_fd in enumerate(ring_fds):
            chan_r, chan_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
            channel.enlarge_pipe(chan_w)
            parent_fds += [chan_r, ctl_w]
            pid = os.fork()
            if pid == 0:
                _worker_main(self.setup, index, ring_fd, chan_w, ctl_r, [*parent_fds, *self.setup.close_fds])
            os.close(chan_w)
            os.close(ctl_r)
            self.workers.append(WorkerHandle(index, pid, channel.ChannelReader(chan_r), ctl_w))

    def read(self, worker: WorkerHandle, sink: EventSink) -> bool:
        """Hand what `worker` sent to `sink`; True when its channel reached end of file."""
        try:
            messages = worker.reader.read()
        except ValueError as exc:
            log.error("capture worker %d: %s", worker.index, exc)
            messages = []
            worker.reader.eof = True
        for kind, payload in messages:
            if kind == channel.EVENTS:
                sink(channel.decode_events(payload))
            elif kind == channel.STATS:
                with contextlib.suppress(ValueError):
                    worker.stats = json.loads(payload)
            elif kind == channel.TOP:
                with contextlib.suppress(ValueError):
                    worker.top = json.loads(payload)
            elif kind == channel.DONE:
                worker.done = True
        if worker.reader.eof:
            self.reap(worker)
        return worker.reader.eof

    def reap(self, worker: WorkerHandle, block: bool = False) -> None:
        if worker.exited:
            return
        try:
            pid, _status = os.waitpid(worker.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            worker.exited = True
            return
        if pid:
            worker.exited = True

    def totals(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for worker in self.workers:
            metrics.merge(total, worker.stats)
        return total

    def ask_to_stop(self) -> None:
        """Closing the control pipe is the stop request: a worker drains its ring and says goodbye."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                os.close(worker.control_fd)

    def collect(self, deadline: float, sink: EventSink) -> None:
        """Read until every worker said goodbye or `deadline`; kill the late ones, reap all."""
        pending = [w for w in self.workers if not w.reader.eof]
        while pending and time.monotonic() < deadline:
            fds = [w.reader.fd for w in pending]
            readable, _, _ = select.select(fds, [], [], max(0.0, min(0.05, deadline - time.monotonic())))
            for worker in pending:
                if worker.reader.fd in readable:
                    self.read(worker, sink)
            pending = [w for w in pending if not w.reader.eof]
        for worker in self.workers:
            if not worker.reader.eof:
                self.counters["killed"] += 1
                log.warning("capture worker %d did not stop in time; killing it: its open connections and the "
                            "%d bytes its ring held at its last report are lost (capture.workers.killed)",
                            worker.index, worker.stats.get("capture.ring_pending_bytes", 0))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self.reap(worker, block=True)
            with contextlib.suppress(OSError):
                os.close(worker.reader.fd)

    def abandon(self) -> None:
        """After a failed start: stop whatever was forked, without reading it."""
        self.ask_to_stop()
        for worker in self.workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
