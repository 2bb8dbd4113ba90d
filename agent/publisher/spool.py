"""The disk spool: an append-only FIFO of encoded events in segment files, with a persisted ack position.

Layout in the spool directory (0700, files 0600: spooled events carry payloads):
  - `<first sequence number, 16 digits>.seg`: segments of framed, checksummed
    records (agent/publisher/spoolformat.py);
  - `ack.json`: `{"segment": <first sequence of the segment>, "offset": <bytes>}`,
    the first record not yet acknowledged.  Written atomically (rename).

Records are read back in order, sent, and acknowledged as a contiguous prefix;
a segment is deleted once every record in it is acknowledged.  A restart reads
`ack.json` and resends everything after it, so an event is never lost between
the spool and the output; an event acknowledged just before a crash may be
resent, which the deterministic document id makes harmless.

Damage (agent/publisher/spoolrecovery.py): a damaged record is skipped by
resynchronising on the next valid one, counted (`spool.corrupt_records`) and
logged; a bad `ack.json` means resending from the oldest segment.

Writes: appends are buffered in memory up to `write_ahead` records
(Packetbeat's setting) and handed to the kernel by `flush()` (called by the
pipeline about every `sync_interval`), so a SIGKILL loses at most that buffer;
fsync runs at each segment roll and every `sync_interval`.  A write that fails
(a full disk: ENOSPC, EDQUOT; EIO) keeps the buffer, which readers still see,
and is retried every `retry_interval`; while it fails the buffer may grow to
twice `write_ahead`, then appends are refused with `Refusal.DISK` (the
pipeline counts the drop).  Writing resumes by itself once space returns, and
a spool whose every record is acknowledged gives its space back at once.
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import metrics
from agent.publisher import spoolformat as fmt
from agent.publisher.spoolrecovery import ACK_FILE, SEGMENT_SUFFIX, Position, recover_state, spool_pending
from agent.publisher.types import EncodedEvent

log = logging.getLogger("pktbeat.publisher.spool")

DEFAULT_SEGMENT_MAX = 32 * 1024 * 1024  # space comes back one segment at a time; start-up scans stay short
MIN_SEGMENT = 4096
_FLUSH_BYTES = 16 * 1024 * 1024  # write-ahead bytes that force a write whatever `write_ahead` says
_HELD_BYTES_MAX = 64 * 1024 * 1024  # bytes held in memory while the disk cannot be written
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

SPOOL_COUNTERS = ("appended", "acked", "full_drops", "disk_full_drops", "too_large_drops", "corrupt_records",
                  "segments_deleted", "recovered", "write_errors")


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, not a directory, ...)."""


class Refusal(enum.Enum):
    """Why `append()` refused an event."""

    FULL = "full"  # max_size reached
    DISK = "disk"  # the disk cannot be written (full, quota, I/O error) and the memory buffer is full
    TOO_LARGE = "too_large"  # the event alone is larger than max_size: it can never be spooled


@dataclass
class _Segment:
    first: int
    path: Path
    size: int  # logical bytes: on disk, plus (last segment) the write-ahead buffer
    flushed: int  # bytes on disk
    records: int  # valid records
    legacy: bool = False
    data_start: int = len(fmt.SEGMENT_HEADER)
    sealed: bool = False  # found at start-up: read, never appended to
    known_damage: dict[int, int] = field(default_factory=dict)  # start -> end, already counted and logged


