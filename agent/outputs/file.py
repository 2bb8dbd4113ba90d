"""Packetbeat's file output: NDJSON files with size-based rotation.

Files are named like Packetbeat 8's: `<filename>-<YYYYMMDD>.ndjson`, then
`<filename>-<YYYYMMDD>-1.ndjson`, ... (higher numbers are newer).  At most
`number_of_files` are kept; the oldest is deleted.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.config.typed import opt
from agent.publisher.types import EncodedEvent, Outcome, OutputError
from agent.version import VERSION

METADATA = b'"@metadata":{"beat":"packetbeat","type":"_doc","version":"' + VERSION.encode() + b'"},'


def _files_range(value: int) -> str | None:
    return None if 2 <= value <= 1024 else "must be between 2 and 1024"


def _permissions(value: str) -> str | None:
    try:
        int(value, 8)
    except ValueError:
        return "must be an octal mode such as 0600"
    return None


@dataclass(frozen=True)
class FileOutputConfig:
    path: str = opt("")
    filename: str = opt("packetbeat")
    rotate_every_kb: int = opt(10 * 1024, check=lambda v: None if v >= 1 else "must be at least 1")
    number_of_files: int = opt(7, check=_files_range)
    permissions: str = opt("0600", check=_permissions)
    rotate_on_startup: bool = opt(True)
    codec: dict[str, Any] = opt({})


CONFIG_CLASS = FileOutputConfig


class FileOutput:
    name = "file"

    def __init__(self, config: FileOutputConfig) -> None:
        self.config = config
        self.directory = Path(config.path or "data")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"output.file.path: cannot create {self.directory}: {exc.strerror}") from None
        self.limit = config.rotate_every_kb * 1024
        self.mode = int(config.permissions, 8)
        self._pattern = re.compile(re.escape(config.filename) + r"-(\d{8})(?:-(\d+))?\.ndjson$")
        self._handle: BinaryIO | None = None
        self._size = 0
        self._open(rotate=config.rotate_on_startup)

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.mode)
        self._handle = os.fdopen(fd, "ab", buffering=1 << 16)
        self._size = path.stat().st_size
        self._prune()

    def _prune(self) -> None:
        files = self._existing()
        for _, _, path in files[: max(0, len(files) - self.config.number_of_files)]:
            try:
                path.unlink()
            except OSError:
                pass

    def _rotate(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._open(rotate=True)

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        assert self._handle is not None
        write = self._handle.write
        for event in batch:
            line = b"{" + METADATA + event.data[1:] + b"\n"
            if self._size and self._size + len(line) > self.limit:
                self._handle.flush()
                self._rotate()
                write = self._handle.write
            write(line)
            self._size += len(line)
        self._handle.flush()
        return [Outcome.ACKED] * len(batch)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def create(config: FileOutputConfig, context: Any = None) -> FileOutput:
    return FileOutput(config)
