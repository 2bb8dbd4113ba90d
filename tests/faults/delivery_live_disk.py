"""Live capture through a disk-full episode (acceptance b of issue 15), for the test suite and bench/disk_full.py.

Namespace b serves HTTP/1.1 keep-alive; namespace a runs a client that sends
`rate` requests per second, each to its own path (/r/<n>), and pktbeat
capturing a's veth with its default output (the file output in `path.data`)
and its overflow spool, both on one small tmpfs.  After `before_s`, a filler
takes every free byte of the tmpfs for `full_s`; then it is deleted and the
traffic goes on for `after_s`.  The agent is stopped with SIGTERM.

The report says what was sent, what the agent received and dropped (its
counters at exit), what reached the file (each request's path, so duplicates
and losses can be told apart), and what the log said.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.live import live_agent
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.tmpfs import fill, tmpfs

PORT = 8080

SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(128)
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
def serve(conn):
    reader = conn.makefile("rb")
    try:
        while True:
            if not reader.readline():
                break
            while reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            conn.sendall(REPLY)
    except OSError:
        pass
    conn.close()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

CLIENT = r"""
import http.client, json, sys, time
host, port, rate, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
conns = [http.client.HTTPConnection(host, port, timeout=5) for _ in range(4)]
start = time.monotonic()
sent = ok = 0
times = []
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    due = int((now - start) * rate)
    while sent < due:
        conn = conns[sent % len(conns)]
        try:
            conn.request("GET", f"/r/{sent}")
            conn.getresponse().read()
            ok += 1
        except (OSError, http.client.HTTPException):
            conn.close()
        times.append(round(time.monotonic() - start, 3))
        sent += 1
    time.sleep(0.002)
json.dump({"sent": sent, "ok": ok, "times": times}, open(out, "w"))
"""

PATH_RE = re.compile(r"/r/(\d+)")


@dataclass
class Episode:
    requests: int = 0
    ok: int = 0
    request_times: list[float] = field(default_factory=list)
    full_at: float = 0.0  # seconds after the client started
    freed_at: float = 0.0
    exit_code: int | None = None
    stop_seconds: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    delivered: Counter[int] = field(default_factory=Counter)  # request number -> lines in the output
    torn_lines: int = 0
    log: str = ""

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.delivered.values() if n > 1)

    @property
    def dropped(self) -> int:
        names = ("pipeline.queue_full_drops", "pipeline.disk_full_drops", "pipeline.too_large_drops",
                 "pipeline.interrupted_drops", "capture.events_dropped")
        return sum(self.counters.get(n, 0) for n in names)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "ok": self.ok, "received": self.counters.get("live.events_received", 0),
                "delivered": len(self.delivered), "duplicates": self.duplicates, "dropped": self.dropped,
                "torn_lines": self.torn_lines, "exit_code": self.exit_code, "stop_seconds": self.stop_seconds,
                "tracebacks": self.log.count("Traceback"),
                "after_recovery_missing": len(self.missing_after(self.freed_at + 3.0))}

    def missing_after(self, when: float) -> list[int]:
        return [n for n, t in enumerate(self.request_times) if t >= when and n not in self.delivered]


def run(full_s: float, *, before_s: float = 3.0, after_s: float = 6.0, rate: float = 150.0, disk: str = "32m",
        settings: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Episode:
    episode = Episode()
    with tempfile.TemporaryDirectory(prefix="pktbeat-diskfull-") as tmp, veth_pair("pdf") as pair, \
            tmpfs(Path(tmp) / "disk", disk) as mount:
        if True:
            merged = {"path.data": str(mount), "output.file": {"path": str(mount), "filename": "packetbeat"},
                      "packetbeat.shutdown_timeout": "10s", "logging.metrics.enabled": False}
            merged.update(settings or {})
            server = pair.b.popen(["python3", "-c", SERVER, str(PORT)])
            pair.b.wait_port(PORT, host=pair.b_ip)
            with live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [PORT]}], merged, env=env) as agent:
                try:
                    _drive(episode, pair, Path(tmp), mount, full_s, before_s, after_s, rate)
                finally:
                    episode.exit_code = agent.stop(timeout=30)
                    episode.stop_seconds = agent.stop_seconds
                    episode.log = agent.log()
            server.kill()
            _read_output(episode, mount)
    episode.counters = _exit_counters(episode.log)
    return episode


def _drive(episode: Episode, pair: VethPair, tmp: Path, mount: Path, full_s: float, before_s: float,
           after_s: float, rate: float) -> None:
    total = before_s + full_s + after_s
    report = tmp / "client.json"
    client = pair.a.popen(["python3", "-c", CLIENT, pair.b_ip, str(PORT), str(rate), str(total), str(report)])
    started = time.monotonic()
    time.sleep(before_s)
    filler = fill(mount)
    episode.full_at = time.monotonic() - started
    _keep_full(mount, full_s)
    filler.unlink()
    for extra in mount.glob("filler-*"):
        extra.unlink()
    episode.freed_at = time.monotonic() - started
    client.wait(timeout=total + 60)
    time.sleep(2.0)  # the last transactions reach the output
    result = json.loads(report.read_text())
    episode.requests, episode.ok, episode.request_times = result["sent"], result["ok"], result["times"]


def _keep_full(mount: Path, seconds: float) -> None:
    """Hold the disk full: whatever the agent frees meanwhile (a drained spool segment) is taken again."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        count += 1
        with contextlib.suppress(OSError):
            fill(mount, f"filler-{count}")


def _read_output(episode: Episode, mount: Path) -> None:
    for path in sorted(mount.glob("packetbeat-*.ndjson")):
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                episode.torn_lines += 1
                continue
            match = PATH_RE.search(str(event.get("url", {}).get("path", "")))
            if match:
                episode.delivered[int(match.group(1))] += 1


def _exit_counters(log: str) -> dict[str, int]:
    counters: dict[str, int] = {}
    for prefix in ("agent counters at exit: ", "worker counters at exit: "):
        at = log.rfind(prefix)
        if at < 0:
            continue
        line = log[at + len(prefix):].splitlines()[0]
        for part in line.split(", "):
            name, _, value = part.partition("=")
            if value.isdigit():
                counters[name] = counters.get(name, 0) + int(value)
    return counters


def describe(episode: Episode) -> str:
    return json.dumps(episode.summary())