def default_segment_size(max_size: int) -> int:
    return max(MIN_SEGMENT, min(max_size // 10, DEFAULT_SEGMENT_MAX))


__all__ = ["Position", "Refusal", "Spool", "SpoolError", "default_segment_size", "spool_pending"]


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_size: int, *, segment_size: int | None = None,
                 write_ahead: int = 2048, sync_interval: float = 1.0, retry_interval: float = 1.0,
                 log_interval: float = 10.0) -> None:
        self.directory = Path(directory)
        self.max_size = max_size
        self.segment_size = max(MIN_SEGMENT, segment_size or default_segment_size(max_size))
        self.write_ahead = max(1, write_ahead)
        self.sync_interval = sync_interval
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self.counters = metrics.register("spool", SPOOL_COUNTERS)
        self.refusal: Refusal | None = None  # why the last append() was refused
        self.write_error: OSError | None = None  # set while the disk cannot be written
        self._lock = threading.Lock()
        self._dir_ready = _private_directory(self.directory)  # False: a full disk; made with the first write
        self._segments: list[_Segment] = []
        self._by_first: dict[int, _Segment] = {}
        self._total = 0  # logical bytes of every segment: what max_size limits
        self._pending = 0  # records not yet acknowledged
        self._unread = 0  # records not yet handed to a reader
        self._buffer = bytearray()  # the last segment's bytes not yet on disk
        self._buffered = 0  # records in the buffer
        self._writer = -1
        self._reader: tuple[int, int] | None = None  # (segment first, fd)
        self._to_sync: list[Path] = []  # rolled segments not yet fsynced
        self._last_sync = time.monotonic()
        self._retry_at = 0.0
        self._error_since = 0.0
        self._refused_while_blocked = 0
        self._last_error_log: float | None = None
        self._last_ack_error: float | None = None
        self._closed = False
        self._next_seq = 0
        self._ack = Position(-1, 0)
        self._recover()
        self._read = self._ack

    # -- start-up ------------------------------------------------------------------

    def _recover(self) -> None:
        state = recover_state(self.directory, announce=True)
        for path in state.acknowledged:
            self._delete(path)
        for found in state.segments:
            _private_file(found.path)
            segment = _Segment(found.first, found.path, found.size, found.size, found.scan.records,
                               found.scan.legacy, found.scan.data_start, sealed=True,
                               known_damage={d.start: d.end for d in found.scan.damage})
            self._add_segment(segment)
        self.counters.inc("corrupt_records", state.lost)
        self._next_seq = state.next_seq
        self._pending = self._unread = state.pending
        if state.segments and state.pending == 0:
            for segment in list(self._segments):
                self._remove_segment(segment)
        self._ack = state.start if self._segments else Position(self._next_seq, 0)
        if self._pending:
            self.counters.inc("recovered", self._pending)
            log.info("spool: %d unacknowledged event(s) found in %s; they are sent first", self._pending,
                     self.directory)

    # -- sizes ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes on disk plus the write-ahead buffer: what max_size limits."""
        return self._total

    @property
    def pending(self) -> int:
        """Events spooled and not yet acknowledged."""
        return self._pending

    @property
    def unread(self) -> int:
        return self._unread

    @property
    def blocked(self) -> bool:
        """The disk cannot be written at the moment (events are held in memory, then refused)."""
        return self.write_error is not None

    def describe_error(self) -> str:
        error = self.write_error
        return f"{self.directory}: {error.strerror or error}" if error is not None else ""

    # -- writing -----------------------------------------------------------------------

    def append(self, event: EncodedEvent) -> bool:
        """Spool one event; False when refused (`self.refusal` says why; each refusal is counted)."""
        record = fmt.encode(event)
        with self._lock:
            return self._append_locked(record)

    def _append_locked(self, record: bytes) -> bool:
        size = len(record)
        if size + len(fmt.SEGMENT_HEADER) > self.max_size or size > fmt.MAX_RECORD + fmt.RECORD_OVERHEAD:
            return self._refuse(Refusal.TOO_LARGE, "too_large_drops")
        if self._total + size > self.max_size:
            return self._refuse(Refusal.FULL, "full_drops")
        if self.write_error is not None and (self._buffered >= 2 * self.write_ahead
                                             or len(self._buffer) + size > _HELD_BYTES_MAX):
            self._retry_locked(force=False)
            if self.write_error is not None:
                self._refused_while_blocked += 1
                return self._refuse(Refusal.DISK, "disk_full_drops")
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.sealed or (
                segment.size > segment.data_start and segment.size + size > self.segment_size):
            if not self._roll_locked() and (segment is None or segment.sealed):
                return self._refuse(Refusal.DISK, "disk_full_drops")
            segment = self._segments[-1]
        self._buffer += record
        self._buffered += 1
        segment.size += size
        segment.records += 1
        self._total += size
        self._next_seq += 1
        self._pending += 1
        self._unread += 1
        self.counters["appended"] += 1
        self.refusal = None
        if (self._buffered >= self.write_ahead or len(self._buffer) >= _FLUSH_BYTES) and self.write_error is None:
            self._flush_locked()
        return True

    def _refuse(self, why: Refusal, counter: str) -> bool:
        self.refusal = why
        self.counters[counter] += 1
        return False

    def _roll_locked(self) -> bool:
        """Start a new segment; False (the current one stays in use) when the disk cannot take it."""
        if self._buffer and not self._flush_locked():
            return False  # the old segment's tail must reach the disk before it is left
        if not self._dir_ready:
            try:
                self._dir_ready = _private_directory(self.directory, raise_full=True)
            except OSError as exc:
                self._write_failed(exc)
                return False
        while True:
            path = self.directory / f"{self._next_seq:016d}{SEGMENT_SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, _PRIVATE_FILE)
                break
            except FileExistsError:
                self._next_seq += 1  # a file left by something else: never append to it
            except OSError as exc:
                self._write_failed(exc)
                return False
        if self._writer >= 0:
            os.close(self._writer)
            self._to_sync.append(self._segments[-1].path)
        self._writer = fd
        header = fmt.SEGMENT_HEADER
        self._add_segment(_Segment(self._next_seq, path, len(header), 0, 0))
        self._total += len(header)
        self._buffer += header
        return True

    def flush(self, sync: bool = False) -> None:
        """Hand buffered records to the kernel; fsync when `sync` or sync_interval passed.

        The fsync runs outside the lock so that appends never wait for the disk.
        """
        with self._lock:
            if self._closed:
                return
            if self.write_error is not None:
                self._retry_locked(force=sync)
            else:
                self._flush_locked()
            due = self._writer >= 0 and (sync or time.monotonic() - self._last_sync >= self.sync_interval)
            fd = os.dup(self._writer) if due else -1
            rolled, self._to_sync = self._to_sync, []
        for path in rolled:
            _fsync_path(path)
        if fd >= 0:
            try:
                os.fsync(fd)
            except OSError as exc:
                log.debug("spool: fsync failed: %s", exc)
            finally:
                os.close(fd)
            self._last_sync = time.monotonic()

    def _retry_locked(self, force: bool) -> None:
        if force or time.monotonic() >= self._retry_at:
            self._flush_locked()
            if self.write_error is not None:
                self._log_write_error()

    def _flush_locked(self) -> bool:
        if not self._buffer:
            return True
        segment = self._segments[-1]
        try:
            if self._writer < 0:
                self._writer = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            while self._buffer:
                written = os.write(self._writer, self._buffer)
                del self._buffer[:written]
                segment.flushed += written
        except OSError as exc:
            self._write_failed(exc)
            return False
        self._buffered = 0
        if self.write_error is not None:
            log.warning("spool: %s can be written again after %.0fs; %d event(s) were refused meanwhile",
                        self.directory, time.monotonic() - self._error_since, self._refused_while_blocked)
            self.write_error = None
            self._refused_while_blocked = 0
        return True

    def _write_failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if self.write_error is None:
            self._error_since = now
            self._refused_while_blocked = 0
        self.write_error = exc
        self.counters["write_errors"] += 1
        self._retry_at = now + self.retry_interval
        self._log_write_error()

    def _log_write_error(self) -> None:
        now = time.monotonic()
        if self._last_error_log is not None and now - self._last_error_log < self.log_interval:
            return
        self._last_error_log = now
        log.warning("spool: cannot write to %s (%s) for %.0fs; %d event(s) held in memory, %d refused so far; "
                    "retrying every %gs", self.directory, self.write_error.strerror if self.write_error else "",
                    now - self._error_since, self._buffered, self._refused_while_blocked, self.retry_interval)

    # -- reading and acknowledging ---------------------------------------------------------

    def read(self, max_events: int, max_bytes: int = 64 * 1024 * 1024) -> tuple[list[EncodedEvent], Position]:
        """Up to `max_events` unread events in order, and the position just after them.

        Reading does not acknowledge: pass the returned position to `ack()`
        once the output has acknowledged every event read.  Records still in
        the write-ahead buffer are read from memory.
        """
        with self._lock:
            events: list[EncodedEvent] = []
            pos = self._read
            total = 0
            while len(events) < max_events and total < max_bytes:
                segment = self._segment_at(pos.segment)
                if segment is None:
                    break
                offset = max(pos.offset, segment.data_start) if segment.first == pos.segment else segment.data_start
                if offset >= segment.size:
                    following = self._segment_after(segment.first)
                    pos = Position(segment.first, segment.size)
                    if following is None:
                        break
                    pos = Position(following.first, following.data_start)
                    continue
                skip_to = segment.known_damage.get(offset)
                if skip_to is not None:
                    pos = Position(segment.first, skip_to)
                    continue
                consumed = self._read_window(segment, offset, max_events - len(events), events)
                total += consumed
                pos = Position(segment.first, offset + consumed)
            self._unread = max(0, self._unread - len(events))
            if self._at_end(pos):
                self._unread = 0
            self._read = pos
            return events, pos

    def _read_window(self, segment: _Segment, offset: int, limit: int, out: list[EncodedEvent]) -> int:
        """Decode records at `offset` into `out`; returns the bytes consumed (damage skipped is consumed)."""
        source = self._source(segment)
        found = fmt.split(source(offset, min(fmt.WINDOW, segment.size - offset)), limit, segment.legacy)
        out.extend(fmt.decode(payload) for payload in found.payloads)
        consumed = found.consumed
        if found.damaged or consumed == 0:
            at = offset + consumed
            length = None if found.damaged else fmt.record_at(source, at, segment.size, segment.legacy)
            if length is not None:  # one record longer than the window
                header = _payload_start(segment)
                out.append(fmt.decode(source(at + header, length - header)))
                consumed += length
            else:
                known = segment.known_damage.get(at)
                consumed = (known if known is not None else self._skip_damage(segment, at)) - offset
        return consumed

    def _skip_damage(self, segment: _Segment, start: int) -> int:
        """Damage found while reading (not at start-up): counted, logged, skipped; returns where reading resumes."""
        source = self._source(segment)
        end = segment.size if segment.legacy else fmt.resync(source, start, segment.size)
        lost = fmt.magics_between(source, start, end)
        segment.known_damage[start] = end
        self.counters.inc("corrupt_records", lost)
        self._pending = max(0, self._pending - lost)
        self._unread = max(0, self._unread - lost)
        log.error("spool: %s: damaged data at bytes %d-%d skipped (about %d event(s) lost)", segment.path.name,
                  start, end, lost)
        return end

    def _source(self, segment: _Segment) -> fmt.Source:
        """Reads a segment's logical bytes: the file, then (last segment) the write-ahead buffer."""
        last = self._segments[-1] is segment

        def read(offset: int, length: int) -> bytes:
            data = b""
            if offset < segment.flushed:
                try:
                    data = os.pread(self._read_fd(segment), min(length, segment.flushed - offset), offset)
                except OSError as exc:
                    log.error("spool: cannot read %s: %s", segment.path.name, exc.strerror)
                    return b""
                if offset + len(data) < segment.flushed:
                    return data  # the file is shorter than written (damaged): never splice the buffer in
            if last and len(data) < length:
                start = offset + len(data) - segment.flushed
                data += bytes(self._buffer[start:start + length - len(data)])
            return data

        return read

    def _read_fd(self, segment: _Segment) -> int:
        if self._reader is not None and self._reader[0] == segment.first:
            return self._reader[1]
        self._close_reader()
        fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        self._reader = (segment.first, fd)
        return fd

    def _close_reader(self) -> None:
        if self._reader is not None:
            os.close(self._reader[1])
            self._reader = None

    def rewind(self) -> None:
        """Forget what was read and not acknowledged (it is read again)."""
        with self._lock:
            self._read = self._ack
            self._unread = self._pending

    def ack(self, pos: Position, count: int) -> None:
        """Everything before `pos` (`count` events since the last ack) is acknowledged."""
        with self._lock:
            if self._closed:
                return  # a late answer after close(): the next run resends it (same ids)
            self._ack = pos
            self._pending = max(0, self._pending - count)
            self.counters["acked"] += count
            while self._segments and self._segments[0].first < pos.segment:
                self._remove_segment(self._segments[0])
            if self._at_end(pos):
                # Everything written is acknowledged: give the space back now (even records still
                # in the write-ahead buffer need not reach the disk any more).
                self._pending = self._unread = 0
                for segment in list(self._segments):
                    self._remove_segment(segment)
                self._ack = self._read = Position(self._next_seq, 0)
                if self.write_error is not None:
                    log.warning("spool: every event held in memory while %s could not be written was delivered "
                                "(%d refused meanwhile); the next ones are written there again",
                                self.directory, self._refused_while_blocked)
                    self.write_error = None
                    self._refused_while_blocked = 0
            self._save_ack()

    def _at_end(self, pos: Position) -> bool:
        if not self._segments:
            return True
        last = self._segments[-1]
        return pos.segment == last.first and pos.offset >= last.size

    def _save_ack(self) -> None:
        tmp = self.directory / f".{ACK_FILE}.tmp"
        data = json.dumps({"segment": self._ack.segment, "offset": self._ack.offset}).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _PRIVATE_FILE)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / ACK_FILE)
        except OSError as exc:
            now = time.monotonic()
            if self._last_ack_error is None or now - self._last_ack_error >= self.log_interval:
                self._last_ack_error = now
                log.warning("spool: cannot record the acknowledged position in %s: %s (a restart would resend "
                            "what was acknowledged since; the ids are the same, so no duplicate is stored)",
                            self.directory, exc.strerror)

    # -- segments ------------------------------------------------------------------------------

    def _add_segment(self, segment: _Segment) -> None:
        self._segments.append(segment)
        self._by_first[segment.first] = segment
        if not segment.sealed:
            return
        self._total += segment.size

    def _remove_segment(self, segment: _Segment) -> None:
        self._segments.remove(segment)
        self._by_first.pop(segment.first, None)
        self._total -= segment.size
        if self._reader is not None and self._reader[0] == segment.first:
            self._close_reader()
        if not self._segments:
            if self._writer >= 0:
                os.close(self._writer)
                self._writer = -1
            self._buffer.clear()
            self._buffered = 0
        self._delete(segment.path)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
            self.counters["segments_deleted"] += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("spool: cannot delete %s: %s", path, exc.strerror)

    def _segment_at(self, first: int) -> _Segment | None:
        segment = self._by_first.get(first)
        if segment is not None:
            return segment
        return self._segments[0] if self._segments and first < self._segments[0].first else None

    def _segment_after(self, first: int) -> _Segment | None:
        for segment in self._segments:
            if segment.first > first:
                return segment
        return None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self.write_error is None or self._buffer:
                self._flush_locked()
            if self._buffer:
                log.error("spool: %d byte(s) of events could not be written to %s (%s): they are lost",
                          len(self._buffer), self.directory, self.write_error.strerror if self.write_error else "")
            if self._writer >= 0:
                try:
                    os.fsync(self._writer)
                except OSError:
                    pass
                os.close(self._writer)
                self._writer = -1
            self._close_reader()
            self._closed = True


