"""Capturing a live exchange between namespaces and turning it into pktbeat events.

`capture_events` is the one place that decides how: by default the live eBPF
agent (tests/helpers/live.py); with PKTBEAT_LIVE_CAPTURE=0, tcpdump on
namespace a's veth, then the pcap through the CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.netns import Namespace, VethPair, stop_tcpdump, tcpdump
from tests.helpers.replay import replay

PYTHON = sys.executable


def capture_events(pair: VethPair, traffic: Callable[[], None], protocols: list[dict[str, Any]], workdir: Path,
                   bpf: str = "") -> list[dict[str, Any]]:
    if os.environ.get("PKTBEAT_LIVE_CAPTURE", "1") == "1":
        from tests.helpers.live import capture_events as live_capture

        return live_capture(pair, lambda _pair: traffic(), protocols)
    pcap = workdir / "capture.pcap"
    # Without immediate mode tcpdump loses the packets of its last, partly filled buffer block at SIGINT;
    # the shared helper passes the filter text after -w, where getopt still reads these options.
    proc = tcpdump(pair.a, pair.a_if, pcap, f"--immediate-mode -B 16384 {bpf}")
    try:
        traffic()
    finally:
        stop_tcpdump(proc)
    events, _ = replay(pcap, protocols)
    return events


def run_python(ns: Namespace, script: str, *args: str, timeout: float = 60) -> str:
    """Run a Python snippet inside `ns` (the venv's interpreter: pymemcache, redis and bson are there)."""
    proc = ns.run([PYTHON, "-c", script, *args], timeout=timeout)
    return proc.stdout
