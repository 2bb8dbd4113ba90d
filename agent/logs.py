"""Logging as Beats do it: -e (stderr), -d selectors, rotated files under path.logs, ECS JSON lines.

- `logging.to_stderr` (or `-e`) writes to stderr; otherwise, with `logging.to_files` (the default),
  to `<logging.files.path or path.logs>/<name>-<yyyymmdd>.ndjson` (`.log` for plain text), as Beats 8
  names its files: a rotation opens `<name>-<yyyymmdd>-1.ndjson`, `-2`, ... and only the newest
  `keepfiles` files are kept.  Files rotate at `rotateeverybytes`, every `interval` (aligned to the
  clock, 0 = never) and, with `rotateonstartup`, at start.  They are created with
  `logging.files.permissions` (0600 by default, whatever the umask: logs can name hosts and
  queries), in a directory made 0700.
- `logging.json: true` writes ECS JSON lines: `@timestamp`, `log.level`, `log.logger`,
  `log.origin`, `message`, `service.name`, `ecs.version`, the `extra=` fields of the call, and
  `error.*` for exceptions.
- `logging.level` and `-d`/`logging.selectors`: debug records of only the selected loggers.
- `logging.to_syslog: true` also sends them to the local syslog socket (when there is one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from agent import metrics
from agent.config.model import LoggingConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
ECS_VERSION = "1.6.0"
SERVICE = "pktbeat"
DIR_MODE = 0o700
LOST_NOTICE_S = 60.0
# The attributes every LogRecord has: anything else on a record came from `extra=` and becomes a field.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _SelectorFilter(logging.Filter):
    """With -d selectors, debug records pass only for the selected loggers (pktbeat.<selector>)."""

    def __init__(self, selectors: tuple[str, ...]) -> None:
        super().__init__()
        self.selectors = selectors

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG or "*" in self.selectors:
            return True
        name = record.name.removeprefix("pktbeat.")
        return any(name == s or name.startswith(s + ".") for s in self.selectors)


class EcsJsonFormatter(logging.Formatter):
    """One ECS JSON object per line, with Beats' dotted top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        doc: dict[str, Any] = {
            "log.level": record.levelname.lower().replace("warning", "warn"),
            "@timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "log.logger": record.name.removeprefix("pktbeat.") if record.name != "pktbeat" else "pktbeat",
            "log.origin": {"file.name": _origin_file(record.pathname), "file.line": record.lineno,
                           "function": record.funcName},
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            doc["error.type"] = exc_type.__name__
            doc["error.message"] = str(exc)
            doc["error.stack_trace"] = "".join(traceback.format_exception(exc_type, exc, tb))
        doc["service.name"] = SERVICE
        doc["ecs.version"] = ECS_VERSION
        return json.dumps(doc, default=str, ensure_ascii=False)


def _origin_file(pathname: str) -> str:
    """agent/runtime/live.py -> runtime/live.py (as Beats shows package/file.go)."""
    parts = Path(pathname).parts
    if "agent" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("agent"):])
    return os.path.basename(pathname)


TEXT_FORMAT = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-5s [%(name)s] %(message)s",
                                "%Y-%m-%dT%H:%M:%S")


