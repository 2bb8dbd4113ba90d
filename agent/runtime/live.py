"""Live capture: the eBPF program, worker processes decoding its rings, one publisher.

Process layout:

- the parent loads the program (BCC), forks the workers, then attaches TC
  filters, follows interfaces appearing and disappearing (netlink), reads
  the kernel counters and the flow table, publishes events (a publisher
  thread, so a slow output never stalls it), shows the status line and owns
  the signals;
- each worker inherits one ring's fd, maps it (agent/capture/ring.py) and
  runs the same transport, protocols and event builder as file replay, on
  the wall clock; it sends encoded events to the parent in batches over a
  bounded pipe (agent/capture/channel.py) and never blocks on it: what does
  not fit is dropped and counted.

The kernel steers each flow to one ring (TCP by 5-tuple, the rest by address
pair), so both directions of a connection meet in one worker.

Stopping (SIGINT/SIGTERM): TC filters are removed first, then the workers
drain their rings and expire their sessions, then the flows get their final
report and the output its last flush (bounded by packetbeat.shutdown_timeout).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import select
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from agent import metrics
from agent.capture import channel, preflight
from agent.capture.chunks import CHUNK_COUNTERS, ChunkJoiner
from agent.capture.clock import boot_offset_ns
from agent.capture.packet import F_LAST_CHUNK, IPPROTO_TCP
from agent.capture.record import COUNTER_NAMES, DROP_COUNTERS
from agent.capture.ring import RingReader, ring_size_bytes
from agent.config.load import AgentConfig
from agent.events.builder import AgentIdentity, EventSettings
from agent.publisher.pipeline import Pipeline, PublishTimeout
from agent.publisher.types import EncodedEvent
from agent.runtime import wiring

log = logging.getLogger("pktbeat")

# Exit codes, the same values as agent.cli.main.Exit.
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_PUBLISH_TIMEOUT = 3
EXIT_NO_BPF = 4
EXIT_NO_PRIVILEGES = 5
EXIT_NO_HEADERS = 6
EXIT_NO_INTERFACE = 7
EXIT_OUTPUT = 8

PREFLIGHT_EXIT = {
    preflight.Missing.BPF: EXIT_NO_BPF,
    preflight.Missing.PRIVILEGES: EXIT_NO_PRIVILEGES,
    preflight.Missing.HEADERS: EXIT_NO_HEADERS,
}

WORKER_TICK_S = 0.1  # transaction timeouts and event batches
WORKER_STATS_S = 1.0
WORKER_POLL_S = 0.01  # the ring is written without wake-ups: this bounds the latency
WORKER_DRAIN_S = 0.5  # at stop, time to empty the ring
WORKER_STOP_S = 1.2  # the parent waits this long for workers at stop
READ_BATCH = 2048
EVENT_BATCH = 512
COUNTERS_S = 1.0
RECONCILE_S = 5.0  # safety net besides netlink notifications
SILENCE_S = 30.0
RETRY_FAILED_S = 60.0  # an interface that failed to attach is tried again after this
SHUTDOWN_GRACE_S = 0.5

WORKER_COUNTERS = ("records", "bad_records", "packets", "events", "events_dropped", "dump_packets", "dump_errors")
PARENT_COUNTERS = ("events_received", "worker_failures")

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17


@dataclass
class LiveOptions:
    dump: str | None = None
    status: bool | None = None  # None: when stderr is a terminal


# ---------------------------------------------------------------------------------------------------------------
# worker process
# ---------------------------------------------------------------------------------------------------------------


class _Worker:
    """Runs in a forked process: one ring in, encoded events out."""

    def __init__(self, index: int, config: AgentConfig, identity: AgentIdentity, ring_fd: int, ring_size: int,
                 chan_fd: int, control_fd: int, dump_path: str | None) -> None:
        self.index = index
        self.config = config
        self.control_fd = control_fd
        self._baseline = metrics.snapshot()
        self.counters = metrics.register("capture", WORKER_COUNTERS)
        self.joiner = ChunkJoiner(metrics.register("capture.chunks", CHUNK_COUNTERS))
        self.builder = wiring.event_builder(config, identity)
        self.dispatcher = wiring.dispatcher(config, self._emit)
        self.reader = RingReader(ring_fd, ring_size)
        self.chan = channel.ChannelWriter(chan_fd)
        self.dump = None
        if dump_path:
            from agent.capture.dump import DumpWriter

            self.dump = DumpWriter(dump_path)
        self._batch: list[EncodedEvent] = []
        self._newest_ns = 0  # wall-clock time of the newest packet processed

    def _emit(self, txn: Any) -> None:
        event = self.builder.transaction_event(txn)
        if event is None:
            return
        self._batch.append(self.builder.encode(event, self.builder.index_for(event["type"])))
        if len(self._batch) >= EVENT_BATCH:
            self._send_events()

    def _send_events(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        self._batch = []
        payload = struct.pack("<I", len(batch)) + pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        if self.chan.send(channel.EVENTS, payload, droppable=True):
            self.counters["events"] += len(batch)
        else:
            self.counters["events_dropped"] += len(batch)

    def _send_stats(self) -> None:
        now = metrics.snapshot()
        delta = {k: v - self._baseline.get(k, 0) for k, v in now.items() if v != self._baseline.get(k, 0)}
        delta["capture.ring_pending_bytes"] = self.reader.pending_bytes()
        self.chan.send(channel.STATS, json.dumps(delta).encode(), droppable=False)

    def _process(self, packets: list[Any]) -> None:
        handle = self.dispatcher.handle
        joiner = self.joiner
        waiting = joiner.waiting
        dump = self.dump
        counters = self.counters
        counters["records"] += len(packets)
        whole = 0
        if packets:
            last = packets[-1].ts_ns
            self._newest_ns = max(self._newest_ns, last)
        for pkt in packets:
            if pkt.l4proto != IPPROTO_TCP and (waiting or not pkt.flags & F_LAST_CHUNK):
                pkt = joiner.add(pkt)
                if pkt is None:
                    continue
            whole += 1
            if dump is not None:
                dump.write(pkt)
            handle(pkt)
        counters["packets"] += whole

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
            if packets:
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
        self.joiner.expire(expire_at)
        self._send_events()
        self.chan.flush()
        if self.dump is not None:
            self.dump.flush()

    def _finish(self, offset: int) -> None:
        """Drain what the kernel wrote before the filters went, then close every session."""
        deadline = time.monotonic() + WORKER_DRAIN_S
        while time.monotonic() < deadline:
            packets = self.reader.read(READ_BATCH, offset)
            if not packets:
                break
            self._process(packets)
        self.dispatcher.close_all(time.time_ns())
        self._send_events()
        if self.dump is not None:
            self.dump.close()
            self.counters["dump_packets"] = self.dump.packets
            self.counters["dump_errors"] = self.dump.errors
        self._send_stats()
        self.chan.send(channel.DONE, b"", droppable=False)
        self.chan.drain(time.monotonic() + 0.5)


def _worker_entry(index: int, config: AgentConfig, identity: AgentIdentity, ring_fd: int, ring_size: int,
                  chan_fd: int, control_fd: int, dump_path: str | None, close_fds: list[int]) -> NoReturn:
    code = 1
    try:
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        # The parent coordinates shutdown: a terminal's Ctrl-C reaches the whole group.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(-1)
        code = _Worker(index, config, identity, ring_fd, ring_size, chan_fd, control_fd, dump_path).run()
    except BaseException:
        log.exception("capture worker %d failed", index)
    finally:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)


@dataclass
class _WorkerHandle:
    index: int
    pid: int
    reader: channel.ChannelReader
    control_fd: int
    stats: dict[str, int] = field(default_factory=dict)
    done: bool = False
    exited: bool = False


# ---------------------------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _IfaceState:
    name: str
    last_seen: int = 0
    last_change: float = 0.0
    silent_warned: bool = False


class LiveRunner:
    def __init__(self, config: AgentConfig, options: LiveOptions) -> None:
        self.config = config
        self.options = options
        self.workers: list[_WorkerHandle] = []
        self.stats = metrics.register("live", PARENT_COUNTERS)
        self._stop_requests = 0
        self._report_requested = False
        self._failure: int | None = None
        self._ifaces: dict[int, _IfaceState] = {}
        self._history: dict[str, list[int]] = {}  # counters of interfaces that went away, by name
        self._kernel_totals: list[int] = [0] * len(COUNTER_NAMES)
        self._kernel_by_if: dict[int, list[int]] = {}
        self._failed_ifaces: dict[int, tuple[str, float, str]] = {}  # ifindex -> (name, when, reason)
        self._status_prev: tuple[float, list[int], int] | None = None
        self._status_on = False
        self._publish_timeout = False
        self.kernel: Any = None
        self.tc: Any = None
        self.flow_source: Any = None
        self.reporter: Any = None

    # -- entry point -----------------------------------------------------------------

    def run(self) -> int:
        try:
            preflight.run_all()
        except preflight.PreflightError as exc:
            self._say(exc.message)
            return PREFLIGHT_EXIT[exc.missing]
        from agent.capture.devices import DeviceSpec, DeviceSpecError, list_devices

        interfaces = self.config.interfaces
        try:
            self.spec = DeviceSpec.parse(interfaces.device, interfaces.ignore_devices, list_devices())
        except DeviceSpecError as exc:
            self._say(f"packetbeat.interfaces.device: {exc}")
            return EXIT_NO_INTERFACE
        if interfaces.bpf_filter:
            log.warning("packetbeat.interfaces.bpf_filter is ignored: the kernel program filters by the "
                        "protocols' ports")
        # From here a signal only sets a flag: a stop during the (slow) compile is honoured right after it,
        # and never leaves filters behind.
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGUSR1, self._on_report_signal)
        try:
            self._start()
        except _StartError as exc:
            self._say(exc.message)
            self._cleanup_after_failed_start()
            return exc.code
        except BaseException:
            self._cleanup_after_failed_start()
            raise
        from agent.runtime.monitoring import MonitoringServer

        monitor = MonitoringServer(self.config.http, self._all_counters,
                                   {"name": self.config.name or socket.gethostname(), "mode": "live"})
        monitor.start()
        try:
            self._loop()
        finally:
            monitor.stop()
            code = self._shutdown()
        return code

    def _say(self, message: str) -> None:
        sys.stderr.write(f"pktbeat: {message}\n")
        sys.stderr.flush()

    # -- start -------------------------------------------------------------------------

    def _start(self) -> None:
        from agent.capture.kernel import KernelLoadError, KernelProgram, KernelSettings, effective_workers

        config = self.config
        workers = effective_workers(config.interfaces.workers)
        ring_bytes = ring_size_bytes(config.interfaces.buffer_size_mb)
        flows_on = config.flows is not None
        settings = KernelSettings(
            workers=workers, ring_bytes=ring_bytes,
            max_flows=config.flows.max_flows if config.flows is not None else 1024,
            snaplen=config.interfaces.snaplen, icmp=wiring.icmp_enabled(config), flows=flows_on,
            ports=wiring.kernel_port_map(config),
        )
        started = time.monotonic()
        try:
            self.kernel = KernelProgram(settings)
        except KernelLoadError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise _StartError(EXIT_NO_BPF, f"the eBPF program could not be loaded: {first}") from None
        log.info("eBPF program loaded in %.1fs: %d worker(s), %d MiB ring each, %d port(s) matched in the kernel%s",
                 time.monotonic() - started, workers, ring_bytes >> 20, len(settings.ports),
                 ", ICMP" if settings.icmp else "")
        self.identity = wiring.agent_identity(config)
        self.builder = wiring.event_builder(config, self.identity)
        try:
            self.output = wiring.make_output(config)
        except Exception as exc:
            raise _StartError(EXIT_OUTPUT, f"output error: {exc}") from None
        if self.options.dump:
            from agent.capture import dump

            try:
                dump.create(self.options.dump)
            except OSError as exc:
                raise _StartError(EXIT_OUTPUT, f"--dump {self.options.dump}: {exc.strerror}") from None
        self._fork_workers(workers, ring_bytes)
        # Only after forking: no thread (the pipeline's sender) and no netlink socket may be inherited.
        self.pipeline = _live_pipeline(config, self.output)
        self._start_tc()
        if flows_on:
            self._start_flows()

    def _fork_workers(self, count: int, ring_bytes: int) -> None:
        parent_fds: list[int] = []
        for index in range(count):
            chan_r, chan_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
            channel.enlarge_pipe(chan_w)
            parent_fds += [chan_r, ctl_w]
            pid = os.fork()
            if pid == 0:
                _worker_entry(index, self.config, self.identity, self.kernel.ring_fds[index], ring_bytes, chan_w,
                              ctl_r, self.options.dump, parent_fds)
            os.close(chan_w)
            os.close(ctl_r)
            self.workers.append(_WorkerHandle(index, pid, channel.ChannelReader(chan_r), ctl_w))

    def _start_tc(self) -> None:
        from agent.capture.tc import TcManager

        state = Path(self.config.path.data) / "pktbeat-tc.json"
        self.tc = TcManager(self.kernel.ingress_fd, self.kernel.egress_fd, state_file=state)
        self.tc.sweep()
        self._watch = _LinkWatcher()
        self._reconcile()
        names = sorted(state.name for state in self._ifaces.values())
        if names:
            log.info("capturing on %d interface(s): %s (device: %s)", len(names), ", ".join(names),
                     self.spec.describe())
        else:
            log.warning("no interface to capture on yet (device: %s); waiting for one to appear",
                        self.spec.describe())

    def _start_flows(self) -> None:
        from agent.capture.kernel_flows import KernelFlowSource

        assert self.config.flows is not None
        self.flow_source = KernelFlowSource(self.kernel.flow_map())
        try:
            from agent.flows.reporter import FlowReporter  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            log.warning("flow reporting is not available in this build (agent.flows.reporter missing); "
                        "flows are counted in the kernel but not published")
            return
        self.reporter = FlowReporter(self.config.flows, self.flow_source, self._publish_flow)

    def _cleanup_after_failed_start(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(OSError):
                os.close(worker.control_fd)
        for worker in self.workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
        if self.tc is not None:
            self.tc.detach_all()
        if self.kernel is not None:
            self.kernel.close()

    # -- interfaces ------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Attach what the device setting selects now; forget what went away."""
        from agent.capture.devices import list_devices
        from agent.capture.tc import TcError

        try:
            devices = list_devices(self.tc.ipr)
        except Exception as exc:
            log.warning("cannot list interfaces: %s", exc)
            return
        present = {d.index: d for d in devices}
        wanted = {d.index: d for d in self.spec.select(devices)}
        for ifindex in list(self._ifaces):
            state = self._ifaces[ifindex]
            device = present.get(ifindex)
            if ifindex in wanted and device is not None and device.name == state.name:
                continue
            self._forget_iface(ifindex, gone=device is None)
        now = time.monotonic()
        for ifindex, device in wanted.items():
            if ifindex in self._ifaces:
                continue
            failed = self._failed_ifaces.get(ifindex)
            if failed is not None and failed[0] == device.name and now - failed[1] < RETRY_FAILED_S:
                continue  # retried later, or at once if it is recreated (new ifindex) or renamed
            try:
                # The link-header length first: the program must not parse a tun device as Ethernet.
                self.kernel.register_iface(ifindex, device.link_len)
                self.tc.attach(ifindex, device.name, ingress_only=device.ingress_only)
            except Exception as exc:
                reason = exc.reason if isinstance(exc, TcError) else str(exc)
                again = failed is not None and failed[2] == reason
                (log.debug if again else log.warning)("cannot attach to %s: %s; skipping it", device.name, reason)
                self._failed_ifaces[ifindex] = (device.name, now, reason)
                with contextlib.suppress(Exception):
                    self.kernel.unregister_iface(ifindex)
                continue
            self._ifaces[ifindex] = _IfaceState(device.name, 0, now)
            self._failed_ifaces.pop(ifindex, None)
            if self._started_capture():
                log.info("attached to %s (ifindex %d, %s%s)", device.name, ifindex, device.kind,
                         ", ingress only" if device.ingress_only else "")
        if not self.spec.any:
            for name in self.spec.names:
                match = [d for d in devices if d.name == name]
                if match and not match[0].attachable and match[0].index not in self._failed_ifaces:
                    log.warning("cannot attach to %s: %s", name, match[0].reason)
                    self._failed_ifaces[match[0].index] = (name, float("inf"), match[0].reason)
        for ifindex in list(self._failed_ifaces):
            if ifindex not in present:
                del self._failed_ifaces[ifindex]

    def _started_capture(self) -> bool:
        return getattr(self, "_loop_started", False)

    def _forget_iface(self, ifindex: int, gone: bool) -> None:
        state = self._ifaces.pop(ifindex)
        if not gone:
            self.tc.detach(ifindex)
        else:
            self.tc.attached.pop(ifindex, None)
        final = self.kernel.unregister_iface(ifindex)
        self._add_history(state.name, final)
        self._kernel_by_if.pop(ifindex, None)
        log.info("%s (ifindex %d) %s; its counters: %s", state.name, ifindex,
                 "went away" if gone else "is no longer selected", _format_counters(final))

    def _add_history(self, name: str, counters: list[int]) -> None:
        total = self._history.setdefault(name, [0] * len(COUNTER_NAMES))
        for i, value in enumerate(counters):
            total[i] += value

    # -- main loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        self._loop_started = True
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        sel = selectors.DefaultSelector()
        for worker in self.workers:
            sel.register(worker.reader.fd, selectors.EVENT_READ, worker)
        sel.register(self._watch.fileno(), selectors.EVENT_READ, "netlink")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        self._status_on = self._status_enabled()
        # On a terminal the status line is rewritten in place: log lines must clear it first.
        status_filter = _StatusLineFilter() if self._status_on and sys.stderr.isatty() else None
        if status_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.addFilter(status_filter)
        now = time.monotonic()
        next_counters = now
        next_reconcile = now + RECONCILE_S
        next_flows = now + 1.0
        metrics_period = self.config.logging.metrics.period if self.config.logging.metrics.enabled else 0.0
        next_metrics = now + metrics_period if metrics_period > 0 else float("inf")
        self._metrics_prev: dict[str, int] = {}
        reconcile_at: float | None = None
        try:
            while self._stop_requests == 0 and self._failure is None:
                timeout = max(0.0, min(next_counters, next_reconcile, next_flows,
                                       reconcile_at if reconcile_at is not None else float("inf")) - time.monotonic())
                for key, _ in sel.select(min(timeout, 0.25)):
                    data = key.data
                    if data == "wake":
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    elif data == "netlink":
                        if self._watch.drain():
                            reconcile_at = time.monotonic() + 0.02  # let a burst of changes settle
                    else:
                        self._read_worker(data, sel)
                now = time.monotonic()
                if reconcile_at is not None and now >= reconcile_at:
                    reconcile_at = None
                    self._reconcile()
                    next_reconcile = now + RECONCILE_S
                if now >= next_reconcile:
                    self._reconcile()
                    next_reconcile = now + RECONCILE_S
                if now >= next_counters:
                    self._poll_counters(now)
                    next_counters = now + COUNTERS_S
                if now >= next_flows:
                    self._tick_flows()
                    next_flows = now + 1.0
                if now >= next_metrics:
                    self._log_metrics()
                    next_metrics = now + metrics_period
                self.pipeline.tick()
                if self._report_requested:
                    self._report_requested = False
                    self._log_report("on SIGUSR1")
        finally:
            if status_filter is not None:
                status_filter.clear()
                for handler in logging.getLogger().handlers:
                    handler.removeFilter(status_filter)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            # A second signal during shutdown: remove the filters and go.
            signal.signal(signal.SIGINT, self._on_forced_stop)
            signal.signal(signal.SIGTERM, self._on_forced_stop)
            sel.close()
            wake_r.close()
            wake_w.close()

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        self._stop_requests += 1
        if self._stop_requests > 1:  # asked twice (e.g. during the compile): go now
            self._on_forced_stop(signum, _frame)

    def _on_report_signal(self, signum: int, _frame: Any) -> None:
        self._report_requested = True

    def _on_forced_stop(self, signum: int, _frame: Any) -> None:
        with contextlib.suppress(Exception):
            if self.tc is not None:
                self.tc.detach_all()
        os._exit(130)

    def _read_worker(self, worker: _WorkerHandle, sel: selectors.BaseSelector | None) -> None:
        try:
            messages = worker.reader.read()
        except ValueError as exc:
            log.error("capture worker %d: %s", worker.index, exc)
            messages = []
            worker.reader.eof = True
        for kind, payload in messages:
            if kind == channel.EVENTS:
                events: list[EncodedEvent] = pickle.loads(memoryview(payload)[4:])
                self.stats["events_received"] += len(events)
                publish = self.pipeline.publish
                for event in events:
                    publish(event)
            elif kind == channel.STATS:
                with contextlib.suppress(ValueError):
                    worker.stats = json.loads(payload)
            elif kind == channel.DONE:
                worker.done = True
        if worker.reader.eof:
            if sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(worker.reader.fd)
            self._reap(worker)
            if not worker.done and self._stop_requests == 0 and self._failure is None:
                self.stats["worker_failures"] += 1
                log.error("capture worker %d exited unexpectedly; stopping (its flows would go undecoded)",
                          worker.index)
                self._failure = EXIT_INPUT

    def _reap(self, worker: _WorkerHandle, block: bool = False) -> None:
        if worker.exited:
            return
        try:
            pid, _status = os.waitpid(worker.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            worker.exited = True
            return
        if pid:
            worker.exited = True

    # -- counters, status, warnings ----------------------------------------------------------

    def _poll_counters(self, now: float, status: bool = True) -> None:
        try:
            by_if = self.kernel.counters()
        except Exception as exc:
            log.debug("reading kernel counters failed: %s", exc)
            return
        self._kernel_by_if = by_if
        totals = [0] * len(COUNTER_NAMES)
        for values in by_if.values():
            for i, v in enumerate(values):
                totals[i] += v
        for values in self._history.values():
            for i, v in enumerate(values):
                totals[i] += v
        self._kernel_totals = totals
        self._check_silence(by_if, now)
        if status and self._status_on:
            self._show_status(now, totals)

    def _check_silence(self, by_if: dict[int, list[int]], now: float) -> None:
        seen_index = COUNTER_NAMES.index("seen")
        active_recently = False
        for ifindex, state in self._ifaces.items():
            seen = by_if.get(ifindex, [0] * len(COUNTER_NAMES))[seen_index]
            if seen != state.last_seen:
                state.last_seen = seen
                state.last_change = now
                if state.silent_warned:
                    log.info("%s sees traffic again", state.name)
                    state.silent_warned = False
            if now - state.last_change < SILENCE_S:
                active_recently = True
        if not active_recently:
            return
        for ifindex, state in self._ifaces.items():
            if state.silent_warned or now - state.last_change < SILENCE_S:
                continue
            if not _is_up(state.name):
                continue
            state.silent_warned = True
            log.warning("%s (ifindex %d) has seen no packet for %ds while other interfaces see traffic; another TC "
                        "program running before pktbeat's (tc filter show dev %s ingress/egress) may be "
                        "consuming it", state.name, ifindex, int(SILENCE_S), state.name)

    def _worker_totals(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for worker in self.workers:
            metrics.merge(total, worker.stats)
        return total

    def _status_enabled(self) -> bool:
        if self.options.status is not None:
            return self.options.status
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

    def _show_status(self, now: float, totals: list[int]) -> None:
        work = self._worker_totals()
        events = self.stats["events_received"]
        prev = self._status_prev
        self._status_prev = (now, list(totals), events)
        if prev is None or now <= prev[0]:
            return
        span = now - prev[0]
        seen_i, matched_i = COUNTER_NAMES.index("seen"), COUNTER_NAMES.index("matched")
        bytes_i = COUNTER_NAMES.index("bytes")
        pps = (totals[seen_i] - prev[1][seen_i]) / span
        mps = (totals[matched_i] - prev[1][matched_i]) / span
        bps = (totals[bytes_i] - prev[1][bytes_i]) * 8 / span
        eps = (events - prev[2]) / span
        ring_drops = sum(totals[COUNTER_NAMES.index(n)] for n in DROP_COUNTERS)
        flows = None
        if self.flow_source is not None and self.config.flows is not None:
            # Live entries: created minus forgotten; when the LRU evicted some, the table is full.
            created = totals[COUNTER_NAMES.index("flow_new")]
            flows = min(max(0, created - self.flow_source.forgotten), self.config.flows.max_flows)
        parts = [
            f"pktbeat {len(self._ifaces)} if",
            f"{_si(pps)} pkt/s {_si(bps)}b/s",
            f"matched {_si(mps)}/s",
            f"decoded {_si(work.get('capture.packets', 0))}",
            f"events {_si(events)} ({_si(eps)}/s)",
        ]
        if flows is not None:
            parts.append(f"flows {_si(flows)}")
        drops = ring_drops + work.get("capture.events_dropped", 0) + metrics.register("pipeline")["queue_full_drops"]
        parts.append(f"drops {_si(drops)}")
        line = " | ".join(parts)
        width = shutil.get_terminal_size((100, 20)).columns
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line[: max(10, width - 1)] + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def _per_interface(self) -> dict[str, list[int]]:
        out = {name: list(values) for name, values in self._history.items()}
        for ifindex, values in self._kernel_by_if.items():
            name = self._ifaces[ifindex].name if ifindex in self._ifaces else ("(unregistered)" if ifindex == 0
                                                                                else f"ifindex {ifindex}")
            if ifindex not in self._ifaces and not any(values):
                continue
            total = out.setdefault(name, [0] * len(COUNTER_NAMES))
            for i, v in enumerate(values):
                total[i] += v
        return out

    def _log_report(self, when: str) -> None:
        with contextlib.suppress(Exception):
            self._poll_counters(time.monotonic(), status=False)
        for name, values in sorted(self._per_interface().items()):
            log.info("capture counters %s, %s: %s", when, name, _format_counters(values))
        work = self._worker_totals()
        log.info("worker counters %s: %s", when,
                 ", ".join(f"{k}={v}" for k, v in sorted(work.items()) if v) or "none")
        if len(self.workers) > 1:
            log.info("records per worker %s: %s", when,
                     ", ".join(f"{w.index}={w.stats.get('capture.records', 0)}" for w in self.workers))
        if self.flow_source is not None:
            created = self._kernel_totals[COUNTER_NAMES.index("flow_new")]
            evicted = self.flow_source.evicted(created)
            log.info("flows %s: %d in the kernel table, %d created, %d ended and forgotten, %d evicted by "
                     "packetbeat.flows.max_flows (%d)%s", when, self.flow_source.last_count, created,
                     self.flow_source.forgotten, evicted, self.config.flows.max_flows if self.config.flows else 0,
                     "" if not evicted else ": raise it, their counts were lost")
        parent = {k: v for k, v in metrics.snapshot().items() if v}
        log.info("agent counters %s: %s", when, ", ".join(f"{k}={v}" for k, v in sorted(parent.items())) or "none")

    def _all_counters(self) -> dict[str, int]:
        """Kernel, worker and parent counters together (the metrics log and the /stats endpoint)."""
        current: dict[str, int] = {f"kernel.{n}": v for n, v in zip(COUNTER_NAMES, self._kernel_totals, strict=True)}
        metrics.merge(current, self._worker_totals())
        metrics.merge(current, metrics.snapshot())
        return current

    def _log_metrics(self) -> None:
        with contextlib.suppress(Exception):
            self._poll_counters(time.monotonic(), status=False)
        current = self._all_counters()
        delta = {k: v - self._metrics_prev.get(k, 0) for k, v in current.items() if v != self._metrics_prev.get(k, 0)}
        self._metrics_prev = current
        if delta:
            log.info("Non-zero metrics in the last %gs: %s", self.config.logging.metrics.period,
                     ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))

    # -- publishing ------------------------------------------------------------------------------

    def _publish_flow(self, event: dict[str, Any]) -> None:
        finished = self.builder.finish(event, self.builder.settings.get("flow", EventSettings()))
        if finished is None:
            return
        self.stats["events_received"] += 1
        self.pipeline.publish(self.builder.encode(finished, self.builder.index_for("flow")))

    def _tick_flows(self) -> None:
        if self.reporter is None:
            return
        try:
            self.reporter.tick(time.time_ns())
        except Exception:
            log.exception("flow reporting failed")

    # -- shutdown ---------------------------------------------------------------------------------

    def _shutdown(self) -> int:
        started = time.monotonic()
        if self.tc is not None:
            try:
                self.tc.detach_all()
            except Exception:
                log.exception("removing the TC filters failed")
        for ifindex in list(self._ifaces):
            with contextlib.suppress(Exception):
                self._add_history(self._ifaces[ifindex].name, self.kernel.unregister_iface(ifindex))
            self._ifaces.pop(ifindex, None)
        self._kernel_by_if = {}
        for worker in self.workers:
            with contextlib.suppress(OSError):
                os.close(worker.control_fd)
        self._collect_workers(time.monotonic() + WORKER_STOP_S)
        if self.reporter is not None:
            try:
                self.reporter.final(time.time_ns())
            except Exception:
                log.exception("the final flow report failed")
        self._close_pipeline()
        self._log_report("at exit")
        if self._status_on and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
        self._watch.close()
        if self.tc is not None:
            self.tc.close()
        self.kernel.close()
        log.info("pktbeat stopped in %.2fs", time.monotonic() - started)
        if self._failure is not None:
            return self._failure
        return EXIT_PUBLISH_TIMEOUT if self._publish_timeout else EXIT_OK

    def _close_pipeline(self) -> None:
        """The last delivery: up to packetbeat.shutdown_timeout, and a short grace when that is 0.

        With shutdown_timeout 0 Packetbeat does not wait for the output; pktbeat
        still gives a fast output (file, console) a moment, and undelivered
        events are then an expected loss (logged), not a failure.
        """
        timeout = self.config.shutdown_timeout
        try:
            self.pipeline.close(time.monotonic() + max(timeout, SHUTDOWN_GRACE_S))
        except PublishTimeout as exc:
            if timeout > 0:
                self._publish_timeout = True
                log.error("%s within packetbeat.shutdown_timeout (%gs)", exc, timeout)
            else:
                log.warning("%s at exit (packetbeat.shutdown_timeout is 0: not waiting)", exc)
        except Exception:
            log.exception("closing the output failed")

    def _collect_workers(self, deadline: float) -> None:
        pending = [w for w in self.workers if not w.reader.eof]
        while pending and time.monotonic() < deadline:
            fds = [w.reader.fd for w in pending]
            readable, _, _ = select.select(fds, [], [], max(0.0, min(0.05, deadline - time.monotonic())))
            for worker in pending:
                if worker.reader.fd in readable:
                    self._read_worker(worker, None)
            pending = [w for w in pending if not w.reader.eof]
        for worker in self.workers:
            if not worker.reader.eof:
                log.warning("capture worker %d did not stop in time; killing it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self._reap(worker, block=True)
            with contextlib.suppress(OSError):
                os.close(worker.reader.fd)


def _live_pipeline(config: AgentConfig, output: Any) -> Pipeline:
    """The pipeline in live mode: publish() never waits for the output (Packetbeat's DropIfFull)."""
    return wiring.make_pipeline(config, output, live=True)


class _StartError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _LinkWatcher:
    """RTNLGRP_LINK notifications: any link change schedules a re-scan of the interfaces."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read every pending notification; True when a link appeared, changed or went away."""
        changed = False
        for _ in range(1024):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                changed = True  # ENOBUFS: notifications were lost; re-scan anyway
                continue
            at = 0
            while at + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, at)
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    changed = True
                if length < 16:
                    break
                at += (length + 3) & ~3
        return changed

    def close(self) -> None:
        self.sock.close()


class _StatusLineFilter(logging.Filter):
    """Clears the status line before a log line is written over it."""

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True

    @staticmethod
    def clear() -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write("\r\x1b[K")


def _is_up(name: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 1)


def _format_counters(values: list[int]) -> str:
    named = dict(zip(COUNTER_NAMES, values, strict=True))
    drops = {n: named[n] for n in DROP_COUNTERS if named[n]}
    main = ("seen", "matched", "sent", "emitted", "unmatched", "no_payload", "not_ip", "malformed", "other_l4",
            "truncated", "fragment", "frag_no_ports", "flow_new", "flow_failed", "bytes")
    text = ", ".join(f"{n}={named[n]}" for n in main if named[n] or n in ("seen", "matched", "emitted"))
    dropped = ", ".join(f"{n}={v}" for n, v in drops.items()) or "none"
    return f"{text}; dropped: {dropped}"


def _si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if isinstance(value, float) else str(value)
