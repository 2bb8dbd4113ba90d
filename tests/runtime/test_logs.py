"""Logs as Beats write them: ECS JSON lines, rotated files with their permissions, levels, the terminal notice."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import logs
from agent.config.model import LogFilesConfig, LoggingConfig
from tests.helpers.replay import CORPUS, PKTBEAT


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _files(directory: Path) -> list[Path]:
    """Oldest first: name-date.ext, then name-date-1.ext, -2, ..."""
    def number(path: Path) -> int:
        parts = path.stem.split("-")
        return int(parts[2]) if len(parts) > 2 else 0
    return sorted(directory.iterdir(), key=number)


def test_json_lines_carry_ecs_fields(tmp_path: Path) -> None:
    where = logs.setup(LoggingConfig(json=True, files=LogFilesConfig(name="pb")), False, (), str(tmp_path / "logs"))
    log = logging.getLogger("pktbeat.publisher")
    log.info("sent %d events", 5, extra={"output.name": "file"})
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("it failed")
    logging.getLogger().handlers[0].flush()
    assert where.endswith(".ndjson") and Path(where).parent == tmp_path / "logs"
    lines = [json.loads(line) for line in Path(where).read_text().splitlines()]
    first, second = lines
    assert first["message"] == "sent 5 events" and first["log.level"] == "info"
    assert first["log.logger"] == "publisher" and first["output.name"] == "file"
    assert first["@timestamp"].endswith("Z") and first["ecs.version"] and first["service.name"] == "pktbeat"
    assert first["log.origin"]["file.name"] == "runtime/test_logs.py" or first["log.origin"]["file.line"] > 0
    assert second["log.level"] == "error" and second["error.type"] == "ValueError"
    assert second["error.message"] == "bad thing" and "Traceback" in second["error.stack_trace"]


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        where = logs.setup(LoggingConfig(), False, (), str(tmp_path / "logs"))
        logging.getLogger("pktbeat").warning("hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "logs").st_mode) == 0o700
    where = logs.setup(LoggingConfig(files=LogFilesConfig(permissions="0640")), False, (), str(tmp_path / "l2"))
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o640
    # YAML reads an unquoted 0644 as the integer 420, as Go's YAML does for Beats
    assert logs.file_mode("420") == 0o644 and logs.file_mode("0o640") == 0o640 and logs.file_mode("99999") == 0o600


def test_rotation_by_size_keeps_keepfiles(tmp_path: Path) -> None:
    config = LoggingConfig(files=LogFilesConfig(name="pb", rotateeverybytes=1000, keepfiles=3))
    logs.setup(config, False, (), str(tmp_path))
    log = logging.getLogger("pktbeat")
    for i in range(100):
        log.info("line %03d %s", i, "x" * 60)
    files = _files(tmp_path)
    assert len(files) == 3, files
    assert all(f.stat().st_size <= 1000 for f in files)
    texts = [f.read_text() for f in files]
    assert "line 099" in texts[-1] and "line 000" not in "".join(texts)
    assert files[-1].name.startswith("pb-") and files[-1].name.endswith(".log")


def test_rotate_on_startup_and_append(tmp_path: Path) -> None:
    first = logs.setup(LoggingConfig(), False, (), str(tmp_path))
    logging.getLogger("pktbeat").info("one")
    second = logs.setup(LoggingConfig(), False, (), str(tmp_path))
    assert second != first
    third = logs.setup(LoggingConfig(files=LogFilesConfig(rotateonstartup=False)), False, (), str(tmp_path))
    assert third == second


def test_interval_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs.setup(LoggingConfig(files=LogFilesConfig(interval=60.0)), False, (), str(tmp_path))
    log = logging.getLogger("pktbeat")
    log.info("before")
    real = logs.time.time
    monkeypatch.setattr(logs.time, "time", lambda: real() + 120)
    log.info("after")
    files = _files(tmp_path)
    assert len(files) == 2 and "after" in files[-1].read_text() and "after" not in files[0].read_text()


def test_level_and_selectors(tmp_path: Path) -> None:
    where = logs.setup(LoggingConfig(level="warning"), False, (), str(tmp_path))
    logging.getLogger("pktbeat.http").info("quiet")
    logging.getLogger("pktbeat.http").warning("loud")
    text = Path(where).read_text()
    assert "loud" in text and "quiet" not in text
    where = logs.setup(LoggingConfig(), False, ("tcp",), str(tmp_path / "d"))
    logging.getLogger("pktbeat.tcp").debug("tcp detail")
    logging.getLogger("pktbeat.http").debug("http detail")
    text = Path(where).read_text()
    assert "tcp detail" in text and "http detail" not in text


def test_to_stderr_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert logs.setup(LoggingConfig(json=True, to_stderr=True), False, (), str(tmp_path)) == "stderr"
    logging.getLogger("pktbeat").info("to the journal")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "to the journal"
    assert not any(tmp_path.iterdir())


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run pktbeat with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.run([PKTBEAT, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=child_fd, timeout=60, cwd=cwd, env={**os.environ, "COLUMNS": "160"})
        os.close(child_fd)
        child_fd = -1
        out = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main_fd)
        if child_fd >= 0:
            os.close(child_fd)
    return proc.returncode, out.decode(errors="replace")


def test_run_on_a_terminal_says_where_events_and_logs_go(tmp_path: Path) -> None:
    """Without -e, a terminal user learns where the events and the logs are, and sees replay's progress bar."""
    code, text = _run_on_a_terminal(["run", "-c", "/dev/null", "-I", str(CORPUS / "http_minitwit.pcap"), "-t",
                                     "-E", f"path.home={tmp_path}", "-E", "packetbeat.protocols=[{type: http}]"],
                                    tmp_path)
    assert code == 0
    line = next(line for line in text.splitlines() if "events go to" in line)
    assert f"{tmp_path}/data/packetbeat-*.ndjson" in line and f"logs go to {tmp_path}/logs/pktbeat-" in line
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")
    bar = [line for line in plain.splitlines() if "http_minitwit.pcap" in line][-1]
    assert "100%" in bar and "ETA" in bar
    assert re.search(r"[\d.]+[kMG]? pkt/s", bar) and re.search(r"events [\d.]+[kMG]?", bar), bar