class RotatingFiles(logging.Handler):
    """Beats 8's log files: `<name>-<date>[-N].<ext>`, rotated by size, interval and at start."""

    def __init__(self, directory: str, name: str, extension: str, max_bytes: int, keep: int, mode: int,
                 interval_s: float = 0.0, rotate_on_startup: bool = True) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.name_prefix = name
        self.extension = extension
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.mode = mode
        self.interval_s = interval_s
        self._fd: int | None = None
        self._size = 0
        self.counters = metrics.register("logging", ("lines_lost",))  # lines a full or failing disk refused
        self._lost_noticed = 0
        self._next_notice = 0.0
        self._next_rotation = float("inf")
        self._pid = os.getpid()  # forked capture workers append to the parent's file and never rotate it
        self.path: Path | None = None
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        newest = self._existing()[-1:] if not rotate_on_startup else []
        self._open(newest[0] if newest else None)

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.name_prefix) + r"-(\d{8})(?:-(\d+))?" + re.escape("." + self.extension) + "$")

    def _existing(self) -> list[Path]:
        """Our files, oldest first (by date, then by rotation number)."""
        pattern = self._pattern()
        found: list[tuple[str, int, Path]] = []
        for entry in self.directory.iterdir():
            match = pattern.match(entry.name)
            if match:
                found.append((match.group(1), int(match.group(2) or 0), entry))
        return [path for _, _, path in sorted(found)]

    def _new_path(self) -> Path:
        """Today's next file: numbers only grow, so that pruning the oldest never frees a name to reuse."""
        day = time.strftime("%Y%m%d")
        pattern = self._pattern()
        numbers = [int(m.group(2) or 0) for p in self._existing() if (m := pattern.match(p.name)) and m.group(1) == day]
        index = max(numbers) + 1 if numbers else 0
        return self.directory / f"{self.name_prefix}-{day}{f'-{index}' if index else ''}.{self.extension}"

    def _open(self, path: Path | None) -> None:
        path = path or self._new_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.mode)
        os.fchmod(fd, self.mode)  # the umask must not widen or narrow what the operator asked for
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self.path = path
        if self.interval_s > 0:
            now = time.time()
            self._next_rotation = (now // self.interval_s + 1) * self.interval_s
        self._prune()

    def _prune(self) -> None:
        files = self._existing()
        for old in files[: max(0, len(files) - self.keep)]:
            if old != self.path:
                try:
                    old.unlink()
                except OSError:
                    pass

    def rotate(self) -> None:
        self._close_fd()
        self._open(None)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            full = self._size > 0 and self._size + len(data) > self.max_bytes > 0
            # Forked capture workers append to the parent's file; only the parent rotates it.
            if self._fd is None or (os.getpid() == self._pid and (full or time.time() >= self._next_rotation)):
                self.rotate()
            assert self._fd is not None
            self._write(self._fd, data)
        except OSError as exc:
            self._refused(exc)
        except Exception:
            self.handleError(record)

    def _write(self, fd: int, data: bytes) -> None:
        """The whole line or nothing: a failed write is cut back, so no torn line is left behind."""
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            if len(view) < len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise
        self._size = start + len(data)

    def _refused(self, exc: OSError) -> None:
        """A full or failing disk costs log lines, never the agent: count them, say so once a minute."""
        self.counters["lines_lost"] += 1
        now = time.monotonic()
        if now < self._next_notice:
            return
        self._next_notice = now + LOST_NOTICE_S
        with contextlib.suppress(Exception):
            sys.stderr.write(f"pktbeat: cannot write the log file {self.path}: {exc.strerror or exc}; "
                             f"{self.counters['lines_lost'] - self._lost_noticed} log line(s) lost (said at most once "
                             f"every {LOST_NOTICE_S:.0f}s; writing resumes by itself)\n")
            sys.stderr.flush()
        self._lost_noticed = self.counters["lines_lost"]

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def flush(self) -> None:
        pass  # every line is written straight to the file

    def close(self) -> None:
        self._close_fd()
        super().close()


def file_mode(text: str | int) -> int:
    """`logging.files.permissions` as a mode: "0600"/"0o640" are octal; a bare number is YAML's reading of
    an unquoted 0600 (384), as Beats takes it.  Anything else, or bits beyond 0777, gives 0600."""
    raw = str(text).strip().lower()
    try:
        value = int(raw, 8) if raw.startswith("0") else int(raw)
    except ValueError:
        return 0o600
    return value if 0 <= value <= 0o777 else 0o600


class _SyslogFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"pktbeat[{os.getpid()}]: {record.levelname} [{record.name}] {record.getMessage()}"


def _syslog() -> logging.Handler | None:
    for address in ("/dev/log", "/var/run/syslog"):
        if os.path.exists(address):
            try:
                handler = logging.handlers.SysLogHandler(address=address)
            except OSError:
                continue
            handler.setFormatter(_SyslogFormat())
            return handler
    return None


def setup(config: LoggingConfig, to_stderr: bool, selectors: tuple[str, ...], logs_path: str) -> str:
    """Configure the root logger; returns where logs go ("stderr", a file path, or "nowhere")."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    level = _LEVELS.get(config.level, logging.INFO)
    all_selectors = tuple(selectors) + tuple(config.selectors)
    if all_selectors:
        level = logging.DEBUG
    fmt: logging.Formatter = EcsJsonFormatter() if config.json else TEXT_FORMAT
    handlers: list[logging.Handler] = []
    where = "nowhere"
    if to_stderr or config.to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
        where = "stderr"
    elif config.to_files:
        files = config.files
        try:
            handler = RotatingFiles(files.path or logs_path, files.name, "ndjson" if config.json else "log",
                                    files.rotateeverybytes, files.keepfiles, file_mode(files.permissions),
                                    files.interval, files.rotateonstartup)
            handlers.append(handler)
            where = str(handler.path)
        except OSError as exc:
            handlers.append(logging.StreamHandler(sys.stderr))
            where = "stderr"
            sys.stderr.write(f"pktbeat: cannot write logs under {files.path or logs_path} ({exc.strerror}); "
                             f"logging to stderr\n")
    for handler in handlers:
        handler.setFormatter(fmt)
    if config.to_syslog and not (to_stderr or config.to_stderr):
        syslog = _syslog()
        if syslog is not None:
            handlers.append(syslog)
            where = "syslog" if where == "nowhere" else f"{where} and syslog"
    for handler in handlers:
        if all_selectors:
            handler.addFilter(_SelectorFilter(all_selectors))
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return where


def events_destination(output_name: str, output_config: Any) -> str:
    """Where the configured output sends events, in a few words."""
    if output_name == "file":
        path = getattr(output_config, "path", "")
        name = getattr(output_config, "filename", "packetbeat")
        return f"{path}/{name}-*.ndjson (file output)"
    if output_name == "console":
        return "stdout (console output)"
    if output_name == "discard":
        return "nowhere (discard output)"
    hosts = getattr(output_config, "hosts", ())
    return f"{output_name} at {', '.join(hosts) or '?'}"


def announce(output_name: str, output_config: Any, logs_where: str, stream: TextIO | None = None) -> None:
    """On a terminal, one line saying where events and logs go (a user without -e sees nothing else)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return
    stream.write(f"pktbeat: events go to {events_destination(output_name, output_config)}; "
                 f"logs go to {logs_where}\n")
    stream.flush()
