"""File replay on several cores: the file is sharded by flow over forked workers.

`packetbeat.interfaces.workers` (`-w N`) sets the number of workers; 0, the
default, means one per CPU.  Each worker is a `ReplayRunner` of its own
(transport, protocols, flows and event encoding) that reads the whole file
and keeps the frames of its shard: the symmetric flow hash live capture uses
(agent/capture/flowhash.py), so both directions of a connection and the
fragments of a datagram meet in one worker, and every connection's events
keep their order.  Reading and skipping a frame costs a small fraction of
decoding it, so no process has to split the file and pass packets on.

The parent owns the output.  Workers send their encoded events in batches
over a pipe (agent/runtime/channel.py) and block when it is full, so replay
never drops; the parent publishes them as they arrive, draws the progress
bar from the workers' positions (shared memory), and at the end merges their
counters and exit codes.  Stopping (first SIGINT) raises a flag the workers
read between frames; each then flushes like a replay that reached the end of
its input.  A worker dies with the parent (PR_SET_PDEATHSIG).

One process (today's in-process path, no fork) replays when one worker is
configured, when the input is too small to gain from more (AUTO_MIN_BYTES
per worker), when a file is not a regular file (a pipe cannot be read by
every worker), and without -t: real-time replay follows the capture's own
clock, which one process keeps up with.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import mmap
import os
import select
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NoReturn

from agent import metrics
from agent.capture.decode import SUPPORTED_LINKTYPES
from agent.capture.flowhash import ShardedReader
from agent.capture.pcapfile import CaptureFileError, CaptureReader
from agent.config.load import AgentConfig
from agent.events.builder import AgentIdentity
from agent.publisher.pipeline import Pipeline
from agent.publisher.types import EncodedEvent, Outcome
from agent.runtime import channel, wiring
from agent.runtime.exitcodes import Exit
from agent.runtime.progress import Progress
from agent.runtime.progress import wanted as progress_wanted
from agent.runtime.replay import INTERRUPT_GRACE, ReplayOptions, ReplayRunner, close_pipeline

log = logging.getLogger("pktbeat")

MAX_REPLAY_WORKERS = 16  # as live capture's rings
AUTO_MIN_BYTES = 8 << 20  # with workers = 0: at least this much input per worker
EVENT_BATCH = 512  # events per message to the parent
WORKER_QUEUE = 2048  # events a worker's memory queue holds while the parent is busy
PARENT_TICK_S = 0.1  # pipeline timers and progress
PR_SET_PDEATHSIG = 1
# What the parent counts itself instead of summing over the workers (a worker's pipeline hands events to
# the parent's, which counts them again).
PARENT_COUNTERS = ("replay.files",)
PARENT_GROUPS = ("pipeline.",)
# Log lines every worker would print about its own share; the parent prints the total.
_WORKER_QUIET = ("request(s) had no response by the end of the input", "Process watcher disabled")


def replay_workers(config: AgentConfig, options: ReplayOptions) -> int:
    """How many processes replay `options.files` (1: in this process)."""
    configured = config.interfaces.workers
    if not options.topspeed:
        if configured > 1:
            log.info("real-time replay (without -t) runs in one process")
        return 1
    sizes: list[int] = []
    for path in options.files:
        try:
            info = os.stat(path)
        except OSError:
            continue  # the replay reports it
        if not stat.S_ISREG(info.st_mode):
            if configured > 1:
                log.info("%s is not a regular file: replaying in one process", path)
            return 1
        sizes.append(info.st_size)
    cpus = len(os.sched_getaffinity(0))
    if configured <= 0:
        return max(1, min(cpus, MAX_REPLAY_WORKERS, sum(sizes) * max(1, options.loops) // AUTO_MIN_BYTES))
    return min(configured, MAX_REPLAY_WORKERS)


def replay_runner(config: AgentConfig, options: ReplayOptions) -> ReplayRunner | ShardedReplay:
    workers = replay_workers(config, options)
    if workers <= 1:
        return ReplayRunner(config, options)
    return ShardedReplay(config, options, workers)


# ---------------------------------------------------------------------------------------------------------------
# shared between the parent and its workers
# ---------------------------------------------------------------------------------------------------------------


_SLOTS = 3  # per worker: file number, offset in it, frames read from it


class SharedState:
    """An anonymous shared mapping of 64-bit slots: the stop flag, then each worker's position."""

    def __init__(self, workers: int) -> None:
        self._map = mmap.mmap(-1, 8 * (1 + _SLOTS * workers))
        self.slots = memoryview(self._map).cast("q")

    @property
    def stopping(self) -> bool:
        return bool(self.slots[0])

    def stop(self) -> None:
        self.slots[0] = 1

    def report(self, worker: int, file_number: int, offset: int, frames: int) -> None:
        at = 1 + _SLOTS * worker
        self.slots[at + 1] = offset
        self.slots[at + 2] = frames
        self.slots[at] = file_number

    def position(self, worker: int) -> tuple[int, int, int]:
        """(file number, offset, frames read): a torn read only shows a position a moment old."""
        at = 1 + _SLOTS * worker
        return self.slots[at], self.slots[at + 1], self.slots[at + 2]


