"""The receive buffer of one direction: the bytes a stream parser has been fed and not consumed yet.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, no monkey-patching, `__slots__` classes); an
edit is used natively only after set-up rebuilds (`scripts/accel.py build`).

Every stream protocol reads its bytes through one `ReceiveBuffer` per
direction (h11's receive buffer is the model): the parser says what it
needs, the buffer says whether it is there.  "Need more bytes" is a normal
result (None, -1 or False), never an exception and never half-consumed
state.

- `feed` adds the next in-order segment.  When nothing is unread, the
  segment itself becomes the buffer (no copy: the usual case of a message
  in one segment).  Otherwise it is appended to a bytearray, compacted once
  the consumed prefix passes `COMPACT_AFTER`, so a message arriving one byte
  at a time costs O(n), not O(n²).
- A parser that knows how long its frame is calls `wait_for(n)`: later
  segments are then held as they are and joined once, when the frame is
  complete (a large frame in many segments is copied once, not once per
  segment).
- Parsers read `data[pos:]` directly in their hot loops, or through `take`,
  `skip`, `find` (a failed search is never repeated over the same bytes)
  and the line readers `crlf_line` / `line` (CRLF, or LF with an optional
  CR before it).
- `ts_at(pos)` is the time of the segment that brought the byte at `pos`:
  a message takes the time of its first byte.
- Bounded: a line longer than its limit raises `LineTooLong`; a frame
  larger than `limit` raises `FrameTooLarge`.  Positions in errors are
  stream offsets (`base + pos`), so a log line points into the capture.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from agent.protocols.errors import FrameTooLarge, LineTooLong, ParseError
from agent.transport.types import Direction

COMPACT_AFTER: Final = 64 * 1024  # consumed bytes dropped from the front of an appended buffer past this
MAX_MARKS: Final = 64  # segment times remembered for bytes still buffered (older bytes take a later time)


class ReceiveBuffer:
    """Unread bytes of one direction of one connection, with the parser's read position in them."""

    __slots__ = ("_held", "_held_bytes", "_marks", "_scan", "_scan_sep", "_wanted", "base", "data", "direction",
                 "limit", "pos", "protocol")

    def __init__(self, protocol: str, direction: Direction | None, limit: int) -> None:
        self.protocol = protocol
        self.direction = direction
        self.limit = limit  # the largest frame `wait_for` accepts
        self.data: bytes | bytearray = b""
        self.pos = 0  # read position in `data`
        self.base = 0  # stream offset of data[0]
        self._scan = 0  # stream offset before which `find` found no `_scan_sep`
        self._scan_sep = b""
        # (stream offset where a segment's bytes end, its time), oldest first
        self._marks: deque[tuple[int, int]] = deque()
        self._held: list[bytes] | None = None  # segments held while waiting for a frame (wait_for)
        self._held_bytes = 0
        self._wanted = 0  # bytes the frame being waited for still lacks; 0: not waiting

    # -- input --------------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> bool:
        """Add the next in-order bytes; False while a `wait_for` is still short (the bytes are held)."""
        if self._wanted:
            held = self._held
            if held is None:
                held = self._held = []
            held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes < self._wanted:
                return False
            self._join_held(ts_ns)
            return True
        buf = self.data
        pos = self.pos
        if pos >= len(buf):
            base = self.base + len(buf)
            self.base = base
            self.data = data
            self.pos = 0
            marks = self._marks
            marks.clear()
            marks.append((base + len(data), ts_ns))
            return True
        if not isinstance(buf, bytearray):
            self.base += pos
            buf = bytearray(buf[pos:])
            self.pos = 0
        elif pos > COMPACT_AFTER:
            del buf[:pos]
            self.base += pos
            self.pos = 0
        buf += data
        self.data = buf
        self._mark(ts_ns)
        return True

    def _mark(self, ts_ns: int) -> None:
        marks = self._marks
        consumed = self.base + self.pos
        while len(marks) > 1 and marks[0][0] <= consumed:
            marks.popleft()
        if marks and marks[-1][1] == ts_ns:
            marks.pop()  # same time as the previous segment: one mark covers both
        elif len(marks) >= MAX_MARKS:
            marks.popleft()  # bounded: the oldest buffered bytes take the next segment's time
        marks.append((self.base + len(self.data), ts_ns))

    def _join_held(self, ts_ns: int) -> None:
        held = self._held or []
        pos = self.pos
        if pos < len(self.data):
            held.insert(0, bytes(self.data[pos:]))
        self.base += pos
        self.data = b"".join(held)
        self.pos = 0
        self._held = None
        self._held_bytes = 0
        self._wanted = 0
        self._mark(ts_ns)

    def wait_for(self, n: int) -> None:
        """The parser cannot go on until `n` bytes are unread: hold later segments until they are."""
        if n > self.limit:
            raise FrameTooLarge(self.protocol, self.direction, self.offset,
                                f"frame of {n} bytes is larger than the limit of {self.limit}")
        missing = n - (len(self.data) - self.pos)
        self._wanted = missing if missing > 0 else 0

    @property
    def waiting(self) -> bool:
        return self._wanted > 0

    def release(self) -> None:
        """Stop waiting: what is held joins the buffer now (a gap or the end of the stream came first)."""
        if self._wanted or self._held:
            marks = self._marks
            ts = marks[-1][1] if marks else 0
            self._wanted = 0
            if self._held:
                self._join_held(ts)

    def skip_unbuffered(self, n: int) -> None:
        """`n` bytes went by without being buffered (counted past by the parser); nothing is unread."""
        self.base += len(self.data) + n
        self.data = b""
        self.pos = 0

    def skip_front(self, data: bytes, count: int) -> tuple[bytes, int]:
        """Pass over up to `count` bytes at the front of `data` without buffering them (the rest of a message
        too large to keep): what is left of `data`, and how many bytes are still to pass over."""
        skipped = min(count, len(data))
        self.skip_unbuffered(skipped)
        return data[skipped:], count - skipped

    def clear(self) -> None:
        """Drop every unread and held byte (a gap, or a parser giving up on its partial state)."""
        self.base += len(self.data)
        self.data = b""
        self.pos = 0
        self._marks.clear()
        self._held = None
        self._held_bytes = 0
        self._wanted = 0

    # -- reading --------------------------------------------------------------------

    @property
    def unread(self) -> int:
        return len(self.data) - self.pos

    @property
    def offset(self) -> int:
        """Stream offset of the read position."""
        return self.base + self.pos

    @property
    def buffered(self) -> int:
        """Bytes held: unread, and segments held while a frame is awaited (the worker's max_buffered counts them)."""
        return len(self.data) - self.pos + self._held_bytes

    def take(self, n: int) -> bytes | None:
        """The next `n` bytes, consumed; None when fewer are buffered."""
        pos = self.pos
        end = pos + n
        if end > len(self.data):
            return None
        self.pos = end
        return bytes(self.data[pos:end])

    def skip(self, n: int) -> int:
        """Consume up to `n` buffered bytes; returns how many."""
        take = min(n, len(self.data) - self.pos)
        self.pos += take
        return take

    def find(self, sep: bytes) -> int:
        """Index in `data` of the next `sep` at or after `pos`, else -1.

        A failed search is remembered, so the bytes searched for `sep` are not
        searched again for it when more arrive (a head fed one byte at a time
        costs O(n)).  The memory is for one separator: a parser alternating two
        on the same unread bytes keeps its own.
        """
        data = self.data
        pos = self.pos
        start = pos
        if sep == self._scan_sep:
            start = max(self._scan - self.base, pos)
        idx = data.find(sep, start)
        if idx < 0:
            rescan = len(data) - len(sep) + 1
            self._scan = self.base + (rescan if rescan > pos else pos)
            self._scan_sep = sep
        return idx

    def crlf_line(self, limit: int) -> bytes | None:
        """The next line ended by CRLF, without it, consumed; None until it is complete."""
        return self._line(b"\r\n", limit)

    def line(self, limit: int) -> bytes | None:
        """The next line ended by LF (a CR before it is dropped too), consumed; None until it is complete."""
        return self._line(b"\n", limit)

    def _line(self, end_mark: bytes, limit: int) -> bytes | None:
        idx = self.find(end_mark)
        if idx < 0:
            self._check_line(limit)
            return None
        start = self.pos
        self.pos = idx + len(end_mark)
        # A bare-LF line drops the CR before its LF; a CRLF line keeps any CR of its own.
        end = idx - 1 if len(end_mark) == 1 and idx > start and self.data[idx - 1] == 13 else idx
        return bytes(self.data[start:end])

    def _check_line(self, limit: int) -> None:
        if len(self.data) - self.pos > limit:
            raise LineTooLong(self.protocol, self.direction, self.offset, f"line longer than {limit} bytes")

    def last_segment(self) -> tuple[int, int]:
        """(index in `data` where the bytes of the latest segment begin, its time): every message starting
        at or after that index takes that time, without a `ts_at` per message."""
        marks = self._marks
        if not marks:
            return 0, 0
        ts = marks[-1][1]
        start = marks[-2][0] if len(marks) > 1 else self.base
        return max(start - self.base, 0), ts

    def ts_at(self, pos: int) -> int:
        """The time of the segment that brought data[pos] (older marks are dropped on the way)."""
        absolute = self.base + pos
        marks = self._marks
        while len(marks) > 1 and marks[0][0] <= absolute:
            marks.popleft()
        return marks[0][1] if marks else 0

    @property
    def single_segment(self) -> bool:
        """Every buffered byte came with one segment (its time is every message's time)."""
        return len(self._marks) == 1

    def error(self, reason: str, at: int = -1) -> ParseError:
        """A ParseError at data[at] (default: the read position)."""
        return ParseError(self.protocol, self.direction, self.base + (self.pos if at < 0 else at), reason)
