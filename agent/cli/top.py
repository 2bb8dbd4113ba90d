"""`pktbeat top`: a live terminal view of a running agent, or of a capture of its own.

    pktbeat top                      the agent whose monitoring endpoint the config names (http.*),
    pktbeat top --url URL            or this one (http://localhost:5066 by default)
    pktbeat top -i IFACE [-c FILE]   capture IFACE itself: a child `pktbeat run` with the discard output
                                     and a private monitoring port; quitting stops it, and with it its
                                     TC filters

Every refresh reads `/metrics` (Prometheus text) and `/top` (transaction summaries) and shows
per-interface packet rates and drops by cause, transactions per protocol per second, latency
percentiles, error statuses and the top server endpoints by count and by latency (since top
started).  `q` or Ctrl-C quits.  The screen is drawn with rich.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import subprocess

# Everything else is imported where it is used: `pktbeat run` imports this module at every start.

DEFAULT_URL = "http://localhost:5066"
START_TIMEOUT_S = 90.0  # the child compiles the eBPF program first
TOP_ROWS = 5
# Protocols a config-less `top -i` decodes, on their usual ports.
DEFAULT_PROTOCOLS = ("[{type: icmp}, {type: dns, ports: [53]}, {type: http, ports: [80, 8080, 8000, 5000, 8002]}, "
                     "{type: tls, ports: [443, 8443]}, {type: mysql, ports: [3306]}, {type: pgsql, ports: [5432]}, "
                     "{type: redis, ports: [6379]}, {type: mongodb, ports: [27017]}, "
                     "{type: memcache, ports: [11211]}]")


# -- reading an agent --------------------------------------------------------------------------------------------


@dataclass
class Reading:
    at: float
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    top: dict[str, Any]

    def family(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (metric, labels), value in self.metrics.items() if metric == name}


def read_agent(url: str, timeout: float = 2.0) -> Reading:
    import json
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as reply:
        text = reply.read().decode("utf-8", "replace")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    top: dict[str, Any] = {}
    with contextlib.suppress(urllib.error.HTTPError, ValueError), \
            urllib.request.urlopen(url.rstrip("/") + "/top", timeout=timeout) as reply:
        top = json.loads(reply.read())
    return Reading(time.monotonic(), samples, top)


@dataclass
class View:
    """What the screen shows, from the first, previous and current readings."""

    source: str
    first: Reading | None = None
    prev: Reading | None = None
    cur: Reading | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def update(self, reading: Reading) -> None:
        self.first = self.first or reading
        self.prev, self.cur = self.cur, reading
        self.error = ""

    def rate(self, name: str, **labels: str) -> float:
        if self.cur is None or self.prev is None or self.cur.at <= self.prev.at:
            return 0.0
        return (self._sum(self.cur, name, labels) - self._sum(self.prev, name, labels)) / (self.cur.at - self.prev.at)

    def since_start(self, name: str, **labels: str) -> float:
        if self.cur is None or self.first is None:
            return 0.0
        return self._sum(self.cur, name, labels) - self._sum(self.first, name, labels)

    @staticmethod
    def _sum(reading: Reading, name: str, labels: dict[str, str]) -> float:
        want = set(labels.items())
        return sum(v for lab, v in reading.family(name).items() if want <= set(lab))

    def label_values(self, name: str, label: str) -> list[str]:
        if self.cur is None:
            return []
        return sorted({dict(lab)[label] for lab in self.cur.family(name) if label in dict(lab)})


# -- drawing -------------------------------------------------------------------------------------------------------


def _si(value: float, unit: str = "") -> str:
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f}ms" if seconds < 1 else f"{seconds:.2f}s"


def render(view: View) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(("pktbeat top", "bold"), f"  {view.source}  ",
                           (f"{_si(view.rate('pktbeat_events_total'))} events/s", "bold green"),
                           "  (q or Ctrl-C to quit)")
    parts: list[Any] = [header]
    if view.error:
        parts.append(Text(view.error, style="bold red"))
    parts += [Text(note, style="yellow") for note in view.notes]
    if view.cur is None:
        return Group(*parts)
    parts += [_interfaces(view, Table), _protocols(view, Table), _errors(view, Table), *_endpoints(view, Table)]
    return Group(*parts)


def _interfaces(view: View, table_class: Any) -> Any:
    table = table_class(title="interfaces (drops by cause since top started)", title_justify="left")
    for column in ("interface", "pkt/s", "bit/s", "matched/s", "ring_full", "load_failed", "emit_failed"):
        table.add_column(column, justify="left" if column == "interface" else "right")
    for iface in view.label_values("pktbeat_kernel_packets_total", "interface"):
        drops = [view.since_start("pktbeat_kernel_drops_total", interface=iface, cause=c)
                 for c in ("ring_full", "load_failed", "emit_failed")]
        table.add_row(iface, _si(view.rate("pktbeat_kernel_packets_total", interface=iface, counter="seen")),
                      _si(view.rate("pktbeat_kernel_bytes_total", interface=iface) * 8),
                      _si(view.rate("pktbeat_kernel_packets_total", interface=iface, counter="matched")),
                      *(f"[red]{d:.0f}[/red]" if d else "0" for d in drops))
    return table


def _protocols(view: View, table_class: Any) -> Any:
    from agent.runtime.topstats import percentile

    table = table_class(title="transactions (latency since top started)", title_justify="left")
    for column in ("protocol", "txn/s", "total", "errors", "p50", "p90", "p99"):
        table.add_column(column, justify="left" if column == "protocol" else "right")
    latency_now = (view.cur.top if view.cur else {}).get("latency", {})
    latency_then = (view.first.top if view.first else {}).get("latency", {})
    for protocol in view.label_values("pktbeat_events_total", "protocol"):
        if protocol == "flow":
            continue
        total = view.since_start("pktbeat_events_total", protocol=protocol)
        ok = view.since_start("pktbeat_events_total", protocol=protocol, status="OK")
        now, then = latency_now.get(protocol, []), latency_then.get(protocol, [])
        window = [max(0, n - (then[i] if i < len(then) else 0)) for i, n in enumerate(now)]
        table.add_row(protocol, f"{view.rate('pktbeat_events_total', protocol=protocol):.1f}", f"{total:.0f}",
                      f"{total - ok:.0f}", *(_ms(percentile(window, q)) for q in (0.5, 0.9, 0.99)))
    return table


def _errors(view: View, table_class: Any) -> Any:
    table = table_class(title="error statuses (since top started)", title_justify="left")
    for column in ("protocol", "status", "count", "per s"):
        table.add_column(column, justify="right" if column in ("count", "per s") else "left")
    if view.cur is not None:
        for labels in sorted(view.cur.family("pktbeat_events_total")):
            named = dict(labels)
            if named.get("status") in ("OK", "", None):
                continue
            count = view.since_start("pktbeat_events_total", **named)
            if count:
                table.add_row(named["protocol"], named["status"], f"{count:.0f}",
                              f"{view.rate('pktbeat_events_total', **named):.1f}")
    return table


def _endpoint_window(view: View) -> dict[str, tuple[int, int, int]]:
    now = (view.cur.top if view.cur else {}).get("endpoints", {})
    then = (view.first.top if view.first else {}).get("endpoints", {})
    out = {}
    for key, (count, sum_ns, max_ns) in now.items():
        old = then.get(key, [0, 0, 0])
        if count - old[0] > 0:
            out[key] = (count - old[0], max(0, sum_ns - old[1]), max_ns)
    return out


def _endpoints(view: View, table_class: Any) -> list[Any]:
    window = _endpoint_window(view)
    by_count = table_class(title="top endpoints by count", title_justify="left")
    by_latency = table_class(title="top endpoints by latency", title_justify="left")
    for table in (by_count, by_latency):
        for column in ("protocol", "server", "count", "mean", "max"):
            table.add_column(column, justify="right" if column in ("count", "mean", "max") else "left")
    ranked = sorted(window.items(), key=lambda item: item[1][0], reverse=True)[:TOP_ROWS]
    slow = sorted(window.items(), key=lambda item: item[1][1] / item[1][0], reverse=True)[:TOP_ROWS]
    for table, rows in ((by_count, ranked), (by_latency, slow)):
        for key, (count, sum_ns, max_ns) in rows:
            protocol, _, server = key.partition(" ")
            table.add_row(protocol, server, str(count), _ms(sum_ns / count / 1e9), _ms(max_ns / 1e9))
    return [by_count, by_latency]


# -- the loop ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys without Enter), restored on exit; None when stdin is not a terminal."""
    import termios
    import tty

    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, timeout: float) -> bool:
    import select

    if fd is None:
        time.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 32).lower().startswith(b"q"):
            return True
    return False