@dataclass(frozen=True)
class ShardSetup:
    """What every worker inherits at fork."""

    config: AgentConfig
    options: ReplayOptions
    identity: AgentIdentity
    workers: int
    shared: SharedState


# ---------------------------------------------------------------------------------------------------------------
# the worker's side
# ---------------------------------------------------------------------------------------------------------------


class ParentOutput:
    """A replay worker's output: batches of encoded events to the parent, over a pipe that blocks when full.

    The worker's own (memory) pipeline feeds it, so a worker publishes, waits
    and stops exactly as a one-process replay does; the parent's pipeline and
    output acknowledge for real.
    """

    name = "parent"

    def __init__(self, chan: channel.ChannelWriter, on_broken: Callable[[], None]) -> None:
        self.chan = chan
        self.on_broken = on_broken
        self.batch_size = EVENT_BATCH

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        if not self.send(channel.EVENTS, channel.encode_events(batch)):
            return [Outcome.RETRY] * len(batch)
        return [Outcome.ACKED] * len(batch)

    def send(self, kind: int, payload: bytes) -> bool:
        """Queue a message and wait until the pipe has taken it; False when the parent is gone."""
        chan = self.chan
        chan.send(kind, payload, droppable=False)
        chan.drain(float("inf"))  # the parent reads as fast as its output takes events
        if chan.broken:
            self.on_broken()
            return False
        return True

    def close(self) -> None:
        pass


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in _WORKER_QUIET)


def _shard_opener(setup: ShardSetup, index: int, runner: ReplayRunner) -> Callable[[str], CaptureReader]:
    """The worker's `open_capture`: readers of its shard that report their position and watch the stop flag."""
    shared = setup.shared
    opened = [0]

    def open_shard(path: str) -> CaptureReader:
        opened[0] += 1
        number = opened[0]

        def report(offset: int, frames: int) -> bool:
            shared.report(index, number, offset, frames)
            if shared.stopping:
                runner.stop()
                return False
            return True

        shared.report(index, number, 0, 0)
        return ShardedReader(path, index, setup.workers, report)

    return open_shard


def _worker_main(setup: ShardSetup, index: int, chan_fd: int, close_fds: list[int], parent: int) -> NoReturn:
    channel.run_child(f"replay worker {index}", close_fds, lambda: _replay_shard(setup, index, chan_fd, parent),
                      failed=int(Exit.INPUT))


