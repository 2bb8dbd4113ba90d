"""The disk spool: an append-only FIFO of encoded events in segment files, with a persisted ack position.

Layout in the spool directory:
  - `<first sequence number, 16 digits>.seg`: segments; each record is
    `u32 payload length, u32 crc32(payload), payload`, and a payload is
    `u16 id length, u16 index length, u16 type length, id, index, type, data`.
  - `ack.json`: `{"segment": <first sequence of the segment>, "offset": <bytes>}`,
    the first record not yet acknowledged.  Written atomically (rename).

Records are read back in order, sent, and acknowledged as a contiguous prefix;
a segment is deleted once every record in it is acknowledged.  A restart reads
`ack.json` and resends everything after it, so an event is never lost between
the spool and the output; an event acknowledged just before a crash may be
resent, which the deterministic document id makes harmless.

Appends are buffered in memory up to `write_ahead` records (Packetbeat's
setting) and flushed to the kernel on `flush()` (called by the pipeline about
every `sync_interval`), so a SIGKILL loses at most that buffer; fsync runs at
each segment roll and every `sync_interval`, bounding what a power loss takes.
A record cut short by a crash is detected by its length or CRC at start-up,
counted, and the segment is truncated there.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent import metrics
from agent.publisher.types import EncodedEvent

log = logging.getLogger("pktbeat.publisher.spool")

_HEADER = struct.Struct("<II")
_META = struct.Struct("<HHH")
_SUFFIX = ".seg"
_ACK_FILE = "ack.json"
MAX_RECORD = 64 * 1024 * 1024  # larger lengths can only be corruption
_READ_WINDOW = 1024 * 1024

SPOOL_COUNTERS = ("appended", "acked", "full_drops", "corrupt_records", "segments_deleted", "recovered")


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, not a directory, ...)."""


@dataclass(frozen=True, slots=True)
class Position:
    segment: int  # first sequence number of the segment (its file name)
    offset: int  # byte offset of a record in it


@dataclass
class _Segment:
    first: int
    path: Path
    size: int  # bytes written (flushed or buffered)
    records: int


