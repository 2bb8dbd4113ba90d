"""Live capture: the supervisor that owns the eBPF program, the workers, the publisher and the signals.

Process layout:

- the parent (`LiveRunner`) loads the program (BCC), forks the workers
  (agent/runtime/worker.py), then attaches TC filters and follows interfaces
  appearing and disappearing (agent/runtime/interfaces.py), reads the kernel
  counters and the flow table, publishes events (a publisher thread, so a slow
  output never stalls it), shows the status line (agent/runtime/status.py) and
  owns the signals;
- each worker decodes one ring and sends encoded events back in batches.

Stopping (SIGINT/SIGTERM): TC filters are removed first, then the workers
drain their rings and expire their sessions, then the flows get their final
report and the output its last flush (bounded by packetbeat.shutdown_timeout).
A second signal removes the filters and exits at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from agent import metrics
from agent.capture import preflight
from agent.capture.ring import ring_size_bytes
from agent.config.load import AgentConfig
from agent.events.builder import EventSettings
from agent.publisher.pipeline import Pipeline, PublishTimeout
from agent.publisher.types import EncodedEvent
from agent.runtime import wiring
from agent.runtime.exitcodes import Exit
from agent.runtime.interfaces import Interfaces, LinkWatcher
from agent.runtime.status import LiveCounters, StatusLine
from agent.runtime.worker import WorkerHandle, WorkerPool, WorkerSetup, stop_budget

if TYPE_CHECKING:
    from agent.capture.kernel import KernelProgram
    from agent.events.builder import EventBuilder
    from agent.flows.reporter import FlowReporter
    from agent.procs.flows import FlowProcesses
    from agent.publisher.types import Output

log = logging.getLogger("pktbeat")

PREFLIGHT_EXIT = {
    preflight.Missing.BPF: Exit.NO_BPF,
    preflight.Missing.PRIVILEGES: Exit.NO_PRIVILEGES,
    preflight.Missing.HEADERS: Exit.NO_HEADERS,
}

WORKER_SLACK_S = 0.3  # a worker notices the stop request after its current batch
COUNTERS_S = 1.0
RECONCILE_S = 5.0  # safety net besides netlink notifications
FLOWS_TICK_S = 1.0
SHUTDOWN_GRACE_S = 0.5
TLS_POLL_S = 0.05  # new programs that may map a TLS library not probed yet


@dataclass
class LiveOptions:
    dump: str | None = None
    status: bool | None = None  # None: when stderr is a terminal


class StartError(Exception):
    """Start-up failed in a way the operator can fix: one line and an exit code."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LiveRunner:
    def __init__(self, config: AgentConfig, options: LiveOptions) -> None:
        self.config = config
        self.options = options
        self.kernel: KernelProgram | None = None
        self.pool: WorkerPool | None = None
        self.interfaces = Interfaces(None, None, None)
        self.counters = LiveCounters(self.interfaces, config.flows.max_flows if config.flows is not None else 0)
        self.status = StatusLine(options.status)
        self.builder: EventBuilder | None = None
        self.output: Output | None = None
        self.pipeline: Pipeline | None = None
        self.reporter: FlowReporter | None = None
        self.watcher: LinkWatcher | None = None
        self.flow_processes: FlowProcesses | None = None
        self._stop_requests = 0
        self._report_requested = False
        self._failure: Exit | None = None
        self._publish_timeout = False

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
            self.interfaces.spec = DeviceSpec.parse(interfaces.device, interfaces.ignore_devices, list_devices())
        except DeviceSpecError as exc:
            self._say(f"packetbeat.interfaces.device: {exc}")
            return Exit.NO_INTERFACE
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
        except StartError as exc:
            self._say(exc.message)
            self._cleanup_after_failed_start()
            return exc.code
        except BaseException:
            self._cleanup_after_failed_start()
            raise
        from agent.runtime.monitoring import MonitoringServer, live_sources

        monitor = MonitoringServer(self.config.http, self.counters.snapshot,
                                   {"name": self.config.name or socket.gethostname(), "mode": "live"},
                                   sources=live_sources(self.counters, self.pipeline, self.pool,
                                                        [p.name for p in self.config.protocols]))
        monitor.start()
        try:
            self._loop()
        finally:
            monitor.stop()
            code = self._shutdown()
        return code

    @staticmethod
    def _say(message: str) -> None:
        sys.stderr.write(f"pktbeat: {message}\n")
        sys.stderr.flush()

    # -- start -------------------------------------------------------------------------

    def _start(self) -> None:
        from agent.capture.kernel import KernelLoadError, KernelProgram, KernelSettings, effective_workers
        from agent.capture.sockets import SocketSettings
        from agent.capture.tlsprobes import TlsSettings

        config = self.config
        workers = effective_workers(config.interfaces.workers)
        ring_bytes = ring_size_bytes(config.interfaces.buffer_size_mb)
        settings = KernelSettings(
            workers=workers, ring_bytes=ring_bytes,
            max_flows=config.flows.max_flows if config.flows is not None else 1024,
            snaplen=config.interfaces.snaplen, icmp=wiring.icmp_enabled(config), flows=config.flows is not None,
            ports=wiring.kernel_port_map(config), decap=config.tunnels.enabled,
            vxlan_ports=config.tunnels.vxlan_ports, geneve_ports=config.tunnels.geneve_ports,
            procs=SocketSettings(config.procs.max_sockets, config.procs.max_processes, config.procs.btf_file)
            if config.procs.enabled else None,
            tls=TlsSettings(wiring.plaintext_server_ports(config), config.tls_plaintext.libraries,
                            max_connections=config.tls_plaintext.max_connections,
                            rescan_interval=config.tls_plaintext.rescan_interval)
            if config.tls_plaintext.enabled else None,
        )
        started = time.monotonic()
        try:
            self.kernel = KernelProgram(settings)
        except KernelLoadError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise StartError(Exit.NO_BPF, f"the eBPF program could not be loaded: {first}") from None
        self.counters.kernel = self.kernel
        log.info("eBPF program loaded in %.1fs: %d worker(s), %d MiB ring each, %d port(s) matched in the kernel%s",
                 time.monotonic() - started, workers, ring_bytes >> 20, len(settings.ports),
                 ", ICMP" if settings.icmp else "")
        sockets = self.kernel.sockets
        if self.kernel.procs_unavailable is not None:
            log.warning("process attribution (packetbeat.procs) is off: %s", self.kernel.procs_unavailable)
        if self.kernel.tls_unavailable is not None:
            log.warning("TLS plaintext (packetbeat.tls_plaintext) is off: %s", self.kernel.tls_unavailable)
        identity = wiring.agent_identity(config)
        self.builder = wiring.event_builder(config, identity)
        try:
            self.output = wiring.make_output(config)
        except Exception as exc:
            raise StartError(Exit.OUTPUT, f"output error: {exc}") from None
        if self.options.dump:
            from agent.capture import dump

            try:
                dump.create(self.options.dump)
            except OSError as exc:
                raise StartError(Exit.OUTPUT, f"--dump {self.options.dump}: {exc.strerror}") from None
        self.pool = WorkerPool(WorkerSetup(config, identity, ring_bytes, self.options.dump, procs=sockets is not None,
                                           tls_plaintext=self.kernel.tls is not None,
                                           close_fds=self.kernel.tracepoint_fds))
        self.counters.pool = self.pool
        self.pool.fork(self.kernel.ring_fds[:workers])
        if self.kernel.tls is not None:
            self.kernel.tls.start()  # after the fork: no worker holds a uprobe
        # Only after forking: no thread (the pipeline's sender) and no netlink socket may be inherited.
        self.pipeline = wiring.make_pipeline(config, self.output, live=True)
        self._start_tc()
        if config.flows is not None:
            self._start_flows()

    def _start_tc(self) -> None:
        from agent.capture.tc import TcManager

        assert self.kernel is not None and self.interfaces.spec is not None
        state = Path(self.config.path.data) / "pktbeat-tc.json"
        tc = TcManager(self.kernel.ingress_fd, self.kernel.egress_fd, state_file=state)
        self.interfaces.kernel = self.kernel
        self.interfaces.tc = tc
        tc.sweep()
        self.watcher = LinkWatcher()
        self.interfaces.reconcile()
        names = self.interfaces.names()
        if names:
            log.info("capturing on %d interface(s): %s (device: %s)", len(names), ", ".join(names),
                     self.interfaces.spec.describe())
        else:
            log.warning("no interface to capture on yet (device: %s); waiting for one to appear",
                        self.interfaces.spec.describe())

    def _start_flows(self) -> None:
        from agent.capture.kernel_flows import KernelFlowSource
        from agent.flows.reporter import FlowReporter

        assert self.config.flows is not None and self.kernel is not None
        self.counters.flow_source = KernelFlowSource(self.kernel.flow_map())
        if self.kernel.sockets is not None:
            from agent.procs.flows import FlowProcesses

            self.flow_processes = FlowProcesses(self.kernel.sockets, wiring.process_table(self.config, "procs.flows"))
        self.reporter = FlowReporter(self.config.flows, self.counters.flow_source, self._publish_flow)

    def _cleanup_after_failed_start(self) -> None:
        if self.pool is not None:
            self.pool.abandon()
        if self.interfaces.tc is not None:
            self.interfaces.tc.detach_all()
        if self.kernel is not None:
            self.kernel.close()

    # -- main loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.pool is not None and self.pipeline is not None and self.watcher is not None
        self.interfaces.announce = True
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        sel = selectors.DefaultSelector()
        for worker in self.pool.workers:
            sel.register(worker.reader.fd, selectors.EVENT_READ, worker)
        sel.register(self.watcher.fileno(), selectors.EVENT_READ, "netlink")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        self.status.start()
        timers = _Timers(self.config, time.monotonic(), tls=self.kernel is not None and self.kernel.tls is not None)
        try:
            while self._stop_requests == 0 and self._failure is None:
                for key, _ in sel.select(timers.wait(time.monotonic())):
                    data = key.data
                    if data == "wake":
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    elif data == "netlink":
                        if self.watcher.drain():
                            timers.reconcile_soon(time.monotonic())
                    else:
                        self._read_worker(data, sel)
                self._on_timers(timers, time.monotonic())
                self.pipeline.tick()
                if self._report_requested:
                    self._report_requested = False
                    self.counters.log_report("on SIGUSR1")
        finally:
            self.status.stop()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            # A second signal during shutdown: remove the filters and go.
            signal.signal(signal.SIGINT, self._on_forced_stop)
            signal.signal(signal.SIGTERM, self._on_forced_stop)
            sel.close()
            wake_r.close()
            wake_w.close()

    def _on_timers(self, timers: _Timers, now: float) -> None:
        if timers.due_reconcile(now):
            self.interfaces.reconcile()
        if timers.due("counters", now) and self.counters.poll(now):
            self.status.show(now, self.counters)
        if timers.due("flows", now):
            self._tick_flows()
        if timers.due("tls", now) and self.kernel is not None and self.kernel.tls is not None:
            try:
                self.kernel.tls.poll(now)
            except Exception:
                log.exception("looking for TLS libraries failed")
        if timers.due("metrics", now):
            self.counters.log_metrics(self.config.logging.metrics.period)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requests += 1
        if self._stop_requests > 1:  # asked twice (e.g. during the compile): go now
            self._on_forced_stop(signum, frame)

    def _on_report_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._report_requested = True

    def _on_forced_stop(self, signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):
            if self.interfaces.tc is not None:
                self.interfaces.tc.detach_all()
        os._exit(Exit.INTERRUPTED)

    def _read_worker(self, worker: WorkerHandle, sel: selectors.BaseSelector) -> None:
        assert self.pool is not None
        if not self.pool.read(worker, self._publish_events):
            return
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(worker.reader.fd)
        if not worker.done and self._stop_requests == 0 and self._failure is None:
            self.counters.parent["worker_failures"] += 1
            log.error("capture worker %d exited unexpectedly; stopping (its flows would go undecoded)",
                      worker.index)
            self._failure = Exit.INPUT

    # -- publishing ------------------------------------------------------------------------------

    def _publish_events(self, events: list[EncodedEvent]) -> None:
        assert self.pipeline is not None
        self.counters.parent["events_received"] += len(events)
        self.pipeline.publish_many(events)

    def _publish_flow(self, event: dict[str, Any]) -> None:
        assert self.builder is not None and self.pipeline is not None
        if self.flow_processes is not None:
            self.flow_processes.annotate_flow(event)
        finished = self.builder.finish(event, self.builder.settings.get("flow", EventSettings()))
        if finished is None:
            return
        self.counters.parent["events_received"] += 1
        metrics.register("events").inc("flow.")
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
        assert self.pool is not None and self.kernel is not None
        started = time.monotonic()
        if self.interfaces.tc is not None:
            try:
                self.interfaces.tc.detach_all()
            except Exception:
                log.exception("removing the TC filters failed")
        if self.kernel.tls is not None:
            self.kernel.tls.close()  # no more uprobes in other programs while the workers drain
        self.interfaces.release_all()
        self.counters.kernel_by_if = {}
        self.pool.ask_to_stop()
        budget = stop_budget(self.config.shutdown_timeout) + WORKER_SLACK_S
        self.pool.collect(time.monotonic() + budget, self._publish_events)
        if self.reporter is not None:
            try:
                self.reporter.final(time.time_ns())
            except Exception:
                log.exception("the final flow report failed")
        self._close_pipeline(started)
        self.counters.log_report("at exit")
        self.status.erase()
        if self.watcher is not None:
            self.watcher.close()
        if self.interfaces.tc is not None:
            self.interfaces.tc.close()
        self.kernel.close()
        log.info("pktbeat stopped in %.2fs", time.monotonic() - started)
        if self._failure is not None:
            return self._failure
        return Exit.PUBLISH_TIMEOUT if self._publish_timeout else Exit.OK

    def _close_pipeline(self, started: float) -> None:
        """The last delivery: up to packetbeat.shutdown_timeout, and a short grace when that is 0.

        With shutdown_timeout 0 Packetbeat does not wait for the output; pktbeat
        still gives a fast output (file, console) a moment, and undelivered
        events are then an expected loss (logged), not a failure.
        """
        assert self.pipeline is not None
        timeout = self.config.shutdown_timeout
        try:  # the whole stop, workers included, stays within shutdown_timeout
            self.pipeline.close(max(started + timeout, time.monotonic() + SHUTDOWN_GRACE_S))
        except PublishTimeout as exc:
            if timeout > 0:
                self._publish_timeout = True
                log.error("%s within packetbeat.shutdown_timeout (%gs)", exc, timeout)
            else:
                log.warning("%s at exit (packetbeat.shutdown_timeout is 0: not waiting)", exc)
        except Exception:
            log.exception("closing the output failed")


