"""HTTP transactions: HTTP/1.x requests paired FIFO with responses on each connection, and HTTP/2 streams.

Every request is its own event (pipelining and keep-alive included).  An
interim 1xx response is dropped (one event for `Expect: 100-continue`); a
response nobody asked for is published at once with "Unmatched response"; a
request left without a response is published when the connection expires,
with "Unmatched request".

A connection may stop being HTTP/1.x:

- HTTP/2 (its client preface, a server's SETTINGS as its first bytes, or
  `101` to `Upgrade: h2c`): the session delegates to `H2Session`
  (agent/protocols/http/h2session.py), one transaction per stream;
- TLS (a `2xx` to CONNECT whose tunnel starts with a TLS handshake record,
  or `101` to `Upgrade: TLS/...`): the connection is handed over to the
  `tls` protocol, which reports the handshake;
- anything else after `101` or a successful CONNECT (WebSocket, a tunnel
  of another protocol) is a tunnel: its bytes are counted, not parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt, positive
from agent.protocols.base import ProtocolConfig, ProtocolSpec
from agent.protocols.http.fields import FIELDS
from agent.protocols.http.h2streams import H2_COUNTERS
from agent.protocols.http.messages import DEFAULT_MAX_MESSAGE_SIZE, PARSER_COUNTERS
from agent.protocols.http.session import MAX_QUEUED_REQUESTS, HttpSession, event_settings

COUNTERS = (
    "requests",
    "responses",
    "transactions",
    "unmatched_requests",
    "unmatched_responses",
    "interim_responses",
    "queue_overflow",
    "tunnels",
    "tunnel_bytes",
    "early_responses",
    "tls_hand_overs",
    *PARSER_COUNTERS,
    *H2_COUNTERS,
)


@dataclass(frozen=True)
class HttpConfig(ProtocolConfig):
    """Packetbeat's `type: http` settings, with its defaults."""

    send_headers: tuple[str, ...] = opt((), doc="headers to export in http.*.headers (case-insensitive)")
    send_all_headers: bool = opt(False, doc="export every header")
    split_cookie: bool = opt(False, doc="export Cookie and Set-Cookie as maps")
    real_ip_header: str = opt("", doc="header holding the client address, e.g. X-Forwarded-For")
    include_body_for: tuple[str, ...] = opt((), doc="Content-Type substrings whose bodies are exported")
    include_request_body_for: tuple[str, ...] = opt(())
    include_response_body_for: tuple[str, ...] = opt(())
    hide_keywords: tuple[str, ...] = opt((), doc="query and form parameters whose values become xxxxx")
    redact_authorization: bool = opt(False)
    redact_headers: tuple[str, ...] = opt((), doc="headers whose values become REDACTED")
    max_message_size: int = opt(DEFAULT_MAX_MESSAGE_SIZE, kind="size", check=positive)
    decode_body: bool = opt(True, doc="undo gzip/deflate codings of exported bodies")


SPEC = ProtocolSpec(
    name="http",
    config_class=HttpConfig,
    fields=FIELDS,
    tcp=HttpSession,
    description="HTTP/1.0, HTTP/1.1 and HTTP/2 (gRPC) requests and responses; CONNECT and Upgrade hand TLS over",
    counters=COUNTERS,
)

__all__ = ("COUNTERS", "MAX_QUEUED_REQUESTS", "SPEC", "HttpConfig", "HttpSession", "event_settings")