def _encode(event: EncodedEvent) -> bytes:
    ident = event.event_id.encode()
    index = (event.index or "").encode()
    kind = event.type.encode()
    payload = b"".join((_META.pack(len(ident), len(index), len(kind)), ident, index, kind, event.data))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> EncodedEvent:
    id_len, index_len, type_len = _META.unpack_from(payload)
    pos = _META.size
    ident = payload[pos:pos + id_len].decode()
    pos += id_len
    index = payload[pos:pos + index_len].decode()
    pos += index_len
    kind = payload[pos:pos + type_len].decode()
    pos += type_len
    return EncodedEvent(payload[pos:], ident, index or None, kind)


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_size: int, *, segment_size: int | None = None,
                 write_ahead: int = 2048, sync_interval: float = 1.0) -> None:
        self.directory = Path(directory)
        self.max_size = max_size
        self.segment_size = max(4096, segment_size or max_size // 10)
        self.write_ahead = max(1, write_ahead)
        self.sync_interval = sync_interval
        self.counters = metrics.register("spool", SPOOL_COUNTERS)
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {self.directory}: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK):
            raise SpoolError(f"the spool directory {self.directory} is not writable")
        self._segments: list[_Segment] = []
        self._pending = 0  # records not yet acknowledged
        self._unread = 0  # records not yet handed to a reader
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0
        self._writer: BinaryIO | None = None
        self._to_sync: list[Path] = []  # rolled segments not yet fsynced
        self._last_sync = time.monotonic()
        self._ack = self._load_ack()
        self._read = self._ack
        self._next_seq = 0
        self._recover()

    # -- start-up ------------------------------------------------------------------

    def _load_ack(self) -> Position:
        try:
            state = json.loads((self.directory / _ACK_FILE).read_text())
            return Position(int(state["segment"]), int(state["offset"]))
        except FileNotFoundError:
            return Position(-1, 0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool: %s unreadable (%s); resending everything spooled", _ACK_FILE, exc)
            return Position(-1, 0)

    def _recover(self) -> None:
        files = sorted(self.directory.glob("*" + _SUFFIX))
        for path in files:
            try:
                first = int(path.stem)
            except ValueError:
                continue
            if first < self._ack.segment:
                self._delete(path)
                continue
            records, good_size = self._scan(path)
            if good_size < path.stat().st_size:
                self.counters.inc("corrupt_records")
                log.warning("spool: %s ends with a damaged record; truncated at byte %d", path.name, good_size)
                with open(path, "r+b") as handle:
                    handle.truncate(good_size)
            self._segments.append(_Segment(first, path, good_size, records))
            self._next_seq = max(self._next_seq, first + records)
        if self._segments:
            head = self._segments[0]
            if self._ack.segment != head.first:
                self._ack = Position(head.first, 0)
            skipped = self._count_until(head, self._ack.offset)
            self._pending = sum(s.records for s in self._segments) - skipped
            self._read = self._ack
            if self._pending:
                self.counters.inc("recovered", self._pending)
                log.info("spool: %d unacknowledged event(s) found in %s; they are sent first",
                         self._pending, self.directory)
        else:
            self._ack = Position(self._next_seq, 0)
            self._read = self._ack
        self._unread = self._pending

    def _scan(self, path: Path) -> tuple[int, int]:
        """(records, bytes of well-formed records) of one segment, reading one record at a time."""
        records = 0
        offset = 0
        with open(path, "rb", buffering=1 << 20) as handle:
            while True:
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, crc = _HEADER.unpack(header)
                if length > MAX_RECORD:
                    break
                payload = handle.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                records += 1
                offset += _HEADER.size + length
        return records, offset

    def _count_until(self, segment: _Segment, until: int) -> int:
        count = 0
        offset = 0
        with open(segment.path, "rb") as handle:
            while offset < until:
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, _ = _HEADER.unpack(header)
                handle.seek(length, os.SEEK_CUR)
                offset += _HEADER.size + length
                count += 1
        return count

    # -- writing -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes on disk plus the write-ahead buffer: what max_size limits."""
        return sum(s.size for s in self._segments)

    @property
    def pending(self) -> int:
        """Events spooled and not yet acknowledged."""
        return self._pending

    @property
    def unread(self) -> int:
        return self._unread

    def append(self, event: EncodedEvent) -> bool:
        """Spool one event; False (and counted) when the spool is full."""
        record = _encode(event)
        with self._lock:
            if self.size + len(record) > self.max_size:
                self.counters.inc("full_drops")
                return False
            segment = self._segments[-1] if self._segments else None
            if segment is None or (segment.size and segment.size + len(record) > self.segment_size):
                self._flush_locked(sync=False)
                if segment is not None:
                    self._to_sync.append(segment.path)
                segment = self._new_segment()
            self._buffer.append(record)
            self._buffer_bytes += len(record)
            segment.size += len(record)
            segment.records += 1
            self._next_seq += 1
            self._pending += 1
            self._unread += 1
            self.counters["appended"] += 1
            if len(self._buffer) >= self.write_ahead:
                self._flush_locked(sync=False)
        return True

    def _new_segment(self) -> _Segment:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        path = self.directory / f"{self._next_seq:016d}{_SUFFIX}"
        segment = _Segment(self._next_seq, path, 0, 0)
        self._segments.append(segment)
        self._writer = open(path, "ab")  # noqa: SIM115 - kept open across appends
        return segment

    def flush(self, sync: bool = False) -> None:
        """Hand buffered records to the kernel; fsync when `sync` or sync_interval passed.

        The fsync runs outside the lock so that appends never wait for the disk.
        """
        with self._lock:
            self._flush_locked(sync=False)
            due = self._writer is not None and (sync or time.monotonic() - self._last_sync >= self.sync_interval)
            fd = os.dup(self._writer.fileno()) if due and self._writer is not None else -1
            rolled, self._to_sync = self._to_sync, []
        for path in rolled:
            try:
                rfd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # already acknowledged and deleted
            try:
                os.fsync(rfd)
            finally:
                os.close(rfd)
        if fd >= 0:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._last_sync = time.monotonic()

    def _flush_locked(self, sync: bool) -> None:
        if self._buffer:
            if self._writer is None:
                last = self._segments[-1]
                self._writer = open(last.path, "ab")  # noqa: SIM115
            self._writer.write(b"".join(self._buffer))
            self._writer.flush()
            self._buffer.clear()
            self._buffer_bytes = 0
        if sync and self._writer is not None:
            os.fsync(self._writer.fileno())
            self._last_sync = time.monotonic()

    # -- reading and acknowledging ---------------------------------------------------------

    def read(self, max_events: int, max_bytes: int = 64 * 1024 * 1024) -> tuple[list[EncodedEvent], Position]:
        """Up to `max_events` unread events in order, and the position just after them.

        Reading does not acknowledge: pass the returned position to `ack()`
        once the output has acknowledged every event read.
        """
        with self._lock:
            self._flush_locked(sync=False)
            events: list[EncodedEvent] = []
            pos = self._read
            total = 0
            while len(events) < max_events and total < max_bytes:
                segment = self._segment_at(pos.segment)
                if segment is None:
                    break
                if segment.first != pos.segment:
                    pos = Position(segment.first, 0)
                if pos.offset >= segment.size:
                    following = self._segment_after(segment.first)
                    if following is None:
                        break
                    pos = Position(following.first, 0)
                    continue
                consumed = self._read_window(segment, pos.offset, max_events - len(events), events)
                if consumed == 0:
                    break
                total += consumed
                pos = Position(segment.first, pos.offset + consumed)
            self._unread = max(0, self._unread - len(events))
            self._read = pos
            return events, pos

    def _read_window(self, segment: _Segment, start: int, limit: int, out: list[EncodedEvent]) -> int:
        """Decode records from `start` into `out` (at most `limit`); returns the bytes consumed."""
        with open(segment.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(min(segment.size - start, _READ_WINDOW))
            if len(data) >= _HEADER.size:
                length, _ = _HEADER.unpack_from(data)
                if _HEADER.size + length > len(data) and length <= MAX_RECORD:
                    data += handle.read(_HEADER.size + length - len(data))  # one record larger than the window
        offset = 0
        found = 0
        while offset + _HEADER.size <= len(data) and found < limit:
            length, crc = _HEADER.unpack_from(data, offset)
            stop = offset + _HEADER.size + length
            if stop > len(data):
                break
            payload = data[offset + _HEADER.size:stop]
            if zlib.crc32(payload) == crc:
                out.append(_decode(payload))
                found += 1
            else:
                self.counters.inc("corrupt_records")
                log.error("spool: damaged record in %s at byte %d skipped", segment.path.name, start + offset)
                self._pending = max(0, self._pending - 1)
            offset = stop
        return offset

    def rewind(self) -> None:
        """Forget what was read and not acknowledged (it is read again)."""
        with self._lock:
            self._read = self._ack
            self._unread = self._pending

    def ack(self, pos: Position, count: int) -> None:
        """Everything before `pos` (`count` events since the last ack) is acknowledged."""
        with self._lock:
            self._ack = pos
            self._pending = max(0, self._pending - count)
            self.counters["acked"] += count
            while len(self._segments) > 1 and self._segments[0].first < pos.segment:
                self._delete(self._segments.pop(0).path)
            if self._pending == 0 and self._unread == 0 and len(self._segments) == 1 and not self._buffer:
                # Fully drained: start a fresh segment next time rather than growing this one forever.
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                self._delete(self._segments.pop(0).path)
                self._ack = Position(self._next_seq, 0)
                self._read = self._ack
            self._save_ack()

    def _save_ack(self) -> None:
        tmp = self.directory / f".{_ACK_FILE}.tmp"
        try:
            tmp.write_text(json.dumps({"segment": self._ack.segment, "offset": self._ack.offset}))
            os.replace(tmp, self.directory / _ACK_FILE)
        except OSError as exc:
            log.error("spool: cannot record the acknowledged position: %s", exc.strerror)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
            self.counters["segments_deleted"] += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("spool: cannot delete %s: %s", path, exc.strerror)

    def _segment_at(self, first: int) -> _Segment | None:
        for segment in self._segments:
            if segment.first == first:
                return segment
        return self._segments[0] if self._segments and first < self._segments[0].first else None

    def _segment_after(self, first: int) -> _Segment | None:
        for segment in self._segments:
            if segment.first > first:
                return segment
        return None

    def close(self) -> None:
        with self._lock:
            self._flush_locked(sync=True)
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def spool_pending(directory: str | os.PathLike[str]) -> int:
    """Unacknowledged events in a spool directory (for tools and tests; opens nothing for writing)."""
    path = Path(directory)
    try:
        state = json.loads((path / _ACK_FILE).read_text())
        ack = Position(int(state["segment"]), int(state["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        ack = Position(-1, 0)
    total = 0
    for seg in sorted(path.glob("*" + _SUFFIX)):
        try:
            first = int(seg.stem)
        except ValueError:
            continue
        if first < ack.segment:
            continue
        try:
            handle = open(seg, "rb", buffering=1 << 20)  # noqa: SIM115
        except FileNotFoundError:
            continue  # acknowledged and deleted meanwhile
        with handle:
            if first == ack.segment:
                handle.seek(ack.offset)
            while True:
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, _ = _HEADER.unpack(header)
                skipped = handle.seek(length, os.SEEK_CUR)
                if skipped > os.fstat(handle.fileno()).st_size:
                    break
                total += 1
    return total