def _replay_shard(setup: ShardSetup, index: int, chan_fd: int, parent: int) -> int:
    """A worker's replay of its shard; its exit code (and counters) go to the parent with DONE."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return int(Exit.INPUT)  # the parent died before the request took effect
    logging.getLogger("pktbeat").addFilter(_QuietFilter())
    chan = channel.ChannelWriter(chan_fd)
    baseline = metrics.snapshot()
    runner: ReplayRunner | None = None

    def parent_gone() -> None:
        if runner is not None:
            runner.stop()

    output = ParentOutput(chan, parent_gone)
    # A memory queue only: the parent's pipeline has the configured queue (and disk queue).
    pipeline = Pipeline(output, max_events=WORKER_QUEUE, flush_min_events=EVENT_BATCH,
                        flush_timeout=PARENT_TICK_S, bulk_max_size=EVENT_BATCH)
    runner = ReplayRunner(setup.config, replace(setup.options, progress=False), pipeline=pipeline,
                          identity=setup.identity)
    runner.open_capture = _shard_opener(setup, index, runner)
    code = int(runner.run())
    now = metrics.snapshot()
    stats = {k: v - baseline.get(k, 0) for k, v in now.items() if v != baseline.get(k, 0)}
    output.send(channel.DONE, json.dumps({"code": code, "stats": stats}).encode())
    return code


# ---------------------------------------------------------------------------------------------------------------
# the parent's side
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    pid: int
    reader: channel.ChannelReader
    code: int | None = None  # its exit code, once it said goodbye
    stats: dict[str, int] = field(default_factory=dict)


class ShardedReplay:
    """The parent of the replay workers: forks them, publishes their events, merges their results."""

    def __init__(self, config: AgentConfig, options: ReplayOptions, workers: int) -> None:
        self.config = config
        self.options = options
        self.stats = metrics.register("replay", ("files", "packets", "undecoded", "events", "read_errors"))
        self._stop = False
        self.files = [path for path in options.files if self._readable(path)]
        self.identity = wiring.agent_identity(config)
        self.shared = SharedState(workers)
        self.workers: list[_Worker] = []
        self.published = 0
        # Fork before any thread exists (the pipeline starts its sender): a fork keeps only its own thread.
        # Start-up objects are frozen first: a collection in a worker then never walks (and so never
        # copies) the memory it shares with the parent.
        wiring.tune_gc()
        self._fork(ShardSetup(config, replace(options, files=self.files), self.identity, workers, self.shared))
        try:
            self.output = wiring.make_output(config)
            self.pipeline: Pipeline = wiring.make_pipeline(config, self.output)
        except BaseException:
            self._abandon()
            raise

    def stop(self) -> None:
        """Called from the signal handler: sets flags only."""
        self._stop = True
        self.shared.stop()
        timeout = self.config.shutdown_timeout
        self.pipeline.interrupt(timeout if timeout > 0 else INTERRUPT_GRACE)

    def _readable(self, path: str) -> bool:
        """Check a file once here, where one process reports it, not in every worker."""
        try:
            with CaptureReader(path) as reader:
                linktype = reader.info.linktype
        except (CaptureFileError, OSError) as exc:
            log.error("%s", exc)
            self.stats["read_errors"] += 1
            return False
        if linktype not in SUPPORTED_LINKTYPES:
            log.error("%s: unsupported link type %d (supported: %s)", path, linktype,
                      ", ".join(sorted(set(SUPPORTED_LINKTYPES.values()))))
            self.stats["read_errors"] += 1
            return False
        return True

    def _fork(self, setup: ShardSetup) -> None:
        parent_fds: list[int] = []
        parent = os.getpid()
        for index in range(setup.workers):
            chan_r, chan_w = os.pipe()
            channel.enlarge_pipe(chan_w)
            parent_fds.append(chan_r)
            pid = os.fork()
            if pid == 0:
                _worker_main(setup, index, chan_w, parent_fds, parent)
            os.close(chan_w)
            self.workers.append(_Worker(index, pid, channel.ChannelReader(chan_r)))

    def _abandon(self) -> None:
        self.shared.stop()
        for worker in self.workers:
            with contextlib.suppress(OSError):
                os.close(worker.reader.fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> Exit:
        log.info("Process watcher disabled when file input is used")
        log.info("replaying with %d workers", len(self.workers))
        progress = _ProgressView(self, progress_wanted(self.options.progress))
        code = Exit.OK
        try:
            self._collect(progress)
            code = self._finish()
        finally:
            progress.close()
            code = self._close(code)
        return code

    def _collect(self, progress: _ProgressView) -> None:
        pending = {w.reader.fd: w for w in self.workers}
        next_tick = time.monotonic()
        while pending:
            readable, _, _ = select.select(list(pending), [], [], PARENT_TICK_S)
            for fd in readable:
                worker = pending[fd]
                self._read(worker)
                if worker.reader.eof:
                    del pending[fd]
                    self._reap(worker)
            now = time.monotonic()
            if now >= next_tick:
                self.pipeline.tick()
                progress.update()
                next_tick = now + PARENT_TICK_S

    def _read(self, worker: _Worker) -> None:
        try:
            messages = worker.reader.read()
        except ValueError as exc:
            log.error("replay worker %d: %s", worker.index, exc)
            worker.reader.eof = True
            return
        for kind, payload in messages:
            if kind == channel.EVENTS:
                events = channel.decode_events(payload)
                self.pipeline.publish_many(events)
                self.published += len(events)
            elif kind == channel.DONE:
                done = json.loads(payload)
                worker.code = int(done["code"])
                worker.stats = done["stats"]

    def _reap(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            os.close(worker.reader.fd)
        try:
            _pid, status = os.waitpid(worker.pid, 0)
        except ChildProcessError:
            status = 0
        if worker.code is None:
            log.error("replay worker %d ended without finishing (wait status %d); its events so far were published",
                      worker.index, status)

    def _finish(self) -> Exit:
        """Merge the workers' counters into this process's and their exit codes into one."""
        totals: dict[str, int] = {}
        for worker in self.workers:
            metrics.merge(totals, worker.stats)
        for name, value in totals.items():
            prefix, _, counter = name.rpartition(".")
            if name not in PARENT_COUNTERS and prefix and not name.startswith(PARENT_GROUPS):
                metrics.register(prefix).inc(counter, value)
        self.stats["files"] += len(self.files) * max(1, self.options.loops)
        pending = totals.get("replay.pending_at_end", 0)
        if pending:
            log.info("%d request(s) had no response by the end of the input and were not published", pending)
        codes = [w.code for w in self.workers]
        if any(c is None for c in codes) or self.stats["read_errors"] or Exit.INPUT in codes:
            return Exit.INPUT
        if Exit.PUBLISH_TIMEOUT in codes:  # a worker was stopped with events still queued (it said so)
            return Exit.PUBLISH_TIMEOUT
        return Exit.OK

    def _close(self, code: Exit) -> Exit:
        return close_pipeline(self.pipeline, self.config.shutdown_timeout, code)



class _ProgressView:
    """The progress bar of a sharded replay: each file as far as its slowest worker has read it."""

    def __init__(self, replay: ShardedReplay, enabled: bool) -> None:
        self.enabled = enabled
        self.replay = replay
        self.shared = replay.shared
        self.workers = len(replay.workers)
        self.files = [path for _ in range(max(1, replay.options.loops)) for path in replay.files]
        self.number = 0  # the file shown (1-based, as the workers count)
        self.bar: Progress | None = None

    def update(self) -> None:
        if not self.enabled or not self.files:
            return
        number, offset, frames = min(self.shared.position(i) for i in range(self.workers))
        if number != self.number:
            if self.bar is not None:
                self.bar.done(events=self.replay.published)
                self.bar = None
            self.number = number
            if 1 <= number <= len(self.files):
                path = self.files[number - 1]
                self.bar = Progress(path, _size(path), enabled=True)
        if self.bar is not None:
            self.bar.update(offset, frames, self.replay.published)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.done(events=self.replay.published)
            self.bar = None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