class _Timers:
    """The supervisor's periodic jobs, and how long the loop may sleep before the next one."""

    def __init__(self, config: AgentConfig, now: float, tls: bool = False) -> None:
        metrics_period = config.logging.metrics.period if config.logging.metrics.enabled else 0.0
        self.periods = {"counters": COUNTERS_S, "reconcile": RECONCILE_S, "flows": FLOWS_TICK_S}
        self.next = {"counters": now, "reconcile": now + RECONCILE_S, "flows": now + FLOWS_TICK_S}
        if tls:  # only a job that runs may have a timer: one never taken would keep wait() at 0 (a busy loop)
            self.periods["tls"] = TLS_POLL_S
            self.next["tls"] = now + TLS_POLL_S
        if metrics_period > 0:
            self.periods["metrics"] = metrics_period
            self.next["metrics"] = now + metrics_period
        self._reconcile_at: float | None = None  # soon after a netlink change (a burst settles first)

    def reconcile_soon(self, now: float) -> None:
        self._reconcile_at = now + 0.02

    def wait(self, now: float) -> float:
        soonest = min(self.next.values())
        if self._reconcile_at is not None:
            soonest = min(soonest, self._reconcile_at)
        return min(max(0.0, soonest - now), 0.25)

    def due(self, name: str, now: float) -> bool:
        at = self.next.get(name)
        if at is None or now < at:
            return False
        self.next[name] = now + self.periods[name]
        return True

    def due_reconcile(self, now: float) -> bool:
        if self._reconcile_at is not None and now >= self._reconcile_at:
            self._reconcile_at = None
            self.next["reconcile"] = now + RECONCILE_S
            return True
        return self.due("reconcile", now)
