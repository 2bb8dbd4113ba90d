"""Packetbeat's file output: NDJSON files with size-based rotation.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Files are named like Packetbeat 8's: `<filename>-<YYYYMMDD>.ndjson`, then
`<filename>-<YYYYMMDD>-1.ndjson`, ... (higher numbers are newer).  At most
`number_of_files` are kept; the oldest is deleted.  A new directory is made
0700 and files get `permissions` (0600): events carry captured payloads.

A write that fails (a full disk: ENOSPC, EDQUOT; EIO) never leaves a torn
line: the file is cut back to the end of the last complete line, the events
written are acknowledged and the rest are retried (RETRY), so nothing is
written twice.  Writing resumes by itself when space returns (the pipeline
retries at least every `backoff_max` seconds); the failure is logged once per
`LOG_INTERVAL` with what is full, and its end once.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.config.typed import opt
from agent.publisher.types import EncodedEvent, Outcome, OutputError
from agent.version import VERSION

log: Final = logging.getLogger("pktbeat.output.file")

METADATA: Final = b'"@metadata":{"beat":"packetbeat","type":"_doc","version":"' + VERSION.encode() + b'"},'
_LINE_HEAD: Final = b"{" + METADATA  # a line: this, the event after its "{", and a newline
_LINE_EXTRA: Final = len(METADATA) + 1  # a line's length beyond its event's
LOG_INTERVAL: Final = 10.0
# Errors that say the directory itself is wrong (fix the config), not that the disk is full for now.
_FATAL_AT_START: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOENT})


def _files_range(value: int) -> str | None:
    return None if 2 <= value <= 1024 else "must be between 2 and 1024"


@dataclass(frozen=True)
class FileOutputConfig:
    path: str = opt("")
    filename: str = opt("packetbeat")
    rotate_every_kb: int = opt(10 * 1024, check=lambda v: None if v >= 1 else "must be at least 1")
    number_of_files: int = opt(7, check=_files_range)
    permissions: str = opt("0600", kind="mode")
    rotate_on_startup: bool = opt(True)
    codec: dict[str, Any] = opt({})


CONFIG_CLASS = FileOutputConfig


class FileOutput:
    name = "file"
    backoff_max = 1.0  # a full disk is retried every second: writing resumes soon after space returns

    def __init__(self, config: FileOutputConfig) -> None:
        self.config = config
        self.directory = Path(config.path or "data")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise OutputError(f"output.file.path: cannot create {self.directory}: {exc.strerror}") from None
        self.limit = config.rotate_every_kb * 1024
        self.mode = int(config.permissions, 8)
        self._pattern = re.compile(re.escape(config.filename) + r"-(\d{8})(?:-(\d+))?\.ndjson$")
        self._fd = -1
        self._path = self.directory
        self._size = 0
        self._error: OSError | None = None
        self._error_since = 0.0
        self._last_error_log = 0.0
        self._waiting = 0
        try:
            self._open(rotate=config.rotate_on_startup)
        except OSError as exc:
            if exc.errno in _FATAL_AT_START:
                raise OutputError(f"output.file.path: cannot write in {self.directory}: {exc.strerror}") from None
            self._failed(exc, 0)  # a full disk at start: capture starts anyway, writing is retried

    # Files of this output, oldest first: (date, index, path).
    def _existing(self) -> list[tuple[str, int, Path]]:
        found = []
        for entry in self.directory.iterdir():
            match = self._pattern.match(entry.name)
            if match:
                found.append((match.group(1), int(match.group(2) or 0), entry))
        return sorted(found)

    def _open(self, rotate: bool) -> None:
        today = time.strftime("%Y%m%d", time.gmtime())
        existing = [f for f in self._existing() if f[0] == today]
        index = 0
        if existing:
            last = existing[-1]
            index = last[1] + 1 if rotate and last[2].stat().st_size > 0 else last[1]
        name = f"{self.config.filename}-{today}" + (f"-{index}" if index else "") + ".ndjson"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.mode)  # read: a torn tail
        try:
            os.fchmod(fd, self.mode)  # the umask must not widen or narrow what the operator asked for
            self._size = _cut_torn_line(fd, path)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._path = path
        self._prune()

    def _prune(self) -> None:
        files = self._existing()
        for _, _, path in files[: max(0, len(files) - self.config.number_of_files)]:
            try:
                path.unlink()
            except OSError:
                pass

    def _rotate(self) -> None:
        self._close_fd()
        self._open(rotate=True)

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        done = 0
        error: OSError | None = None
        try:
            if self._fd < 0:
                self._open(rotate=False)
            # Each line as three parts joined once per write: concatenating a line first allocates and
            # copies it three times (about 1 us an event for 1 KB events).
            run: list[bytes | memoryview] = []
            sizes: list[int] = []
            run_bytes = 0
            for event in batch:
                data = event.data
                size = len(data) + _LINE_EXTRA
                if self._size + run_bytes and self._size + run_bytes + size > self.limit:
                    written, error = self._write(run, sizes, run_bytes)
                    done += written
                    if error is not None:
                        break
                    run, sizes, run_bytes = [], [], 0
                    self._rotate()
                run.append(_LINE_HEAD)
                run.append(memoryview(data)[1:])
                run.append(b"\n")
                sizes.append(size)
                run_bytes += size
            if error is None:
                written, error = self._write(run, sizes, run_bytes)
                done += written
        except OSError as exc:
            error = exc
        if error is not None:
            self._failed(error, len(batch) - done)
            return [Outcome.ACKED] * done + [Outcome.RETRY] * (len(batch) - done)
        if self._error is not None:
            log.warning("output.file: writing to %s again after %.0fs", self._path,
                        time.monotonic() - self._error_since)
            self._error = None
        return [Outcome.ACKED] * len(batch)

    def _write(self, parts: list[bytes | memoryview], sizes: list[int], total: int) -> tuple[int, OSError | None]:
        """Write whole lines (`parts` joined; `sizes`, each line's length): (lines in the file, None), or
        after a failure, the file cut back to the last complete line: (lines in the file, the error)."""
        if not sizes:
            return 0, None
        data = memoryview(b"".join(parts))
        written = 0
        try:
            while written < total:
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            complete, end = _complete_lines(sizes, written)
            if written > end:
                try:
                    os.ftruncate(self._fd, self._size + end)
                except OSError as cut:
                    log.error("output.file: cannot remove a partly written line from %s: %s", self._path,
                              cut.strerror)
            self._size += end
            return complete, exc
        self._size += total
        return len(sizes), None

    def _failed(self, exc: OSError, waiting: int) -> None:
        now = time.monotonic()
        if self._error is None:
            self._error_since = now
            self._last_error_log = 0.0
        self._error = exc
        self._waiting = waiting
        if self._last_error_log and now - self._last_error_log < LOG_INTERVAL:
            return
        self._last_error_log = now
        log.warning("output.file: cannot write to %s: %s; %d event(s) wait and are retried (failing for %.0fs)",
                    self._path, exc.strerror or exc, waiting, now - self._error_since)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close_fd()


def _complete_lines(sizes: list[int], written: int) -> tuple[int, int]:
    """How many lines (of `sizes` bytes each) fit whole in `written` bytes, and their length."""
    end = 0
    for count, size in enumerate(sizes):
        if end + size > written:
            return count, end
        end += size
    return len(sizes), end


def _cut_torn_line(fd: int, path: Path) -> int:
    """The file's size after cutting a torn last line (a crash mid-write) off; the lines before it stay."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = size
    step = 65536
    while keep > 0:
        start = max(0, keep - step)
        chunk = os.pread(fd, keep - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            break
        keep = start
    os.ftruncate(fd, keep)
    log.warning("output.file: %s ended with a partly written line (%d bytes, from a crash); removed it", path,
                size - keep)
    return keep


def create(config: FileOutputConfig, context: Any = None) -> FileOutput:
    return FileOutput(config)
