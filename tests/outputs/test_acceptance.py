"""Acceptance a, b, c (and d through the CLI, f's `pktbeat setup`) against the Elasticsearch stand-in.

Durations are parameters (environment variables) so that CI runs short
outages and the documented full run uses the real ones:

  CI (defaults):  PKTBEAT_ACCEPT_OUTAGE=6,3,1   PKTBEAT_ACCEPT_LIVE_OUTAGE=8   PKTBEAT_ACCEPT_EVENTS=100000
  full run:       PKTBEAT_ACCEPT_OUTAGE=60,30,10 PKTBEAT_ACCEPT_LIVE_OUTAGE=600 \\
                  .venv/bin/pytest tests/outputs/test_acceptance.py -v -s

The outage is: connections refused, then every request answered 429, then
503 (seconds of each).  Memory bounds are asserted on the agent process's
RSS, sampled every 200 ms.  These tests need fault injection, so they skip
when ES_URL points at a real cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.publisher.spool import spool_pending
from tests.es_standin.harness import ROOT, StandinProcess, real_cluster_url
from tests.helpers.replay import PKTBEAT
from tests.outputs.pcapgen import icmp_pairs

EVENTS = int(os.environ.get("PKTBEAT_ACCEPT_EVENTS", "100000"))
OUTAGE = tuple(float(x) for x in os.environ.get("PKTBEAT_ACCEPT_OUTAGE", "6,3,1").split(","))
LIVE_OUTAGE = float(os.environ.get("PKTBEAT_ACCEPT_LIVE_OUTAGE", "8"))
RSS_BOUND_MB = float(os.environ.get("PKTBEAT_ACCEPT_RSS_MB", "200"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(real_cluster_url()), reason="needs the stand-in's fault injection"),
              pytest.mark.timeout(int(2 * sum(OUTAGE) + LIVE_OUTAGE + 600))]
LAUNCHER = [PKTBEAT]


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return icmp_pairs(tmp_path_factory.mktemp("pcap") / "icmp_pairs.pcap", EVENTS)


@pytest.fixture
def standin() -> Iterator[StandinProcess]:
    proc = StandinProcess("8.15.3")
    yield proc
    proc.stop()


def write_config(directory: Path, url: str, **extra: object) -> Path:
    config: dict[str, object] = {
        "packetbeat.protocols": [{"type": "icmp", "enabled": True}],
        # A short backoff cap so that every phase of a short CI outage is actually met.
        "output.elasticsearch": {"hosts": [url], "backoff": {"init": "0.5s", "max": "1s"}},
        "path.data": str(directory / "data"),
        "path.logs": str(directory / "logs"),
        **extra,
    }
    path = directory / "packetbeat.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_agent(config: Path, pcap: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen([*LAUNCHER, "run", "-e", "-t", "-I", str(pcap), "-c", str(config)], cwd=config.parent,
                            stdout=handle, stderr=subprocess.STDOUT)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def watch(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for the agent to exit; returns its peak RSS in MB."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the agent did not finish within {timeout:.0f}s")
        peak = max(peak, rss_mb(proc.pid))
        time.sleep(0.2)
    return peak


def documents(standin: StandinProcess, name: str = "packetbeat-0.9.0") -> int:
    from urllib.request import urlopen

    with urlopen(f"{standin.url}/{name}/_count") as response:
        return int(json.loads(response.read())["count"])


def outage(standin: StandinProcess) -> None:
    refuse, too_many, unavailable = OUTAGE
    standin.faults(("refuse", refuse), ("429", too_many), ("503", unavailable))
    standin.wait_phase("refuse")


def test_a_replay_through_an_outage_stores_every_event_once(tmp_path: Path, pcap: Path,
                                                            standin: StandinProcess) -> None:
    config = write_config(tmp_path, standin.url)
    log = tmp_path / "agent.log"
    outage(standin)
    started = time.monotonic()
    proc = start_agent(config, pcap, log)
    peak = watch(proc, timeout=sum(OUTAGE) + 300)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert time.monotonic() - started >= sum(OUTAGE[:2])  # it did wait the outage out
    assert documents(standin) == EVENTS
    stats = standin.stats()
    assert stats.get("status_429", 0) > 0 and stats.get("status_503", 0) > 0
    assert stats["item_201"] == EVENTS  # each event created once; a resend would have been a 409
    assert "Traceback" not in text
    assert peak < RSS_BOUND_MB, f"agent RSS peaked at {peak:.0f} MB (bound {RSS_BOUND_MB:.0f} MB)"
    print(f"\n[a] {EVENTS} events, outage {OUTAGE}s, peak RSS {peak:.1f} MB, "
          f"{time.monotonic() - started:.1f}s total, 409s {stats.get('item_409', 0)}")


def test_b_sigkill_during_the_outage_then_restart_loses_and_duplicates_nothing(
        tmp_path: Path, pcap: Path, standin: StandinProcess) -> None:
    spool_dir = tmp_path / "diskqueue"
    config = write_config(tmp_path, standin.url, queue={"disk": {"path": str(spool_dir), "max_size": "2GiB"}})
    log = tmp_path / "agent.log"
    refuse, too_many, unavailable = OUTAGE
    standin.faults(("refuse", max(refuse, 3.0) + 30), ("429", too_many), ("503", unavailable))
    standin.wait_phase("refuse")
    proc = start_agent(config, pcap, log)
    deadline = time.monotonic() + 120
    while spool_pending(spool_dir) < EVENTS:  # every event read from the pcap and on disk
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"only {spool_pending(spool_dir)} events spooled"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert standin.stats()["phase"] == "refuse"  # killed during the outage
    assert documents_or_zero(standin) == 0
    # The outage goes on a little after the restart, then the server answers 429 and 503, then recovers.
    standin.faults(("refuse", refuse), ("429", too_many), ("503", unavailable))
    empty = icmp_pairs(tmp_path / "empty.pcap", 0)
    restart = start_agent(config, empty, log)
    peak = watch(restart, timeout=sum(OUTAGE) + 300)
    text = log.read_text()
    assert restart.returncode == 0, text[-3000:]
    assert f"spool: {EVENTS} unacknowledged event(s) found" in text
    assert documents(standin) == EVENTS
    assert standin.stats()["item_201"] == EVENTS
    assert spool_pending(spool_dir) == 0
    assert peak < RSS_BOUND_MB, f"agent RSS peaked at {peak:.0f} MB"
    print(f"\n[b] {EVENTS} events spooled, SIGKILL, restart resent them all; peak RSS {peak:.1f} MB")


def test_b_the_same_input_replayed_after_a_crash_is_not_stored_twice(
        tmp_path: Path, standin: StandinProcess) -> None:
    """A crash after part of the events were delivered: restarting on the same file re-creates those
    events with the same _id, so Elasticsearch answers 409 and nothing is stored twice."""
    count = 5000
    small = icmp_pairs(tmp_path / "again.pcap", count)
    config = write_config(tmp_path, standin.url)
    log = tmp_path / "agent.log"
    base = documents_or_zero(standin)  # documents of earlier tests in this module
    conflicts = standin.stats().get("item_409", 0)
    for _ in range(2):
        proc = start_agent(config, small, log)
        watch(proc, timeout=300)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert documents(standin) == base + count
    assert standin.stats().get("item_409", 0) - conflicts == count
    looped = subprocess.run([*LAUNCHER, "run", "-e", "-t", "-l", "2", "-I", str(small), "-c", str(config)],
                            cwd=config.parent, capture_output=True, text=True, timeout=300)
    assert looped.returncode == 0, looped.stderr[-3000:]
    assert documents(standin) == base + 2 * count  # loop 2 is new data; loop 1 was already stored


def documents_or_zero(standin: StandinProcess) -> int:
    try:
        return documents(standin)
    except Exception:
        return 0


def test_c_live_outage_spool_fills_drops_are_counted_and_sending_resumes(
        tmp_path: Path, standin: StandinProcess) -> None:
    warmup, after = 3.0, 6.0
    rate = 2000
    cap = int(os.environ.get("PKTBEAT_ACCEPT_SPOOL_BYTES", str(max(1_500_000, int(LIVE_OUTAGE * rate * 250 / 3)))))
    standin.faults(("ok", warmup), ("refuse", LIVE_OUTAGE))
    report = tmp_path / "report.json"
    log = tmp_path / "driver.log"
    with open(log, "wb") as handle:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "outputs" / "live_driver.py"), "--url", standin.url,
             "--rate", str(rate), "--seconds", str(warmup + LIVE_OUTAGE + after), "--data", str(tmp_path / "data"),
             "--spool-max", str(cap), "--report", str(report)],
            stdout=handle, stderr=subprocess.STDOUT, timeout=warmup + LIVE_OUTAGE + after + 240)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    result = json.loads(report.read_text())
    samples = result["samples"]
    outage_samples = [s for s in samples if warmup + 1 <= s["t"] <= warmup + LIVE_OUTAGE]
    assert result["closed_ok"], "events still unacknowledged at the end"
    assert result["dropped"] > 0
    assert documents(standin) == result["published"] - result["dropped"]  # the rest: all stored, once
    assert max(s["spool_bytes"] for s in samples) <= cap
    assert max(s["spool_bytes"] for s in outage_samples) >= 0.9 * cap  # the spool filled to its cap
    rss = [s["rss_kb"] / 1024 for s in outage_samples]
    assert max(rss) - rss[0] < 25, f"RSS grew from {rss[0]:.1f} to {max(rss):.1f} MB during the outage"
    assert result["max_slowest_publish_s"] < 0.25  # publish() never waited for the output
    lines = result["drop_log_lines"]
    assert 1 <= len(lines) <= LIVE_OUTAGE / 10 + 3  # logged once per interval, not per event
    assert f"{result['dropped']} dropped in total" in lines[-1]
    print(f"\n[c] live {rate} ev/s, outage {LIVE_OUTAGE:.0f}s, spool cap {cap} B: published {result['published']}, "
          f"dropped {result['dropped']}, RSS {rss[0]:.1f}..{max(rss):.1f} MB, "
          f"slowest publish {result['max_slowest_publish_s'] * 1000:.1f} ms")


@pytest.mark.parametrize("version", ["8.15.3", "9.1.2"])
def test_d_cli_setup_and_replay_against_8x_and_9x(tmp_path: Path, version: str) -> None:
    standin = StandinProcess(version)
    try:
        config = write_config(tmp_path, standin.url)
        setup = subprocess.run([*LAUNCHER, "setup", "--index-management", "-c", str(config)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        assert "Data stream packetbeat-0.9.0 created" in setup.stdout
        assert "Index template packetbeat-0.9.0 installed" in setup.stdout
        small = icmp_pairs(tmp_path / "small.pcap", 500)
        run = subprocess.run([*LAUNCHER, "run", "-e", "-t", "-I", str(small), "-c", str(config)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert documents(standin) == 500
        assert standin.stats().get("media_type_refused", 0) == 0
        check = subprocess.run([*LAUNCHER, "test", "output", "-c", str(config)], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout
        assert f"version: {version}" in check.stdout
    finally:
        standin.stop()
