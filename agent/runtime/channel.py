"""A bounded, non-blocking message channel from a worker process to the parent, over a pipe.

Frames are ``u8 kind, u32 length, payload``.  The writer never blocks the
worker (which must keep draining its ring): what the pipe does not take
waits in a buffer of at most `max_pending` bytes, and a droppable message
(a batch of events) that does not fit is dropped and counted.  Control
messages (stats, done) are always queued.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from agent.publisher.types import EncodedEvent, event_fields, events_from_fields

_frame = struct.Struct("<BI")
_event_count = struct.Struct("<I")
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031

EVENTS = 1
STATS = 2
DONE = 3
LOG = 4
TOP = 5  # transaction summaries for `pktbeat top` (agent/runtime/topstats.py)


def encode_events(batch: Sequence[EncodedEvent]) -> bytes:
    """An EVENTS payload: the count, then each event as a plain tuple.  Pickling the dataclass itself costs
    three times as much (16.8k instructions an event, written and read), on the path of every event a worker
    publishes; the tuples are made and read in compiled code (agent/publisher/types.py)."""
    return _event_count.pack(len(batch)) + pickle.dumps(event_fields(batch), pickle.HIGHEST_PROTOCOL)


def decode_events(payload: bytes | memoryview) -> list[EncodedEvent]:
    """The events of an EVENTS payload (from a worker this process forked)."""
    return events_from_fields(pickle.loads(memoryview(payload)[_event_count.size:]))


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass  # limited by /proc/sys/fs/pipe-max-size: the default 64 KB still works


class ChannelWriter:
    def __init__(self, fd: int, max_pending: int = 16 * 1024 * 1024) -> None:
        self.fd = fd
        self.max_pending = max_pending
        os.set_blocking(fd, False)
        self._pending = bytearray()
        self.dropped_messages = 0
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, kind: int, payload: bytes, droppable: bool = True) -> bool:
        """Queue one message; False when it was dropped (channel full, or the parent is gone)."""
        if self.broken:
            return False
        if droppable and len(self._pending) + len(payload) > self.max_pending:
            self.flush()
            if len(self._pending) + len(payload) > self.max_pending:
                self.dropped_messages += 1
                return False
        self._pending += _frame.pack(kind, len(payload))
        self._pending += payload
        self.flush()
        return True

    def flush(self) -> None:
        while self._pending and not self.broken:
            try:
                written = os.write(self.fd, self._pending)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self.broken = True
                    self._pending.clear()
                    return
                raise
            del self._pending[:written]

    def drain(self, deadline: float) -> bool:
        """Flush everything, waiting until `deadline` (monotonic); True when all was written."""
        import select

        while self._pending and not self.broken and time.monotonic() < deadline:
            self.flush()
            if self._pending:
                select.select([], [self.fd], [], max(0.0, min(0.05, deadline - time.monotonic())))
        return not self._pending


class ChannelReader:
    def __init__(self, fd: int, max_frame: int = 64 * 1024 * 1024) -> None:
        self.fd = fd
        self.max_frame = max_frame
        os.set_blocking(fd, False)
        self._buf = bytearray()
        self.eof = False

    def read(self, max_bytes: int = 4 * 1024 * 1024) -> list[tuple[int, bytes]]:
        """Messages complete so far (reads what the pipe has, up to `max_bytes`)."""
        got = 0
        while got < max_bytes:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            got += len(chunk)
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        at = 0
        while len(buf) - at >= _frame.size:
            kind, length = _frame.unpack_from(buf, at)
            if length > self.max_frame:
                raise ValueError(f"channel frame of {length} bytes: the worker's stream is corrupt")
            if len(buf) - at - _frame.size < length:
                break
            start = at + _frame.size
            out.append((kind, bytes(buf[start:start + length])))
            at = start + length
        if at:
            del buf[:at]
        return out


def run_child(name: str, close_fds: Sequence[int], body: Callable[[], int], failed: int = 1) -> NoReturn:
    """The life of a forked worker: close the parent's fds, leave SIGINT/SIGTERM/SIGUSR1 to the parent
    (a terminal's Ctrl-C reaches the whole group, and the parent coordinates the stop), run `body`,
    and exit with its code (`failed` when it raised, said in the log) without the parent's clean-up."""
    code = failed
    try:
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(-1)
        code = body()
    except BaseException:
        logging.getLogger("pktbeat").exception("%s failed", name)
    finally:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)
