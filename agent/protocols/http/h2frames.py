"""Sans-IO HTTP/2 framing of one direction (RFC 9113 section 4): bytes in, frame events out.

The 9-byte frame header gives every frame's length, so framing never needs
the other direction.  What each frame becomes:

- HEADERS and PUSH_PROMISE, with the CONTINUATION frames that follow them,
  become one `HeaderBlock` holding the complete HPACK block (decoding is the
  connection's job: it must happen in wire order).  A block is buffered up to
  `MAX_HEADER_BLOCK` bytes; a longer one cannot be decoded, which makes the
  HPACK state unknowable: `HeaderStateLost`.
- DATA streams through as `Data` pieces, one per fed segment, padding
  removed, never buffered whole (a DATA frame may be 16 MiB; hyperframe's
  `DataFrame` wants the whole frame, so this one frame type is read here).
- RST_STREAM, SETTINGS and GOAWAY become `Reset`, `Settings` and `GoAway`.
  PING, PRIORITY, WINDOW_UPDATE and frame types this reader does not know
  only count as wire bytes of the connection.

Frame bodies other than DATA are parsed by `hyperframe`.  A malformed frame
that is not part of a header block is skipped and counted (its length is
known, framing holds); a malformed or interrupted header block raises
`HeaderStateLost`, as does a gap anywhere but inside a DATA frame's payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from agent.metrics import Counters
from agent.protocols.buffer import ReceiveBuffer
from agent.transport.session import ParseError
from agent.transport.types import Direction

PROTOCOL = "http"

FRAME_HEADER = 9
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PREFACE_TAIL = b"SM\r\n\r\n"  # what follows the preface's first line, read as an HTTP/1 request head
MAX_HEADER_BLOCK = 256 * 1024  # encoded header block (HEADERS or PUSH_PROMISE plus CONTINUATION)
MAX_CONTROL_FRAME = 16 * 1024  # SETTINGS, RST_STREAM, GOAWAY... a longer one is skipped unparsed

FRAME_COUNTERS = (
    "h2_frames",
    "h2_frames_malformed",
    "h2_frames_skipped",
)

_HEADER = struct.Struct(">HBBBL")
_STREAM_MASK = 0x7FFFFFFF
_FLAG_END_STREAM = 0x1
_FLAG_END_HEADERS = 0x4
_FLAG_PADDED = 0x8


class FrameType(IntEnum):
    DATA = 0
    HEADERS = 1
    PRIORITY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PUSH_PROMISE = 5
    PING = 6
    GOAWAY = 7
    WINDOW_UPDATE = 8
    CONTINUATION = 9


_PARSED = frozenset({FrameType.HEADERS, FrameType.PUSH_PROMISE, FrameType.CONTINUATION, FrameType.RST_STREAM,
                     FrameType.SETTINGS, FrameType.GOAWAY})


class HeaderStateLost(ParseError):
    """A header block cannot be read: the connection's HPACK state is unknowable from here on."""


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    stream_id: int
    block: bytes  # the HPACK block, CONTINUATIONs joined
    end_stream: bool
    promised_stream_id: int  # PUSH_PROMISE: the stream it reserves; 0 for HEADERS
    wire_bytes: int  # the frames that carried it, headers and padding included
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Data:
    stream_id: int
    data: bytes  # payload bytes of this piece, padding removed
    end_stream: bool  # the frame's END_STREAM flag, on the piece that ends the frame
    wire_bytes: int  # wire bytes this piece accounts for (frame header and padding included)
    lost: int  # payload bytes lost in a gap inside this frame
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Reset:
    stream_id: int
    error_code: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Settings:
    ack: bool
    values: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class GoAway:
    last_stream_id: int
    error_code: int


FrameEvent = HeaderBlock | Data | Reset | Settings | GoAway


class _State(IntEnum):
    PREFACE = 0  # the client's connection preface (or its tail) still to check
    HEAD = 1  # a frame header
    FRAME = 2  # a whole frame being buffered for hyperframe
    DATA_PAD = 3  # a padded DATA frame's pad-length byte
    DATA = 4  # DATA payload, streamed
    SKIP = 5  # bytes passed over: padding, oversized or unknown frames


