"""The live supervisor's timers: it sleeps between its jobs (an idle agent costs no CPU)."""

from __future__ import annotations

import pytest

from agent.config.load import load
from agent.runtime.live import TLS_POLL_S, _Timers


def run_due_jobs(timers: _Timers, now: float, tls: bool) -> None:
    """What the supervisor's tick asks, with TLS plaintext probes running or not."""
    timers.due_reconcile(now)
    timers.due("counters", now)
    timers.due("flows", now)
    if tls:
        timers.due("tls", now)
    timers.due("metrics", now)


@pytest.mark.parametrize("tls", [False, True])
def test_the_supervisor_sleeps_until_its_next_job(tls: bool) -> None:
    config = load(None, extra={"logging.level": "warning"})
    timers = _Timers(config, 0.0, tls=tls)
    for step in range(1, 200):  # ten seconds of ticks
        now = step * 0.05
        run_due_jobs(timers, now, tls)
        wait = timers.wait(now)
        # A job whose timer nobody takes would make this 0: the loop would spin (it did, with TLS plaintext off).
        assert wait > 0
        assert wait <= (TLS_POLL_S if tls else 0.25) + 1e-9