def show(url: str, source: str, interval: float, child: subprocess.Popen[bytes] | None = None) -> int:
    from rich.console import Console
    from rich.live import Live

    view = View(source)
    console = Console()
    with _keys() as fd, Live(render(view), console=console, screen=True, auto_refresh=False) as live:
        while True:
            try:
                view.update(read_agent(url))
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                view.error = f"cannot read {url}: {reason}"
                if child is not None and child.poll() is not None:
                    return child.returncode or 1
            live.update(render(view), refresh=True)
            if _quit_pressed(fd, interval):
                return 0


# -- `pktbeat top -i IFACE`: a capture of its own --------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_config(config: str | None, work: Path) -> Path:
    """The user's config (when there is one) without its output, logging, paths and http: top sets those."""
    import yaml

    from agent.config import yamlload

    tree: dict[str, Any] = yamlload.read_file(config) if config else {}
    kept = {k: v for k, v in tree.items()
            if k.split(".")[0] not in ("output", "logging", "path", "http", "queue", "setup")}
    path = work / "top.yml"
    path.write_text(yaml.safe_dump(kept))
    path.chmod(0o600)
    return path


def capture_and_show(interfaces: list[str], config: str | None, settings: list[str], interval: float) -> int:
    import shutil
    import signal
    import subprocess
    import tempfile

    from agent.cli.main import PATH_ENV, _config_file

    if config is None:  # the config `pktbeat run` would read, when there is one
        default = _config_file(None, os.environ.get(PATH_ENV + "CONFIG"))
        config = default if os.path.exists(default) else None
    work = Path(tempfile.mkdtemp(prefix="pktbeat-top-"))
    port = _free_port()
    args = [sys.executable, "-m", "agent.cli.main", "run", "-e", "--no-status", "-c", str(_child_config(config, work)),
            "-E", "http.enabled=true", "-E", "http.host=127.0.0.1", "-E", f"http.port={port}",
            "-E", f"path.data={work}/data", "-E", f"path.logs={work}/logs", "-E", "output={discard: {}}",
            "-E", "logging.metrics.enabled=false"]
    if config is None:
        args += ["-E", f"packetbeat.protocols={DEFAULT_PROTOCOLS}"]
    for setting in settings:
        args += ["-E", setting]
    for name in interfaces:
        args += ["-i", name]
    log_path = work / "agent.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    code = 0
    try:
        if not _wait_endpoint(url, child):
            sys.stderr.write(f"pktbeat top: the capture did not start:\n{log_path.read_text()[-2000:]}")
            return child.returncode or 1
        code = show(url, f"capturing on {', '.join(interfaces)}", interval, child)
    except KeyboardInterrupt:
        code = 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)  # removes its TC filters
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.returncode not in (0, None) and code == 0:
            sys.stderr.write(f"pktbeat top: the capture exited with {child.returncode}:\n"
                             f"{log_path.read_text()[-1500:]}")
        shutil.rmtree(work, ignore_errors=True)
    return code