class FrameReader:
    """One direction of an HTTP/2 connection, from the first byte after the preface (or the preface itself)."""

    __slots__ = ("_block", "_block_end_stream", "_block_promised", "_block_stream", "_block_ts", "_block_wire",
                 "_data_end_stream", "_data_left", "_data_stream", "_data_wire", "_frame_len", "_pad_left",
                 "_preface", "_skip_left", "_state", "buffer", "counters", "wire_bytes")

    def __init__(self, direction: Direction, counters: Counters, preface: bytes = b"") -> None:
        self.buffer = ReceiveBuffer(PROTOCOL, direction, FRAME_HEADER + MAX_HEADER_BLOCK)
        self.counters = counters
        self.wire_bytes = 0  # every byte of this direction read as HTTP/2 so far
        self._preface = preface
        self._state = _State.PREFACE if preface else _State.HEAD
        self._frame_len = 0
        # the header block being assembled across CONTINUATION frames
        self._block = bytearray()
        self._block_stream = 0
        self._block_end_stream = False
        self._block_promised = 0
        self._block_wire = 0
        self._block_ts = 0
        # the DATA frame being streamed
        self._data_stream = 0
        self._data_left = 0
        self._data_end_stream = False
        self._data_wire = 0  # wire bytes of the frame read and not yet accounted for by a piece
        self._pad_left = 0
        self._skip_left = 0

    @property
    def buffered(self) -> int:
        """Bytes of frames not yet complete: the receive buffer and a header block awaiting its CONTINUATION."""
        return self.buffer.buffered + len(self._block)

    @property
    def in_block(self) -> bool:
        """A header block was started and awaits its CONTINUATION frames."""
        return self._block_stream != 0

    # -- input --------------------------------------------------------------------

    def feed(self, data: bytes, ts_ns: int) -> list[FrameEvent]:
        """The frame events the next in-order bytes complete; raises HeaderStateLost."""
        self.wire_bytes += len(data)
        if not self.buffer.feed(data, ts_ns):
            return []
        out: list[FrameEvent] = []
        buf = self.buffer
        while buf.unread:
            state = self._state
            if state is _State.HEAD:
                if not self._head(out):
                    break
            elif state is _State.DATA:
                self._data(out)
            elif state is _State.SKIP:
                self._skip_left -= buf.skip(self._skip_left)
                if not self._skip_left:
                    self._state = _State.HEAD
            elif state is _State.FRAME:
                ts = buf.ts_at(buf.pos)
                raw = buf.take(FRAME_HEADER + self._frame_len)
                if raw is None:
                    buf.wait_for(FRAME_HEADER + self._frame_len)
                    break
                self._state = _State.HEAD
                self._frame(raw, ts, out)
            elif state is _State.DATA_PAD:
                self._pad_length()
            elif not self._check_preface():
                break
        return out

    def gap(self, nbytes: int, ts_ns: int) -> Data | None:
        """`nbytes` were lost: a piece saying so when they fell inside a DATA payload, else HeaderStateLost."""
        self.wire_bytes += nbytes
        if self._state is _State.DATA and not self.buffer.unread and nbytes <= self._data_left + self._pad_left:
            lost = min(nbytes, self._data_left)
            self._data_left -= lost
            self._pad_left -= nbytes - lost
            self.buffer.skip_unbuffered(nbytes)
            ends = not self._data_left and not self._pad_left
            if ends:
                self._state = _State.HEAD
            piece = Data(self._data_stream, b"", ends and self._data_end_stream, self._data_wire + nbytes, lost,
                         ts_ns)
            self._data_wire = 0
            return piece
        raise HeaderStateLost(PROTOCOL, self.buffer.direction, self.buffer.offset,
                              f"{nbytes} bytes lost outside a DATA payload")

    # -- states -------------------------------------------------------------------

    def _check_preface(self) -> bool:
        buf = self.buffer
        want = self._preface
        got = buf.data[buf.pos:buf.pos + len(want)]
        if want[:len(got)] != got:
            raise HeaderStateLost(PROTOCOL, buf.direction, buf.offset, "not the HTTP/2 connection preface")
        if len(got) < len(want):
            return False
        buf.skip(len(want))
        self._state = _State.HEAD
        return True

    def _head(self, out: list[FrameEvent]) -> bool:
        buf = self.buffer
        ts = buf.ts_at(buf.pos)
        header = buf.take(FRAME_HEADER)
        if header is None:
            return False
        high, low, frame_type, flags, stream_id = _HEADER.unpack(header)
        length = (high << 8) | low
        stream_id &= _STREAM_MASK
        self.counters["h2_frames"] += 1
        if self._block_stream and frame_type != FrameType.CONTINUATION:
            self._lost(f"frame type {frame_type} inside the header block of stream {self._block_stream}")
        if frame_type == FrameType.DATA:
            self._data_stream = stream_id
            self._data_end_stream = bool(flags & _FLAG_END_STREAM)
            self._data_wire = FRAME_HEADER
            self._data_left = length
            self._pad_left = 0
            if not length:
                self._state = _State.HEAD
                self._data_wire = 0
                out.append(Data(stream_id, b"", self._data_end_stream, FRAME_HEADER, 0, ts))
            else:
                self._state = _State.DATA_PAD if flags & _FLAG_PADDED else _State.DATA
            return True
        limit = MAX_HEADER_BLOCK if frame_type in _HEADER_FRAMES else MAX_CONTROL_FRAME
        if frame_type not in _PARSED or length > limit:
            if frame_type in _HEADER_FRAMES:
                self._lost(f"header block frame of {length} bytes is over the limit of {MAX_HEADER_BLOCK}")
            if frame_type in _PARSED:
                self.counters["h2_frames_skipped"] += 1
            self._skip_left = length
            self._state = _State.SKIP if length else _State.HEAD
            return True
        self._frame_len = length
        buf.pos -= FRAME_HEADER  # hyperframe parses the header with the body
        self._state = _State.FRAME
        return True

    def _pad_length(self) -> None:
        buf = self.buffer
        pad = buf.data[buf.pos]
        buf.pos += 1
        self._data_left -= 1
        self._data_wire += 1
        if pad > self._data_left:
            self.counters["h2_frames_malformed"] += 1
            self._skip_left = self._data_left
            self._data_left = 0
            self._state = _State.SKIP if self._skip_left else _State.HEAD
            return
        self._data_left -= pad
        self._pad_left = pad
        self._state = _State.DATA

    def _data(self, out: list[FrameEvent]) -> None:
        buf = self.buffer
        start = buf.pos
        take = min(self._data_left, buf.unread)
        payload = bytes(buf.data[start:start + take])
        buf.pos += take
        self._data_left -= take
        pad = min(self._pad_left, buf.unread)
        buf.pos += pad
        self._pad_left -= pad
        ends = not self._data_left and not self._pad_left
        wire = self._data_wire + buf.pos - start
        self._data_wire = 0
        out.append(Data(self._data_stream, payload, ends and self._data_end_stream, wire, 0, buf.ts_at(start)))
        if ends:
            self._state = _State.HEAD

    def _frame(self, raw: bytes, ts_ns: int, out: list[FrameEvent]) -> None:
        try:
            frame, _ = Frame.parse_frame_header(memoryview(raw[:FRAME_HEADER]))
            frame.parse_body(memoryview(raw[FRAME_HEADER:]))
        except HyperframeError as exc:
            if raw[3] in _HEADER_FRAMES:
                self._lost(f"malformed header block frame: {exc}")
            self.counters["h2_frames_malformed"] += 1
            return
        if isinstance(frame, HeadersFrame | PushPromiseFrame):
            self._block = bytearray(frame.data)
            self._block_stream = frame.stream_id
            self._block_end_stream = "END_STREAM" in frame.flags
            self._block_promised = frame.promised_stream_id if isinstance(frame, PushPromiseFrame) else 0
            self._block_wire = len(raw)
            self._block_ts = ts_ns
        elif isinstance(frame, ContinuationFrame):
            if frame.stream_id != self._block_stream:
                self._lost(f"CONTINUATION of stream {frame.stream_id} outside its header block")
            self._block += frame.data
            self._block_wire += len(raw)
            if len(self._block) > MAX_HEADER_BLOCK:
                self._lost(f"header block over the limit of {MAX_HEADER_BLOCK} bytes")
        elif isinstance(frame, RstStreamFrame):
            out.append(Reset(frame.stream_id, frame.error_code, ts_ns))
            return
        elif isinstance(frame, SettingsFrame):
            out.append(Settings("ACK" in frame.flags, tuple(frame.settings.items())))
            return
        elif isinstance(frame, GoAwayFrame):
            out.append(GoAway(frame.last_stream_id, frame.error_code))
            return
        else:
            return
        if "END_HEADERS" in frame.flags:
            out.append(HeaderBlock(self._block_stream, bytes(self._block), self._block_end_stream,
                                   self._block_promised, self._block_wire, self._block_ts))
            self._block = bytearray()
            self._block_stream = 0

    def _lost(self, reason: str) -> None:
        buf = self.buffer
        raise HeaderStateLost(PROTOCOL, buf.direction, buf.offset, reason)


_HEADER_FRAMES = frozenset({FrameType.HEADERS, FrameType.PUSH_PROMISE, FrameType.CONTINUATION})
