"""Monitoring: the `http.*` stats endpoint and libbeat's periodic metrics log line.

`/` answers with the beat's identity, `/stats` with every counter (nested by
its dotted name), as Beats' monitoring endpoint does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.config.model import HttpEndpointConfig
from agent.version import VERSION

log = logging.getLogger("pktbeat.monitoring")

Snapshot = Callable[[], dict[str, int]]


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


class MonitoringServer:
    def __init__(self, config: HttpEndpointConfig, snapshot: Snapshot, info: dict[str, Any]) -> None:
        self.config = config
        self.snapshot = snapshot
        self.info = {**info, "version": VERSION, "beat": "packetbeat"}
        self.started = time.time()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        if not self.config.enabled:
            return
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/") or "/"
                if path == "/":
                    body: Any = {**outer.info, "uptime_ms": int((time.time() - outer.started) * 1000)}
                elif path == "/stats":
                    body = nest(outer.snapshot())
                else:
                    self.send_error(404)
                    return
                pretty = "pretty" in self.path
                data = json.dumps(body, indent=2 if pretty else None).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        try:
            self._server = ThreadingHTTPServer((self.config.host, self.config.port), Handler)
        except OSError as exc:
            log.error("monitoring endpoint %s:%d not started: %s", self.config.host, self.config.port, exc.strerror)
            return
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="monitoring", daemon=True).start()
        log.info("monitoring endpoint on http://%s:%d/stats", self.config.host, self._server.server_address[1])

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server is not None else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


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