def _payload_start(segment: _Segment) -> int:
    return 8 if segment.legacy else fmt.RECORD_OVERHEAD


def _private_directory(path: Path, raise_full: bool = False) -> bool:
    """Make the spool directory (0700); False when the disk is too full to (tried again at the first write)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            if raise_full:
                raise
            log.warning("spool: cannot create %s yet (%s); events are held in memory until it can be",
                        path, exc.strerror)
            return False
        raise SpoolError(f"cannot create the spool directory {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise SpoolError(f"the spool path {path} is not a directory")
    mode = path.stat().st_mode & 0o777
    if mode != _PRIVATE_DIR:
        try:
            os.chmod(path, _PRIVATE_DIR)  # spooled events carry captured payloads
            log.info("spool: %s was mode %04o; made it %04o", path, mode, _PRIVATE_DIR)
        except OSError as exc:  # another user's directory: spooling still beats losing events
            log.warning("spool: cannot make %s private (mode %04o): %s; other users may read the events "
                        "spooled there", path, mode, exc.strerror)
    if not os.access(path, os.W_OK):
        raise SpoolError(f"the spool directory {path} is not writable")
    return True


def _private_file(path: Path) -> None:
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, _PRIVATE_FILE)
    except OSError:
        pass


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # already acknowledged and deleted
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("spool: fsync of %s failed: %s", path, exc)
    finally:
        os.close(fd)
