"""Both directions of one HTTP/2 connection: frames and HPACK in, one exchange per stream out.

Sans-IO, fed per direction (`feed`, `gap`, `close`, `drain`).  Each direction
has a `FrameReader` and its own HPACK `Decoder` (the `hpack` library): a
header block is decoded by the decoder of the direction that sent it, in
wire order, whether or not its stream is tracked, or the dynamic table
would drift from the encoder's.

A stream becomes an `Exchange` when its response ends (END_STREAM, after
the trailers if any), when either side resets it, or when the connection
ends or idles out with the stream still open.  Interim (1xx) responses are
dropped.  A PUSH_PROMISE opens the promised stream with the pushed request.

Limits, each counted: `MAX_OPEN_STREAMS` streams tracked at once, a
decoded header list of `MAX_HEADER_LIST` bytes, a dynamic table of at most
`MAX_HPACK_TABLE` bytes per direction, and stored bodies within the
`ParserConfig`'s `max_message_size` per message and `held_limit` per
connection.  A stream over a limit is not tracked; its header blocks are
still decoded.

Decoding stops for good, with a note on every open stream, when a header
block cannot be decoded (malformed, over a limit, cut by a gap): from then
on the HPACK state of that direction is unknowable and guessing would put
wrong headers on later requests.  A gap inside a DATA payload only costs
that body its bytes (the framing and HPACK state survive it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hpack import Decoder
from hpack.exceptions import HPACKError, InvalidTableSizeError, OversizedHeaderListError

from agent.metrics import Counters
from agent.protocols.http.h2frames import (
    FRAME_COUNTERS,
    Data,
    FrameEvent,
    FrameReader,
    GoAway,
    HeaderBlock,
    HeaderStateLost,
    Reset,
)
from agent.protocols.http.parser import NOTE_LOSS_REQUEST, NOTE_LOSS_RESPONSE, ParserConfig
from agent.transport.types import Direction

MAX_OPEN_STREAMS = 256  # streams tracked at once per connection (servers allow 100-250 concurrent)
MAX_HEADER_LIST = 64 * 1024  # decoded header list, RFC 7541 sizes (name + value + 32 per field)
MAX_HPACK_TABLE = 64 * 1024  # dynamic table size an encoder may choose (4096 unless SETTINGS raise it)

H2_COUNTERS = (
    "h2_connections",
    "h2_streams",
    "h2_streams_overflow",
    "h2_streams_reset",
    "h2_streams_incomplete",
    "h2_interim_responses",
    "h2_pushed_streams",
    "h2_untracked_frames",
    "h2_bodies_truncated",
    "h2_gaps_in_data",
    "h2_decoding_stopped",
    "h2_hpack_errors",
    "h2_header_lists_over_limit",
    "h2_hpack_tables_over_limit",
    *FRAME_COUNTERS,
)

NOTE_STOPPED = "HTTP/2 decoding stopped: {}"
NOTE_RESET = "Stream reset by the {} ({})"
NOTE_PUSHED = "Server push"
NOTE_INCOMPLETE = "HTTP/2 stream still open when the connection ended"
NOTE_OVER_BUDGET = "HTTP/2 stream published early: the connection holds too many header and body bytes"

# RFC 9113 section 7
ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
               "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")

Fields = list[tuple[bytes, bytes]]

# hpack logs every header block it decodes at debug level: with `-d '*'` cookies and tokens would reach the logs.
logging.getLogger("hpack").setLevel(logging.WARNING)


def error_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


class Half:
    """One side of a stream: the request, or the response."""

    __slots__ = ("body", "body_bytes", "direction", "ended", "fields", "held", "save", "send", "stored", "trailers",
                 "truncated", "ts_ns", "wire_bytes")

    def __init__(self, direction: Direction, ts_ns: int) -> None:
        self.direction = direction
        self.ts_ns = ts_ns
        self.fields: Fields = []  # the header block (for a response: the final one)
        self.trailers: Fields = []
        self.ended = False
        self.wire_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0  # DATA payload on the wire, lost bytes included
        self.stored = 0
        self.held = 0  # header and body bytes this half holds against the connection's budget
        self.send = False  # the body is exported (content type matched include_*body_for)
        self.save = False  # the body is kept (exported, or a form whose parameters are read)
        self.truncated = False

    def field(self, name: bytes) -> bytes | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Exchange:
    """One stream, as complete as it got: what becomes one transaction."""

    stream_id: int
    request: Half | None
    response: Half | None
    notes: list[str]


class _Stream:
    __slots__ = ("id", "notes", "request", "response")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.request: Half | None = None
        self.response: Half | None = None
        self.notes: list[str] = []


class H2Connection:
    """The HTTP/2 state of one TCP connection; `client` is the direction the client's bytes travel."""

    __slots__ = ("client", "config", "counters", "decoders", "held", "held_limit", "readers", "stopped", "streams")

    def __init__(self, config: ParserConfig, counters: Counters, client: Direction = Direction.TO_SERVER,
                 client_preface: bytes = b"", held_limit: int = 1 << 20) -> None:
        self.config = config
        self.counters = counters
        self.client = client
        self.readers = {client: FrameReader(client, counters, client_preface),
                        client.other: FrameReader(client.other, counters)}
        self.decoders = {client: _decoder(), client.other: _decoder()}
        self.streams: dict[int, _Stream] = {}
        self.held = 0
        self.held_limit = max(held_limit, config.max_message_size)
        self.stopped = ""  # why decoding stopped, once it has
        counters["h2_connections"] += 1

    # -- input ------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        if self.stopped:
            return []
        try:
            events = self.readers[direction].feed(data, ts_ns)
        except HeaderStateLost as exc:
            return self._stop(exc.reason)
        return self._handle(direction, events)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> list[Exchange]:
        if self.stopped:
            return []
        try:
            piece = self.readers[direction].gap(nbytes, ts_ns)
        except HeaderStateLost:
            return self._stop("bytes lost, header compression state unknown")
        self.counters["h2_gaps_in_data"] += 1
        return self._handle(direction, [piece]) if piece is not None else []

    def drain(self) -> list[Exchange]:
        """The connection ended or idled out: every stream still open, as it is."""
        out = []
        for stream in list(self.streams.values()):
            self.counters["h2_streams_incomplete"] += 1
            out.append(self._finish(stream, NOTE_INCOMPLETE))
        self.streams.clear()
        self.held = 0
        return out

    def adopt(self, stream_id: int, request: Half, note: str) -> None:
        """Open `stream_id` with a request that did not come as HTTP/2 frames (the h2c upgrade's request)."""
        size = _size(request.fields)
        stream = self._open(stream_id, size)
        if stream is None:
            return
        stream.request = request
        request.held = size
        self.held += size
        stream.notes.append(note)

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    @property
    def buffered(self) -> int:
        return self.held + sum(reader.buffered for reader in self.readers.values())

    # -- frames -----------------------------------------------------------------------

    def _handle(self, direction: Direction, events: list[FrameEvent]) -> list[Exchange]:
        out: list[Exchange] = []
        for event in events:
            if isinstance(event, Data):
                self._data(direction, event, out)
            elif isinstance(event, HeaderBlock):
                fields = self._decode(direction, event.block)
                if fields is None:
                    out.extend(self._stop(self.stopped))
                    return out
                self._headers(direction, event, fields, out)
            elif isinstance(event, Reset):
                self._reset(direction, event, out)
            elif isinstance(event, GoAway):
                pass  # streams above last_stream_id were not processed; their resets or the close tell
        return out

    def _decode(self, direction: Direction, block: bytes) -> Fields | None:
        try:
            return list(self.decoders[direction].decode(block, raw=True))
        except OversizedHeaderListError:
            self.counters["h2_header_lists_over_limit"] += 1
            self.stopped = f"header list over the limit of {MAX_HEADER_LIST} bytes"
        except InvalidTableSizeError:
            self.counters["h2_hpack_tables_over_limit"] += 1
            self.stopped = f"header table over the limit of {MAX_HPACK_TABLE} bytes"
        except (HPACKError, ValueError, IndexError) as exc:  # hpack's own checks miss a few malformed integers
            self.counters["h2_hpack_errors"] += 1
            self.stopped = f"malformed header block ({type(exc).__name__})"
        return None

    def _headers(self, direction: Direction, event: HeaderBlock, fields: Fields, out: list[Exchange]) -> None:
        if event.promised_stream_id:
            self._pushed(direction, event, fields)
            return
        size = _size(fields)
        stream = self.streams.get(event.stream_id)
        if stream is None:
            if direction != self.client:
                self.counters["h2_untracked_frames"] += 1
                return
            stream = self._open(event.stream_id, size)
            if stream is None:
                return
        half = stream.request if direction == self.client else stream.response
        if half is None:
            half = Half(direction, event.ts_ns)
            if direction == self.client:
                stream.request = half
            else:
                stream.response = half
        half.wire_bytes += event.wire_bytes
        if direction != self.client and not half.fields and 100 <= _status(fields) < 200:
            self.counters["h2_interim_responses"] += 1
            return
        if half.fields:
            half.trailers.extend(fields)
        else:
            self._first_block(half, fields, direction == self.client)
        half.held += size
        self.held += size
        if self.held > self.held_limit:
            # Publish now rather than hold more than the connection's budget; the rest of the stream is untracked.
            self.counters["h2_streams_overflow"] += 1
            out.append(self._finish(stream, NOTE_OVER_BUDGET))
        elif event.end_stream:
            self._end(stream, half, out)

    def _pushed(self, direction: Direction, event: HeaderBlock, fields: Fields) -> None:
        associated = self.streams.get(event.stream_id)
        if associated is not None and associated.response is not None:
            associated.response.wire_bytes += event.wire_bytes  # the PUSH_PROMISE frame is sent on that stream
        if direction == self.client or event.promised_stream_id in self.streams:
            self.counters["h2_untracked_frames"] += 1
            return
        size = _size(fields)
        stream = self._open(event.promised_stream_id, size)
        if stream is None:
            return
        self.counters["h2_pushed_streams"] += 1
        half = stream.request = Half(self.client, event.ts_ns)
        self._first_block(half, fields, True)
        half.held += size
        self.held += size
        half.ended = True
        stream.notes.append(NOTE_PUSHED)

    def _open(self, stream_id: int, size: int) -> _Stream | None:
        if len(self.streams) >= MAX_OPEN_STREAMS or self.held + size > self.held_limit:
            self.counters["h2_streams_overflow"] += 1
            return None
        self.counters["h2_streams"] += 1
        stream = self.streams[stream_id] = _Stream(stream_id)
        return stream

    def _first_block(self, half: Half, fields: Fields, is_request: bool) -> None:
        half.fields = fields
        config = self.config
        includes = config.include_request_body_for if is_request else config.include_response_body_for
        content_type = half.field(b"content-type") or b""
        send = any(include in content_type for include in includes)
        half.send = send
        half.save = send or (is_request and b"urlencoded" in content_type)

    def _data(self, direction: Direction, piece: Data, out: list[Exchange]) -> None:
        stream = self.streams.get(piece.stream_id)
        if stream is None:
            if piece.stream_id:
                self.counters["h2_untracked_frames"] += 1
            return
        half = stream.request if direction == self.client else stream.response
        if half is None:
            self.counters["h2_untracked_frames"] += 1
            return
        half.wire_bytes += piece.wire_bytes
        half.body_bytes += len(piece.data) + piece.lost
        if piece.lost:
            note = NOTE_LOSS_REQUEST if direction == self.client else NOTE_LOSS_RESPONSE
            if note not in stream.notes:
                stream.notes.append(note)
        if half.save and piece.data:
            self._store(half, piece.data)
        if piece.end_stream:
            self._end(stream, half, out)

    def _store(self, half: Half, data: bytes) -> None:
        room = min(self.config.max_message_size - half.stored, self.held_limit - self.held)
        if len(data) > room:
            data = data[:max(room, 0)]
            if not half.truncated:
                half.truncated = True
                self.counters["h2_bodies_truncated"] += 1
        if data:
            half.body.append(data)
            half.stored += len(data)
            half.held += len(data)
            self.held += len(data)

    def _end(self, stream: _Stream, half: Half, out: list[Exchange]) -> None:
        half.ended = True
        if half is stream.response:
            out.append(self._finish(stream))

    def _reset(self, direction: Direction, event: Reset, out: list[Exchange]) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        self.counters["h2_streams_reset"] += 1
        side = "client" if direction == self.client else "server"
        out.append(self._finish(stream, NOTE_RESET.format(side, error_name(event.error_code))))

    def _finish(self, stream: _Stream, note: str = "") -> Exchange:
        """Close `stream` (already gone from the table when draining) and give its exchange."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        for half in (stream.request, stream.response):
            if half is not None:
                self.held -= half.held
                half.held = 0
        if note:
            stream.notes.append(note)
        return Exchange(stream.id, stream.request, stream.response, stream.notes)

    def _stop(self, reason: str) -> list[Exchange]:
        """Decoding ends for good: every open stream is published with the reason; later bytes are ignored."""
        self.stopped = reason
        self.counters["h2_decoding_stopped"] += 1
        out = [self._finish(stream, NOTE_STOPPED.format(reason)) for stream in list(self.streams.values())]
        self.streams.clear()
        self.held = 0
        for reader in self.readers.values():
            reader.buffer.clear()
        return out


def _decoder() -> Decoder:
    decoder = Decoder(max_header_list_size=MAX_HEADER_LIST)
    decoder.max_allowed_table_size = MAX_HPACK_TABLE
    return decoder


def _size(fields: Fields) -> int:
    return sum(len(name) + len(value) for name, value in fields)


def _status(fields: Fields) -> int:
    for name, value in fields:
        if name == b":status":
            return int(value) if value.isdigit() and len(value) <= 3 else 0
    return 0
