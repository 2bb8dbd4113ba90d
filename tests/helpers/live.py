"""Running the live agent inside a test namespace, and reading what it published.

    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], protocols) as agent:
        ...traffic...
        agent.stop()
    events = agent.events()

or, in one call, `capture_events(pair, traffic_fn, protocols)`.  The agent
runs as `ip netns exec <ns> pktbeat run -e -c <cfg> -i <iface>` with the file
output in a temp directory; `live_agent` returns once the program is loaded
and the interfaces are attached, and always stops the agent (SIGTERM, then
SIGKILL) and removes its temp directory.  Namespaces, links and TC filters
go with the namespace (tests/helpers/netns.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.netns import Namespace, VethPair
from tests.helpers.replay import PKTBEAT, read_events, write_config

READY_MARKERS = ("capturing on", "no interface to capture on yet")
START_TIMEOUT = 60.0  # compiling the program takes seconds on a busy machine


def live_available() -> str | None:
    """Why live tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "live capture tests need root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "python3-bpfcc is not installed"
    return None


@dataclass
class LiveAgent:
    ns: Namespace
    proc: subprocess.Popen[bytes]
    directory: Path
    config: Path
    log_path: Path
    exit_code: int | None = None
    stop_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Kept when the agent ends, so they outlive the temp directory.
    _final_log: str | None = None
    _final_events: list[dict[str, Any]] | None = None

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            if self.log_path.is_dir():  # the agent's own log files (pktbeat-<date>[-N].ndjson), oldest first
                files = sorted(self.log_path.glob("pktbeat*"), key=lambda f: f.stat().st_mtime)
                return "".join(f.read_text(errors="replace") for f in files)
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _keep_results(self) -> None:
        self._final_log = None
        self._final_log = self.log()
        self._final_events = read_events(self.directory)

    def wait_for(self, text: str, timeout: float = 10.0, after: int = 0) -> bool:
        """Wait until `text` appears in the log (after character `after`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return True
            if self.proc.poll() is not None:
                return text in self.log()[after:]
            time.sleep(0.05)
        return False

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; records the exit code and how long the exit took."""
        if self.exit_code is not None:
            return self.exit_code
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.exit_code = self.proc.wait()
        self.stop_seconds = time.monotonic() - started
        self._keep_results()
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the agent only (its workers notice and exit by themselves)."""
        self.signal(signal.SIGKILL)
        self.exit_code = self.proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.05)
        self._keep_results()

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        events = self._final_events if self._final_events is not None else read_events(self.directory)
        if event_type is not None:
            events = [e for e in events if e.get("type") == event_type]
        return events


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def live_agent(ns: Namespace, interfaces: Sequence[str] | None, protocols: list[dict[str, Any]],
               settings: dict[str, Any] | None = None, extra_args: Sequence[str] = (),
               env: dict[str, str] | None = None, wait_ready: bool = True,
               log_to_files: bool = False) -> Iterator[LiveAgent]:
    """Start `pktbeat run` in `ns` on `interfaces` (None: the config's device, default any).

    The agent logs to stderr (-e), or with `log_to_files` to its log file under path.logs.
    """
    with tempfile.TemporaryDirectory(prefix="pktbeat-live-") as tmp:
        directory = Path(tmp)
        merged: dict[str, Any] = {"path.data": str(directory / "data"), "path.logs": str(directory / "logs"),
                                  "packetbeat.interfaces.workers": 1, "packetbeat.interfaces.buffer_size_mb": 4}
        merged.update(settings or {})
        config = write_config(directory, protocols, merged)
        output = directory / "agent.log"
        log_path = directory / "logs" if log_to_files else output
        args = [PKTBEAT, "run", *([] if log_to_files else ["-e"]), "-c", str(config), *extra_args]
        for name in interfaces or ():
            args += ["-i", name]
        environ = {**os.environ, **(env or {})}
        proc = ns.popen(args, log=output, env=environ, cwd=str(directory))
        agent = LiveAgent(ns, proc, directory, config, log_path)
        try:
            if wait_ready:
                _wait_ready(agent)
            yield agent
        finally:
            if agent.exit_code is None and proc.poll() is None:
                agent.stop()
            elif agent.exit_code is None:
                agent.exit_code = proc.returncode
                agent._keep_results()


def _wait_ready(agent: LiveAgent) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = agent.log()
        if any(marker in text for marker in READY_MARKERS):
            time.sleep(0.1)  # the first worker poll
            return
        if agent.proc.poll() is not None:
            raise AssertionError(f"pktbeat exited with {agent.proc.returncode} before capturing:\n{text[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"pktbeat did not start capturing within {START_TIMEOUT}s:\n{agent.log()[-3000:]}")


def capture_events(pair: VethPair, traffic_fn: Callable[[VethPair], None], protocols: list[dict[str, Any]],
                   settings: dict[str, Any] | None = None, interface: str | None = None,
                   settle: float = 0.3) -> list[dict[str, Any]]:
    """Live-capture `traffic_fn(pair)` on namespace a's veth; the events after a graceful stop."""
    with live_agent(pair.a, [interface or pair.a_if], protocols, settings) as agent:
        traffic_fn(pair)
        time.sleep(settle)
        code = agent.stop()
        assert code == 0, f"pktbeat exited {code}:\n{agent.log()[-3000:]}"
        return agent.events()


def tc_filters(ns: Namespace, interface: str) -> list[str]:
    """`tc filter show` lines (ingress and egress) that are pktbeat's."""
    out: list[str] = []
    for hook in ("ingress", "egress"):
        proc = ns.run(["tc", "filter", "show", "dev", interface, hook], check=False)
        out += [line for line in proc.stdout.splitlines() if "pktbeat:" in line]
    return out


class KernelProbe:
    """tests/helpers/kernel_probe.py running in a namespace: records, counters and flows of the kernel program."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.data: dict[str, Any] | None = None

    def set_ports(self, ports: Sequence[str]) -> None:
        """Replace the kernel's port map while the probe runs."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(("ports " + " ".join(ports) + "\n").encode())
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == b"OK"

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        if self.data is None:
            import json

            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            out = self.proc.stdout.read()
            self.proc.wait(timeout=timeout)
            assert self.proc.returncode == 0, f"kernel probe failed ({self.proc.returncode})"
            self.data = json.loads(out)
        return self.data


@contextlib.contextmanager
def kernel_probe(ns: Namespace, interfaces: Sequence[str], ports: Sequence[str] = (), icmp: bool = False,
                 flows: bool = False, chunk: int | None = None, snaplen: int | None = None) -> Iterator[KernelProbe]:
    """Run the kernel probe on `interfaces` of `ns`; `finish()` stops it and returns its report."""
    import sys

    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "tests.helpers.kernel_probe"]
    for name in interfaces:
        args += ["--iface", name]
    for port in ports:
        args += ["--port", port]
    if icmp:
        args.append("--icmp")
    if flows:
        args.append("--flows")
    if chunk is not None:
        args += ["--chunk", str(chunk)]
    if snaplen is not None:
        args += ["--snaplen", str(snaplen)]
    proc = subprocess.Popen(ns.exec_args(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(root),
                            start_new_session=True)
    probe = KernelProbe(proc)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            import select

            readable, _, _ = select.select([proc.stdout], [], [], 0.2)
            if readable:
                line = proc.stdout.readline()
                break
        assert line.strip() == b"READY", f"kernel probe did not start ({proc.poll()}): {line!r}"
        yield probe
        probe.finish()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Tcpdump:
    """A tcpdump whose count can be trusted: immediate mode, a 16 MB buffer, and its drop counters checked."""

    proc: subprocess.Popen[bytes]
    pcap: Path
    stats: dict[str, int] = field(default_factory=dict)

    def stop(self) -> dict[str, int]:
        """Stop it; returns {captured, received, dropped} and fails if tcpdump lost anything."""
        import re

        time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        text = err.decode(errors="replace")
        for name, pattern in (("captured", r"(\d+) packets? captured"), ("received", r"(\d+) packets? received"),
                              ("dropped", r"(\d+) packets? dropped by kernel")):
            match = re.search(pattern, text)
            self.stats[name] = int(match.group(1)) if match else -1
        assert self.stats["dropped"] == 0 and self.stats["captured"] == self.stats["received"], \
            f"tcpdump lost packets, its count cannot be compared: {text}"
        return self.stats


def start_tcpdump(ns: Namespace, interface: str, pcap: Path, bpf: str = "", snaplen: int = 0) -> Tcpdump:
    """Capture on `interface` in `ns` (`snaplen` bytes of each packet, 0: all); returns once tcpdump listens.

    Immediate mode matters: without it TPACKET_V3 blocks still being filled
    when tcpdump is stopped are never written, and counts come out short.
    """
    import shlex

    args = ["tcpdump", "--immediate-mode", "-B", "16384", "-i", interface, "-U", "-s", str(snaplen), "-w", str(pcap)]
    args += shlex.split(bpf)
    proc = subprocess.Popen(ns.exec_args(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = b""
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and b"listening on" not in seen:
        with contextlib.suppress(BlockingIOError, TypeError):
            seen += proc.stderr.read() or b""
        if proc.poll() is not None:
            raise AssertionError(f"tcpdump failed: {seen.decode(errors='replace')}")
        time.sleep(0.02)
    os.set_blocking(proc.stderr.fileno(), True)
    assert b"listening on" in seen, "tcpdump did not start"
    return Tcpdump(proc, pcap)
