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

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from agent.metrics import Counters
from agent.protocols.amqp.methods import CONTENT, METHODS, REQUEST, MethodSpec
from agent.protocols.amqp.tables import FieldError, properties
from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.transport.types import Direction

PROTOCOL = "amqp"

MAX_FRAME_BYTES = 1 << 20  # method and header frames buffered whole; RabbitMQ's default frame_max is 128 KiB
MAX_CHANNELS = 2048  # channels with content in progress (RabbitMQ's default channel_max is 2047)

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
_PROTOCOL_HEADER = b"AMQP"


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


class State(IntEnum):
    """Where the parser is in the frame stream of its direction."""

    FRAME_HEADER = 0  # type(1) channel(2) size(4), or the 8-byte protocol header
    FRAME_PAYLOAD = 1  # a method or header frame, buffered whole with its frame-end octet
    BODY_STREAM = 2  # a body frame's payload, streamed into its content
    SKIP = 3  # a frame counted past unread (oversized, orphaned body)
    FRAME_END = 4  # the 0xCE after a streamed or skipped payload


class AmqpParser:
    """The frames of one direction."""

    # One handler per state, called with the instance (a class-level table: no bound methods per AmqpParser).
    _STEPS: ClassVar[dict[State, Callable[[AmqpParser, list[AmqpMessage]], bool]]]

    def __init__(self, direction: Direction, settings: ParserSettings, counters: Counters | None = None) -> None:
        self.direction = direction
        self.settings = settings
        # A frame being buffered arrives in many segments: the buffer holds them and joins them once complete.
        self.buf = ReceiveBuffer(PROTOCOL, direction, MAX_FRAME_BYTES + 1)
        self._state = State.FRAME_HEADER
        self._ftype = 0
        self._channel = 0
        self._left = 0  # payload bytes of the current frame still due (streamed or skipped)
        self._frame_ts = 0
        self._content: dict[int, _Content] = {}
        self.resync = False  # after a gap or error: accept only a frame that checks out whole
        self.counters = counters if counters is not None else Counters(PROTOCOL)

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def reset(self) -> None:
        """Drop partial frames and content; the next bytes are searched for a frame boundary."""
        self.buf.clear()
        self._state = State.FRAME_HEADER
        self._left = 0
        if self._content:
            self._count("incomplete_content", len(self._content))
            self._content.clear()
        self.resync = True

    @property
    def buffered(self) -> int:
        return self.buf.buffered + sum(len(c.body) for c in self._content.values())

    @property
    def idle(self) -> bool:
        return self._state == State.FRAME_HEADER and not self.buf.unread and not self._content

    def _error(self, reason: str) -> ParseError:
        return self.buf.error(reason)

    def feed(self, data: bytes, ts_ns: int) -> list[AmqpMessage]:
        """The messages `data` completes (a frame waited for whole comes out with the segment that ends it)."""
        buf = self.buf
        out: list[AmqpMessage] = []
        if not buf.feed(data, ts_ns):
            return out
        steps = self._STEPS
        buffered = buf.data  # replaced only by feed: fixed for this loop
        while buf.pos < len(buffered) and steps[self._state](self, out):
            pass
        return out

    # -- states: each consumes what it can; False when it needs more bytes ------------------

    def _frame_payload(self, out: list[AmqpMessage]) -> bool:
        rb = self.buf
        size = self._left
        pos = rb.pos
        buf = rb.data
        if len(buf) - pos < size + 1:
            rb.wait_for(size + 1)
            return False
        if buf[pos + size] != FRAME_END:
            if self.resync:
                self._drop_unsynced()
                return False
            raise self._error(f"frame of type {self._ftype} does not end with 0xCE")
        payload = bytes(buf[pos:pos + size])
        rb.pos = pos + size + 1
        self._state = State.FRAME_HEADER
        self.resync = False
        msg = self._frame(payload)
        if msg is not None:
            out.append(msg)
        return True

    def _body_stream(self, out: list[AmqpMessage]) -> bool:
        rb = self.buf
        pos = rb.pos
        take = min(self._left, rb.unread)
        msg = self._body_bytes(rb.data[pos:pos + take])
        rb.pos = pos + take
        self._left -= take
        if msg is not None:
            out.append(msg)
        if not self._left:
            self._state = State.FRAME_END
        return True

    def _skip(self, out: list[AmqpMessage]) -> bool:
        self._left -= self.buf.skip(self._left)
        if not self._left:
            self._state = State.FRAME_END
        return True

    def _frame_end(self, out: list[AmqpMessage]) -> bool:
        rb = self.buf
        if rb.data[rb.pos] != FRAME_END:
            raise self._error(f"frame of type {self._ftype} does not end with 0xCE")
        rb.pos += 1
        self._state = State.FRAME_HEADER
        return True

    def _drop_unsynced(self) -> None:
        """Resynchronising: what is buffered is not a frame; wait for the next segment."""
        rb = self.buf
        self._count("resync_dropped_bytes", rb.unread)
        rb.skip(rb.unread)
        self._state = State.FRAME_HEADER

    def _frame_header(self, out: list[AmqpMessage]) -> bool:
        rb = self.buf
        buf, pos = rb.data, rb.pos
        avail = len(buf) - pos
        head = buf[pos:pos + 4]
        if head == _PROTOCOL_HEADER[:len(head)]:  # "AMQP" 0 0 9 1: a protocol header, not a frame
            if avail < 8:
                return False
            rb.pos = pos + 8
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
        self._frame_ts = rb.ts_at(pos)
        rb.pos = pos + 7
        self._ftype = ftype
        self._channel = channel
        self._left = size
        if ftype != FRAME_BODY and size <= MAX_FRAME_BYTES:  # a method or header frame, read whole at once
            self._state = State.FRAME_PAYLOAD
            return self._frame_payload(out)
        self._state = self._payload_state(ftype, channel, size)
        return True

    def _payload_state(self, ftype: int, channel: int, size: int) -> State:
        """How the payload of a frame whose header was just read is consumed."""
        if ftype == FRAME_BODY and not self.resync:
            content = self._content.get(channel)
            if content is None or not content.have_header:
                self._count("orphan_content_frames")
                state = State.SKIP
            else:
                state = State.BODY_STREAM
            return state if size else State.FRAME_END
        if size > MAX_FRAME_BYTES:
            self._count("oversized_frames")
            if ftype == FRAME_HEADER:
                self._drop_content(channel)
            return State.SKIP
        return State.FRAME_PAYLOAD

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

    def _body_bytes(self, data: bytes | bytearray) -> AmqpMessage | None:
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


AmqpParser._STEPS = {
    State.FRAME_HEADER: AmqpParser._frame_header,
    State.FRAME_PAYLOAD: AmqpParser._frame_payload,
    State.BODY_STREAM: AmqpParser._body_stream,
    State.SKIP: AmqpParser._skip,
    State.FRAME_END: AmqpParser._frame_end,
}
