"""The live runner's visibility logic without a kernel: silence warnings, status line, counter reports."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from agent.capture.record import COUNTER_NAMES
from agent.runtime.interfaces import IfaceState, Interfaces, format_counters
from agent.runtime.status import LiveCounters, StatusLine

SEEN = COUNTER_NAMES.index("seen")


def _counters(**values: int) -> list[int]:
    out = [0] * len(COUNTER_NAMES)
    for name, value in values.items():
        out[COUNTER_NAMES.index(name)] = value
    return out


@pytest.fixture
def ifaces() -> Interfaces:
    return Interfaces(None, None, None)


def test_silent_interface_is_warned_about_once(ifaces: Interfaces, caplog: pytest.LogCaptureFixture) -> None:
    ifaces.attached = {1: IfaceState("lo", 0, 0.0), 99: IfaceState("busy", 0, 0.0)}
    caplog.set_level(logging.INFO, logger="pktbeat")
    ifaces.check_silence({1: _counters(seen=5), 99: _counters(seen=5)}, 1.0)
    for t in range(2, 40):  # lo silent, "busy" keeps seeing packets
        ifaces.check_silence({1: _counters(seen=5), 99: _counters(seen=5 + t)}, float(t))
    warnings = [r.message for r in caplog.records if "has seen no packet" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith("lo (ifindex 1)")
    assert "tc filter show dev lo" in warnings[0]
    ifaces.check_silence({1: _counters(seen=6), 99: _counters(seen=100)}, 41.0)
    assert any("lo sees traffic again" in r.message for r in caplog.records)


def test_no_warning_when_everything_is_quiet(ifaces: Interfaces, caplog: pytest.LogCaptureFixture) -> None:
    ifaces.attached = {1: IfaceState("lo", 0, 0.0)}
    for t in range(0, 100, 5):
        ifaces.check_silence({1: _counters(seen=3)}, float(t))
    assert not [r for r in caplog.records if "has seen no packet" in r.message]


def test_no_warning_for_an_interface_that_is_down(ifaces: Interfaces, caplog: pytest.LogCaptureFixture) -> None:
    ifaces.attached = {2: IfaceState("pbnonexistent0", 0, 0.0), 99: IfaceState("busy", 0, 0.0)}
    for t in range(0, 60):
        ifaces.check_silence({2: _counters(), 99: _counters(seen=t)}, float(t))
    assert not [r for r in caplog.records if "has seen no packet" in r.message]


def test_status_line(ifaces: Interfaces, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    ifaces.attached = {1: IfaceState("lo", 0, 0.0), 2: IfaceState("pbnonexistent0", 0, 0.0)}
    counters = LiveCounters(ifaces, max_flows=0)
    status = StatusLine(enabled=True)
    status.show(10.0, counters)
    counters.parent["events_received"] = 50
    counters.kernel_totals = _counters(seen=2000, matched=500, bytes=125_000, ring_full=3)
    status.show(11.0, counters)
    line = out.getvalue().strip().splitlines()[-1]
    assert "2 if" in line and "2.0k pkt/s" in line and "1.0Mb/s" in line and "matched 500/s" in line
    assert "events 50 (50/s)" in line and "drops 3" in line


def test_counter_report_names_drops() -> None:
    text = format_counters(_counters(seen=10, matched=4, sent=3, emitted=3, ring_full=1, unmatched=6))
    assert text.startswith("seen=10, matched=4, sent=3, emitted=3, unmatched=6")
    assert text.endswith("dropped: ring_full=1")
    assert format_counters(_counters()).endswith("dropped: none")


def test_readme_lists_every_exit_code() -> None:
    from pathlib import Path

    from agent.runtime.exitcodes import Exit

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = readme[readme.index("Exit codes:"):]
    listed = listed[: listed.index("\n\n")]
    for code in Exit:
        assert re.search(rf"(^|[\s,]){code.value} [a-z]", listed), f"README lacks {code.name} ({code.value})"
