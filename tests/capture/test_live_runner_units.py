"""The live runner's visibility logic without a kernel: silence warnings, status line, counter reports."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from agent.capture.record import COUNTER_NAMES
from agent.config.load import load
from agent.runtime import live
from agent.runtime.live import LiveOptions, LiveRunner, _format_counters, _IfaceState

SEEN = COUNTER_NAMES.index("seen")


def _counters(**values: int) -> list[int]:
    out = [0] * len(COUNTER_NAMES)
    for name, value in values.items():
        out[COUNTER_NAMES.index(name)] = value
    return out


@pytest.fixture
def runner() -> LiveRunner:
    r = LiveRunner(load(None), LiveOptions(status=False))
    r._ifaces = {1: _IfaceState("lo", 0, 0.0), 2: _IfaceState("pbnonexistent0", 0, 0.0)}
    return r


def test_silent_interface_is_warned_about_once(runner: LiveRunner, caplog: pytest.LogCaptureFixture) -> None:
    runner._ifaces = {1: _IfaceState("lo", 0, 0.0), 99: _IfaceState("busy", 0, 0.0)}
    caplog.set_level(logging.INFO, logger="pktbeat")
    runner._check_silence({1: _counters(seen=5), 99: _counters(seen=5)}, 1.0)
    for t in range(2, 40):  # lo silent, "busy" keeps seeing packets
        runner._check_silence({1: _counters(seen=5), 99: _counters(seen=5 + t)}, float(t))
    warnings = [r.message for r in caplog.records if "has seen no packet" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith("lo (ifindex 1)")
    assert "tc filter show dev lo" in warnings[0]
    runner._check_silence({1: _counters(seen=6), 99: _counters(seen=100)}, 41.0)
    assert any("lo sees traffic again" in r.message for r in caplog.records)


def test_no_warning_when_everything_is_quiet(runner: LiveRunner, caplog: pytest.LogCaptureFixture) -> None:
    runner._ifaces = {1: _IfaceState("lo", 0, 0.0)}
    for t in range(0, 100, 5):
        runner._check_silence({1: _counters(seen=3)}, float(t))
    assert not [r for r in caplog.records if "has seen no packet" in r.message]


def test_no_warning_for_an_interface_that_is_down(runner: LiveRunner, caplog: pytest.LogCaptureFixture) -> None:
    runner._ifaces = {2: _IfaceState("pbnonexistent0", 0, 0.0), 99: _IfaceState("busy", 0, 0.0)}
    for t in range(0, 60):
        runner._check_silence({2: _counters(), 99: _counters(seen=t)}, float(t))
    assert not [r for r in caplog.records if "has seen no packet" in r.message]


def test_status_line(runner: LiveRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    runner._show_status(10.0, _counters(seen=0))
    runner.stats["events_received"] = 50
    runner._show_status(11.0, _counters(seen=2000, matched=500, bytes=125_000, ring_full=3))
    line = out.getvalue().strip().splitlines()[-1]
    assert "2 if" in line and "2.0k pkt/s" in line and "1.0Mb/s" in line and "matched 500/s" in line
    assert "events 50 (50/s)" in line and "drops 3" in line


def test_counter_report_names_drops() -> None:
    text = _format_counters(_counters(seen=10, matched=4, sent=3, emitted=3, ring_full=1, unmatched=6))
    assert text.startswith("seen=10, matched=4, sent=3, emitted=3, unmatched=6")
    assert text.endswith("dropped: ring_full=1")
    assert _format_counters(_counters()).endswith("dropped: none")


def test_exit_codes_match_the_cli() -> None:
    from agent.cli.main import Exit

    assert (live.EXIT_OK, live.EXIT_INPUT, live.EXIT_PUBLISH_TIMEOUT, live.EXIT_NO_BPF, live.EXIT_NO_PRIVILEGES,
            live.EXIT_NO_HEADERS, live.EXIT_NO_INTERFACE, live.EXIT_OUTPUT) == (
        Exit.OK, Exit.INPUT, Exit.PUBLISH_TIMEOUT, Exit.NO_BPF, Exit.NO_PRIVILEGES, Exit.NO_HEADERS,
        Exit.NO_INTERFACE, Exit.OUTPUT)
