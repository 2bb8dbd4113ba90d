"""`pktbeat top` as a person uses it: under tmux, read back with capture-pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from agent.runtime import topstats
from tests.helpers.live import live_available, tc_filters
from tests.helpers.netns import veth_pair
from tests.helpers.replay import PKTBEAT


def test_transaction_stats_are_bounded_and_percentiles_interpolate() -> None:
    stats = topstats.TransactionStats(max_endpoints=8)
    for i in range(100):
        stats.add({"type": "http", "event": {"duration": 2_000_000}, "destination": {"ip": f"10.0.0.{i}", "port": 80}})
    for _ in range(50):
        stats.add({"type": "http", "event": {"duration": 4_000_000}, "destination": {"ip": "10.0.0.200", "port": 80}})
    assert len(stats.endpoints) <= 8 and stats.evicted > 0
    assert stats.snapshot()["endpoints"]["http 10.0.0.200:80"] == [50, 200_000_000, 4_000_000]
    merged = topstats.merge([stats.snapshot(), stats.snapshot()])
    assert merged["endpoints"]["http 10.0.0.200:80"][0] == 100 and sum(merged["latency"]["http"]) == 300
    p50 = topstats.percentile(merged["latency"]["http"], 0.5)
    assert p50 is not None and 0.001 < p50 <= 0.0025
    assert topstats.percentile([0] * 17, 0.5) is None


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.live
@pytest.mark.skipif(live_available() is not None or shutil.which("tmux") is None,
                    reason=str(live_available() or "tmux missing"))
def test_top_under_tmux_shows_interface_and_protocol_then_quits_on_q() -> None:
    socket = f"pktbeat-top-{os.getpid()}"
    done = Path(tempfile.mkdtemp(prefix="pktbeat-top-test-")) / "exit"
    try:
        with veth_pair("pbt") as pair:
            pair.b.popen(["python3", "-m", "http.server", "8080", "--bind", pair.b_ip])
            pair.b.wait_port(8080, pair.b_ip)
            command = shlex.join([*pair.a.exec_args([PKTBEAT, "top", "-i", pair.a_if, "-E",
                                                     "packetbeat.protocols=[{type: http, ports: [8080]}]"])])
            started = _tmux(socket, "new-session", "-d", "-s", "top", "-x", "150", "-y", "50",
                            f"{command}; echo $? > {done}; sleep 60")
            assert started.returncode == 0, started.stderr
            screen = ""
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and pair.a_if not in screen:
                time.sleep(0.3)
                screen = _tmux(socket, "capture-pane", "-p", "-t", "top").stdout
            assert pair.a_if in screen and "pktbeat top" in screen, screen
            traffic_at = time.monotonic()
            for _ in range(5):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:8080/"])
            lines: list[str] = []
            while time.monotonic() - traffic_at < 3.0:
                screen = _tmux(socket, "capture-pane", "-p", "-t", "top").stdout
                lines = [line for line in screen.splitlines() if line.split() and line.split()[0] in ("http", "│")]
                if any("http" in line and "5" in line for line in lines):
                    break
                time.sleep(0.2)
            assert any(line.split()[0] == "http" or " http " in line for line in lines), screen
            assert time.monotonic() - traffic_at < 3.5
            assert f"{pair.b_ip}:8080" in screen  # the top endpoints
            _tmux(socket, "send-keys", "-t", "top", "q")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (done.exists() and done.read_text().strip()):
                time.sleep(0.2)
            assert done.read_text().strip() == "0"
            assert tc_filters(pair.a, pair.a_if) == []
    finally:
        _tmux(socket, "kill-server")
        shutil.rmtree(done.parent, ignore_errors=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux missing")
def test_top_without_an_agent_says_so_and_quits_on_ctrl_c() -> None:
    socket = f"pktbeat-top-c-{os.getpid()}"
    done = Path(tempfile.mkdtemp(prefix="pktbeat-top-test-")) / "exit"
    try:
        command = shlex.join([PKTBEAT, "top", "--url", "http://127.0.0.1:9"])
        started = _tmux(socket, "new-session", "-d", "-s", "top", "-x", "120", "-y", "30",
                        f"{command}; echo $? > {done}; sleep 30")
        assert started.returncode == 0, started.stderr
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "cannot read" not in screen:
            time.sleep(0.2)
            screen = _tmux(socket, "capture-pane", "-p", "-t", "top").stdout
        assert "cannot read http://127.0.0.1:9" in screen and "pktbeat top" in screen, screen
        _tmux(socket, "send-keys", "-t", "top", "C-c")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (done.exists() and done.read_text().strip()):
            time.sleep(0.1)
        assert done.read_text().strip() == "0"
    finally:
        _tmux(socket, "kill-server")
        shutil.rmtree(done.parent, ignore_errors=True)
