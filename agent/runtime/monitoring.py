"""Monitoring: the `http.*` endpoint (`/`, `/stats`, `/metrics`) and libbeat's periodic metrics log line.

`/` answers with the beat's identity, `/stats` with every counter (nested by its dotted name), as
Beats' monitoring endpoint does, `/metrics` with the same in Prometheus' text format
(agent/runtime/prometheus.py), and `/top` with the transaction summaries `pktbeat top` shows
(agent/runtime/topstats.py).  The endpoint binds to localhost unless `http.host` says otherwise.

The server is bounded, so that a scraper gone wrong (or a hostile local user) cannot cost the agent
memory, threads or a slow exit: one thread accepts and watches connections with a selector, and
only a connection that has sent bytes goes to one of `WORKERS` request threads.  Idle connections
cost no thread; at most `MAX_CONNECTIONS` are kept (the oldest idle one is closed for a new one),
and an idle one is closed after `IDLE_TIMEOUT_S`.  A request must arrive within
`REQUEST_TIMEOUT_S`.  Every thread is a daemon and `stop()` returns within a fraction of a second,
whatever the clients do.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from agent import metrics
from agent.config.model import HttpEndpointConfig
from agent.runtime import topstats
from agent.runtime.prometheus import Sources, registry_for
from agent.version import VERSION

if TYPE_CHECKING:
    from agent.publisher.pipeline import Pipeline
    from agent.runtime.status import LiveCounters
    from agent.runtime.worker import WorkerPool

log = logging.getLogger("pktbeat.monitoring")

Snapshot = Callable[[], dict[str, int]]

WORKERS = 2
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 5.0
STOP_WAIT_S = 0.3
COUNTERS = ("requests", "connections", "connections_refused", "idle_closed", "errors")


def nest(flat: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {"value": child}
            node = child
        node[parts[-1]] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0 semantics: the server closes after answering)."""

    server: Any
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self) -> None:
        outer: MonitoringServer = self.server
        path = self.path.split("?")[0].rstrip("/") or "/"
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(generate_latest(outer.registry), CONTENT_TYPE_LATEST)
            return
        if path == "/":
            body: Any = {**outer.info, "uptime_ms": int((time.time() - outer.started) * 1000)}
        elif path == "/stats":
            body = nest(outer.snapshot())
        elif path == "/top" and outer.sources.top is not None:
            body = outer.sources.top()
        else:
            self.send_error(404)
            return
        pretty = "pretty" in self.path
        self._send(json.dumps(body, indent=2 if pretty else None).encode(), "application/json; charset=utf-8")

    def _send(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class MonitoringServer:
    def __init__(self, config: HttpEndpointConfig, snapshot: Snapshot, info: dict[str, Any], *,
                 sources: Sources | None = None) -> None:
        self.config = config
        self.snapshot = snapshot
        self.info = {**info, "version": VERSION, "beat": "packetbeat"}
        self.started = time.time()
        self.sources = sources or Sources(counters=snapshot)
        self.registry = registry_for(self.sources)
        self.counters = metrics.register("monitoring", COUNTERS)
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._work: queue.Queue[socket.socket | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._idle: collections.OrderedDict[socket.socket, float] = collections.OrderedDict()
        self._busy: set[socket.socket] = set()
        self._lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if not self.config.enabled:
            return
        try:
            infos = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
            infos.sort(key=lambda info: info[0] != socket.AF_INET)  # "localhost": 127.0.0.1 as before
            family, _, _, _, address = infos[0]
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(64)
        except OSError as exc:
            log.error("monitoring endpoint %s:%d not started: %s", self.config.host, self.config.port,
                      exc.strerror or exc)
            return
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads = [threading.Thread(target=self._accept_loop, name="monitoring", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"monitoring-{i}", daemon=True)
                          for i in range(WORKERS)]
        for thread in self._threads:
            thread.start()
        log.info("monitoring endpoint on http://%s:%d/ (/stats, /metrics)", self.config.host, self.port)

    @property
    def port(self) -> int | None:
        return self._listener.getsockname()[1] if self._listener is not None else None

    def stop(self) -> None:
        """Close everything; returns within STOP_WAIT_S even with clients mid-request."""
        if self._listener is None:
            return
        self._stopping.set()
        assert self._wake_r is not None and self._wake_w is not None
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for _ in range(WORKERS):
            self._work.put(None)
        with self._lock:
            busy = list(self._busy)
        for sock in busy:  # unblock a worker reading a slow request
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener = None
        if not self._threads[0].is_alive():
            self._wake_r.close()
            self._wake_w.close()

    # -- the accepting thread ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, "accept")
        assert self._wake_r is not None
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                try:
                    self._accept_once(listener, sel)
                except Exception as exc:  # never let one bad connection end the endpoint
                    self.counters["errors"] += 1
                    log.debug("monitoring endpoint: %s", exc)
        finally:
            for sock in list(self._idle):
                sock.close()
            self._idle.clear()
            sel.close()
            listener.close()

    def _accept_once(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "accept":
                self._accept(listener, sel)
            elif key.data == "ready":
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                self._idle.pop(sock, None)
                with self._lock:
                    self._busy.add(sock)
                self._work.put(sock)
        self._expire_idle(sel)

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["errors"] += 1
                return
            self.counters["connections"] += 1
            with self._lock:
                busy = len(self._busy)
            if len(self._idle) + busy >= MAX_CONNECTIONS:
                if not self._idle:
                    self.counters["connections_refused"] += 1
                    sock.close()
                    continue
                oldest, _ = self._idle.popitem(last=False)
                sel.unregister(oldest)
                oldest.close()
                self.counters["connections_refused"] += 1
            sock.setblocking(False)
            self._idle[sock] = time.monotonic()
            sel.register(sock, selectors.EVENT_READ, "ready")

    def _expire_idle(self, sel: selectors.BaseSelector) -> None:
        limit = time.monotonic() - IDLE_TIMEOUT_S
        while self._idle:
            sock, since = next(iter(self._idle.items()))
            if since > limit:
                return
            del self._idle[sock]
            sel.unregister(sock)
            sock.close()
            self.counters["idle_closed"] += 1

    # -- request threads -----------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            sock = self._work.get()
            if sock is None:
                return
            try:
                sock.setblocking(True)
                sock.settimeout(REQUEST_TIMEOUT_S)
                if not self._stopping.is_set():
                    self.counters["requests"] += 1
                    server: Any = self
                    _Handler(sock, sock.getpeername(), server)
            except Exception as exc:
                self.counters["errors"] += 1
                log.debug("monitoring request failed: %s", exc)
            finally:
                with self._lock:
                    self._busy.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()


def live_sources(counters: LiveCounters, pipeline: Pipeline | None, pool: WorkerPool | None,
                 protocols: list[str]) -> Sources:
    """What /metrics reads in a live run (from the monitoring thread: every read tolerates a concurrent change)."""
    from agent.capture.record import COUNTER_NAMES

    def interfaces() -> dict[str, dict[str, int]]:
        for _ in range(3):
            try:
                by_name = counters.interfaces.per_interface(dict(counters.kernel_by_if))
                return {name: dict(zip(COUNTER_NAMES, values, strict=True)) for name, values in by_name.items()}
            except RuntimeError:  # the attached set changed during the read
                continue
        return {}

    def gauges() -> dict[str, float]:
        spool = pipeline.spool if pipeline is not None else None
        spooled = spool.pending if spool is not None else 0
        pending = pipeline.pending() if pipeline is not None else 0
        ring = sum(w.stats.get("capture.ring_pending_bytes", 0) for w in pool.workers) if pool is not None else 0
        return {"queue_events": max(0, pending - spooled), "spool_events": spooled,
                "spool_bytes": spool.size if spool is not None else 0, "ring_pending_bytes": ring}

    def processes() -> dict[str, int]:
        pids = {"main": os.getpid()}
        if pool is not None:
            pids.update({f"worker-{w.index}": w.pid for w in pool.workers if not w.exited})
        return pids

    def top() -> dict[str, Any]:
        return topstats.merge([w.top for w in pool.workers] if pool is not None else [])

    return Sources(counters=counters.snapshot, interfaces=interfaces, gauges=gauges, processes=processes,
                   protocols=protocols, top=top)


class MetricsLogger:
    """Logs the counters that changed since the last period (libbeat's logging.metrics)."""

    def __init__(self, period_s: float, snapshot: Snapshot, enabled: bool = True) -> None:
        self.period_ns = int(period_s * 1e9)
        self.snapshot = snapshot
        self.enabled = enabled and period_s > 0
        self._last: dict[str, int] = {}
        self._next = 0

    def tick(self, now_ns: int) -> None:
        if not self.enabled or now_ns < self._next:
            return
        self._next = now_ns + self.period_ns
        current = self.snapshot()
        delta = {k: v - self._last.get(k, 0) for k, v in current.items() if v != self._last.get(k, 0)}
        self._last = current
        if delta:
            log.info("Non-zero metrics in the last %gs: %s", self.period_ns / 1e9,
                     json.dumps(nest(delta), separators=(",", ":")))
