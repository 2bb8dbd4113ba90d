"""The HTTP/1.x parser's output and settings: `HttpMessage`, `ParserConfig`, their limits, notes and counters.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (NamedTuple messages built with `tuple.__new__`, frozen slotted
dataclasses); an edit is used natively only after set-up rebuilds
(`scripts/accel.py build`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from agent.transport.types import Direction

DEFAULT_MAX_MESSAGE_SIZE: Final = 10 * 1024 * 1024
HEADER_LIMIT: Final = 1024 * 1024  # a header (or trailer) block longer than this is not HTTP we can follow
MAX_PENDING_METHODS: Final = 1024  # requests whose response head has not been seen yet

NOTE_LOSS_REQUEST: Final = "Packet loss while capturing the request"
NOTE_LOSS_RESPONSE: Final = "Packet loss while capturing the response"
NOTE_BARE_LF: Final = "Lines ended by a bare LF (accepted, RFC 9112 section 2.2)"

PARSER_COUNTERS: Final = (
    "parse_errors",
    "resyncs",
    "resync_skipped_bytes",
    "gaps_in_headers",
    "gaps_in_body",
    "header_block_overflow",
    "start_line_overflow",
    "chunk_line_overflow",
    "bodies_truncated",
    "incomplete_at_close",
    "pending_methods_overflow",
)


@dataclass(frozen=True, slots=True)
class ParserConfig:
    """What framing needs from the protocol settings."""

    include_request_body_for: tuple[bytes, ...] = ()
    include_response_body_for: tuple[bytes, ...] = ()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @property
    def header_limit(self) -> int:
        return min(HEADER_LIMIT, self.max_message_size)


class HttpMessage(NamedTuple):
    """One complete (or, at a gap or close, as complete as it got) request or response.

    Immutable like the other wire messages; a NamedTuple rather than a frozen
    dataclass because it is built for every message and a frozen dataclass
    costs ten times as much to construct.
    """

    is_request: bool
    ts_ns: int  # time of the segment holding the first byte
    version: str  # "1.1"
    method: bytes  # requests
    uri: bytes  # requests, as sent
    status_code: int  # responses
    status_phrase: bytes  # responses, as sent
    headers: dict[str, bytes]  # lower-case name -> value; repeated fields joined with ", "
    raw_headers: bytes  # start line and header block, final CRLF included
    content_type: bytes
    content_length: int  # Packetbeat's notion: the declared length, else the body bytes framed
    encodings: tuple[str, ...]  # content codings then transfer codings, in the order applied
    body: bytes  # stored body (when kept), at most max_message_size - len(raw_headers)
    body_bytes: int  # body bytes on the wire after de-chunking, lost bytes included
    size: int  # bytes on the wire: headers, chunk framing, body (lost bytes included)
    send_body: bool  # Content-Type matched include_*body_for
    save_body: bool  # body kept: send_body, or a urlencoded form to read parameters from
    body_truncated: bool
    notes: tuple[str, ...]
    direction: Direction