def _wait_endpoint(url: str, child: subprocess.Popen[bytes]) -> bool:
    import urllib.request

    sys.stderr.write("pktbeat top: starting the capture (compiling the eBPF program)...\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/", timeout=1):
            return True
        time.sleep(0.2)
    return False


def _url_from_config(config: str | None, settings: list[str]) -> str:
    from agent.cli.main import _load

    try:
        cfg = _load(config, settings)
    except Exception:
        return DEFAULT_URL
    host = cfg.http.host if cfg.http.host not in ("0.0.0.0", "::", "") else "localhost"
    return f"http://{host}:{cfg.http.port}"


def top(
    interface: Annotated[list[str] | None, typer.Option("-i", "--interface", help="Capture this interface itself")]
    = None,
    config: Annotated[str | None, typer.Option("-c", "--c", "--config", help="Config file")] = None,
    settings: Annotated[list[str] | None, typer.Option("-E", help="Override a setting: -E key=value")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A running agent's monitoring endpoint")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes")] = 1.0,
) -> None:
    """Live view of a running agent (its monitoring endpoint), or of a capture of its own with -i IFACE."""
    interval = min(max(interval, 0.2), 60.0)
    try:
        if interface:
            code = capture_and_show(list(interface), config, list(settings or []), interval)
        else:
            target = url or _url_from_config(config, list(settings or []))
            code = show(target, target, interval)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
