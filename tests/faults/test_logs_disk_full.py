"""Issue 15, defect 1: log files on a full disk cost log lines, never the agent, and never a traceback.

Before: every log line on a full path.logs printed Python's "--- Logging error ---" with a traceback
(about 2,000 of them in the issue's live run).  Now each refused line is counted (logging.lines_lost),
stderr gets one line per minute at most, no torn line is left, and writing resumes when space returns.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import metrics
from agent.logs import RotatingFiles
from tests.helpers.replay import PKTBEAT, corpus, read_events, replay, write_config
from tests.helpers.tmpfs import fill, tmpfs, tmpfs_available

pytestmark = pytest.mark.skipif(tmpfs_available() is not None, reason=tmpfs_available() or "")


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    metrics.reset_for_tests()
    yield


def test_full_log_disk_counts_lines_says_so_once_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with tmpfs(tmp_path / "logs", "64k") as disk:
        handler = RotatingFiles(str(disk), "pktbeat", "log", max_bytes=10 << 20, keep=3, mode=0o600)
        logger = logging.getLogger("pktbeat.test.fulldisk")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.warning("before the disk fills")
            filler = fill(disk)
            for i in range(500):
                logger.warning("line %d while the disk is full %s", i, "x" * 100)
            notices = [line for line in err.getvalue().splitlines() if "cannot write the log file" in line]
            assert len(notices) == 1 and "No space left on device" in notices[0]
            assert "Traceback" not in err.getvalue() and "Logging error" not in err.getvalue()
            filler.unlink()
            logger.warning("after space came back")
        finally:
            logger.removeHandler(handler)
            handler.close()
        assert handler.path is not None
        text = handler.path.read_text()
        assert text.endswith("\n") and "before the disk fills" in text and "after space came back" in text
        # tmpfs hands out whole pages: the log's last page took a few lines before the disk refused the rest,
        # each refused whole (never half a line) and counted
        written = sum(1 for line in text.splitlines() if "while the disk is full" in line)
        assert all(line.endswith("x" * 100) for line in text.splitlines() if "while the disk is full" in line)
        assert written < 100 and metrics.register("logging")["lines_lost"] == 500 - written


def test_replay_with_logs_on_a_full_disk_exits_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path, None, {"path.data": str(tmp_path / "data"), "logging.level": "debug"})
    with tmpfs(tmp_path / "logs", "64k") as disk:
        fill(disk)
        done = subprocess.run(
            [PKTBEAT, "run", "-t", "-I", str(corpus("http_minitwit.pcap")), "-c", str(config),
             "-d", "*", "--path.logs", str(disk)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    assert done.stderr.count("cannot write the log file") == 1
    events, _ = replay(corpus("http_minitwit.pcap"))
    assert len(read_events(tmp_path)) == len(events) > 0  # capture and delivery carry on without their log
