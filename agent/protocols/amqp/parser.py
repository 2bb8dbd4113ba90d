"""Sans-IO AMQP 0-9-1 parsing: frames of one direction in, method messages out.

Frames are `type(1) channel(2) size(4) payload frame-end(0xCE)`.  Method and
content-header frames are buffered whole, up to `MAX_FRAME_BYTES` (larger
ones are skipped by counting, without buffering); body frames are streamed,
keeping only the first `max_body_length` bytes of a message's body, so a
message of any size costs bounded memory.

Content is assembled per channel: a content-bearing method (basic.publish,
basic.deliver, basic.get-ok, basic.return) becomes a message once its header
frame and all its body bytes have arrived (at once when the header declares
an empty body).  Methods without content are messages at once.

Malformed frame *structure* (an unknown frame type, a missing frame-end
octet) raises `ParseError`: the stream is out of sync.  A frame that is well
delimited but whose content does not decode (a short string past the end,
an unknown method) is skipped and counted: the next frame is still in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.protocols.amqp.fields import FieldError, properties
from agent.protocols.amqp.methods import CONTENT, METHODS, REQUEST, MethodSpec
from agent.protocols.segments import PendingFrame
from agent.transport.session import ParseError
from agent.transport.types import Direction

PROTOCOL = "amqp"

MAX_FRAME_BYTES = 1 << 20  # method and header frames buffered whole; RabbitMQ's default frame_max is 128 KiB
MAX_CHANNELS = 2048  # channels with content in progress (RabbitMQ's default channel_max is 2047)

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
_PROTOCOL_HEADER = b"AMQP"

# Parser states
_FRAME_HEADER, _FRAME_PAYLOAD, _BODY_STREAM, _SKIP, _FRAME_END = range(5)


@dataclass(frozen=True, slots=True)
class ParserSettings:
    parse_headers: bool = True
    parse_arguments: bool = True
    max_body_length: int = 1000


@dataclass(frozen=True, slots=True)
class AmqpMessage:
    ts_ns: int  # when its method frame began to arrive
    channel: int
    method: str  # "queue.declare"
    class_id: int
    method_id: int
    role: int  # methods.REQUEST, RESPONSE or CONTENT
    connection_info: bool  # a connection-negotiation method (hidden by default)
    fields: dict[str, Any]  # amqp.* (method arguments, and message properties for content)
    request: str  # what follows the method name in `request`
    notes: tuple[str, ...]
    size: int  # bytes of the method frame; for content, the body size the header declared
    body: bytes = b""  # the first max_body_length bytes of the content body
    body_size: int = 0

    @property
    def is_request(self) -> bool:
        return self.role == REQUEST


class _Content:
    """A content method waiting for its header and body frames."""

    __slots__ = ("body", "body_size", "have_header", "method", "received")

    def __init__(self, method: AmqpMessage) -> None:
        self.method = method
        self.have_header = False
        self.body_size = 0
        self.received = 0
        self.body = bytearray()


class AmqpParser:
    """The frames of one direction."""

    def __init__(self, direction: Direction, settings: ParserSettings) -> None:
        self.direction = direction
        self.settings = settings
        self._buf = b""
        self._pos = 0
        self._consumed = 0  # bytes before _buf[0], for error offsets
        self._state = _FRAME_HEADER
        self._ftype = 0
        self._channel = 0
        self._left = 0  # payload bytes of the current frame still due (streamed or skipped)
        self._frame_ts = 0
        self._start_ts = 0
        self._content: dict[int, _Content] = {}
        # A frame being buffered arrives in many segments: they are collected and joined once, when complete.
        self._pending = PendingFrame()
        self.resync = False  # after a gap or error: accept only a frame that checks out whole
        self.counters: dict[str, int] = {}

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def reset(self) -> None:
        """Drop partial frames and content; the next bytes are searched for a frame boundary."""
        self._pending.clear()
        self._buf = b""
        self._pos = 0
        self._state = _FRAME_HEADER
        self._left = 0
        if self._content:
            self._count("incomplete_content", len(self._content))
            self._content.clear()
        self.resync = True

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos + self._pending.held + sum(len(c.body) for c in self._content.values())

    @property
    def idle(self) -> bool:
        return self._state == _FRAME_HEADER and self._pos >= len(self._buf) and not self._content

    def _error(self, reason: str) -> ParseError:
        return ParseError(PROTOCOL, self.direction, self._consumed + self._pos, reason)

    def feed(self, data: bytes, ts_ns: int) -> list[AmqpMessage]:
        if self._pending:
            joined = self._pending.add(data)
            if joined is None:
                return []
            data = joined
        if self._pos < len(self._buf):
            self._consumed += self._pos
            self._buf = self._buf[self._pos:] + data
        else:
            self._consumed += len(self._buf)
            self._buf = data
            if self._state == _FRAME_HEADER:
                self._start_ts = ts_ns
        self._pos = 0
        out: list[AmqpMessage] = []
        buf = self._buf
        while self._pos < len(buf):
            state = self._state
            if state == _FRAME_HEADER:
                if not self._frame_header():
                    break
            elif state == _FRAME_PAYLOAD:
                size = self._left
                if len(buf) - self._pos < size + 1:
                    self._pending.need = size + 1 - (len(buf) - self._pos)
                    break
                payload = buf[self._pos:self._pos + size]
                if buf[self._pos + size] != FRAME_END:
                    if self.resync:
                        self._drop_unsynced()
                        break
                    raise self._error(f"frame of type {self._ftype} does not end with 0xCE")
                self._pos += size + 1
                self._state = _FRAME_HEADER
                self.resync = False
                self._start_ts = ts_ns
                msg = self._frame(payload)
                if msg is not None:
                    out.append(msg)
            elif state == _BODY_STREAM:
                take = min(self._left, len(buf) - self._pos)
                msg = self._body_bytes(buf[self._pos:self._pos + take])
                self._pos += take
                self._left -= take
                if msg is not None:
                    out.append(msg)
                if not self._left:
                    self._state = _FRAME_END
            elif state == _SKIP:
                take = min(self._left, len(buf) - self._pos)
                self._pos += take
                self._left -= take
                if not self._left:
                    self._state = _FRAME_END
            else:  # _FRAME_END of a streamed or skipped frame
                if buf[self._pos] != FRAME_END:
                    raise self._error(f"frame of type {self._ftype} does not end with 0xCE")
                self._pos += 1
                self._state = _FRAME_HEADER
                self._start_ts = ts_ns
        return out

    def _drop_unsynced(self) -> None:
        """Resynchronising: what is buffered is not a frame; wait for the next segment."""
        self._count("resync_dropped_bytes", len(self._buf) - self._pos)
        self._pos = len(self._buf)
        self._state = _FRAME_HEADER

    def _frame_header(self) -> bool:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        head = buf[pos:pos + 4]
        if head == _PROTOCOL_HEADER[:len(head)]:  # "AMQP" 0 0 9 1: a protocol header, not a frame
            if avail < 8:
                return False
            self._pos = pos + 8
            self.resync = False
            return True
        if avail < 7:
            return False
        ftype = buf[pos]
        channel = (buf[pos + 1] << 8) | buf[pos + 2]
        size = int.from_bytes(buf[pos + 3:pos + 7], "big")
        if ftype not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT):
            if self.resync:
                self._drop_unsynced()
                return False
            raise self._error(f"unknown frame type {ftype}")
        if self.resync and size > MAX_FRAME_BYTES:
            self._drop_unsynced()
            return False
        self._pos = pos + 7
        self._ftype = ftype
        self._channel = channel
        self._left = size
        self._frame_ts = self._start_ts
        if ftype == FRAME_BODY and not self.resync:
            content = self._content.get(channel)
            if content is None or not content.have_header:
                self._count("orphan_content_frames")
                self._state = _SKIP
            else:
                self._state = _BODY_STREAM
            if not size:
                self._state = _FRAME_END
            return True
        if size > MAX_FRAME_BYTES:
            self._count("oversized_frames")
            if ftype == FRAME_HEADER:
                self._drop_content(channel)
            self._state = _SKIP
            return True
        self._state = _FRAME_PAYLOAD
        return True

    # -- frame payloads ----------------------------------------------------------------

    def _frame(self, payload: bytes) -> AmqpMessage | None:
        ftype = self._ftype
        if ftype == FRAME_METHOD:
            return self._method_frame(payload)
        if ftype == FRAME_HEADER:
            return self._header_frame(payload)
        if ftype == FRAME_BODY:  # a body frame read whole while resynchronising
            content = self._content.get(self._channel)
            if content is None or not content.have_header:
                self._count("orphan_content_frames")
                return None
            return self._body_bytes(payload)
        return None  # heartbeat

    def _method_frame(self, payload: bytes) -> AmqpMessage | None:
        if len(payload) < 4:
            self._count("malformed_frames")
            return None
        class_id = (payload[0] << 8) | payload[1]
        method_id = (payload[2] << 8) | payload[3]
        spec: MethodSpec | None = METHODS.get((class_id, method_id))
        if spec is None:
            self._count("unknown_methods")
            return None
        try:
            decoded = spec.decode(payload[4:], self.settings.parse_arguments)
        except FieldError:
            self._count("malformed_frames")
            return None
        channel = self._channel
        msg = AmqpMessage(self._frame_ts, channel, spec.name, class_id, method_id, spec.role, spec.connection_info,
                          decoded.fields, decoded.request, decoded.notes, len(payload) + 8)
        if channel in self._content:
            self._drop_content(channel)
        if spec.role != CONTENT:
            return msg
        if len(self._content) >= MAX_CHANNELS:
            self._drop_content(next(iter(self._content)))
        self._content[channel] = _Content(msg)
        return None

    def _header_frame(self, payload: bytes) -> AmqpMessage | None:
        content = self._content.get(self._channel)
        if content is None or content.have_header:
            self._count("orphan_content_frames")
            return None
        if len(payload) < 14:
            self._count("malformed_frames")
            self._drop_content(self._channel)
            return None
        content.body_size = int.from_bytes(payload[4:12], "big")
        content.have_header = True
        if self.settings.parse_headers:
            try:
                content.method.fields.update(properties(payload, 12))
            except FieldError:
                self._count("malformed_frames")
                self._drop_content(self._channel)
                return None
        if content.body_size == 0:
            return self._complete(self._channel, content)
        return None

    def _body_bytes(self, data: bytes) -> AmqpMessage | None:
        channel = self._channel
        content = self._content.get(channel)
        if content is None:  # completed or dropped while the frame streams
            return None
        room = self.settings.max_body_length - len(content.body)
        if room > 0:
            content.body += data[:room]
        content.received += len(data)
        if content.received >= content.body_size:
            return self._complete(channel, content)
        return None

    def _complete(self, channel: int, content: _Content) -> AmqpMessage:
        del self._content[channel]
        method = content.method
        return AmqpMessage(method.ts_ns, channel, method.method, method.class_id, method.method_id, method.role,
                           method.connection_info, method.fields, method.request, method.notes,
                           content.body_size, bytes(content.body), content.body_size)

    def _drop_content(self, channel: int) -> None:
        if self._content.pop(channel, None) is not None:
            self._count("incomplete_content")
