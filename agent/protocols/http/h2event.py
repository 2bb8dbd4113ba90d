"""An HTTP/2 exchange as an HTTP transaction: the same fields and options as HTTP/1.x, plus gRPC.

Each side of the stream becomes an `HttpMessage`, the form the HTTP/1.x
parser produces, so `EventAssembler` applies the same header, body and
redaction options.  The translation is the one an HTTP/2-to-HTTP/1.1
gateway makes (RFC 9113 section 8.3):

- `:method` and `:path` are the request line, `:status` the status code,
  `:authority` the Host header when the request has none; `cookie` crumbs
  are joined with "; ".
- http.version is "2".  With `send_request`/`send_response`, the exported
  text is the decoded header list written as an HTTP/1.1-style head
  ("GET /path HTTP/2", then one `name: value` line per field): there is no
  raw text on the wire, HPACK is binary.
- Trailers join the response's (or request's) headers, so `send_headers`
  can name them (`grpc-status`).
- http.request.bytes / http.response.bytes are the wire bytes of the
  stream's frames in that direction (frame headers and padding included).

gRPC (content-type application/grpc...) adds OpenTelemetry's RPC attributes
(semantic conventions up to 1.37; ECS has no rpc.* fields): rpc.system
"grpc", rpc.service and rpc.method from the path, rpc.grpc.status_code
from grpc-status (trailers, or the headers of a trailers-only response),
and grpc-message, percent-decoded, as a note (ECS error.message).  A status other
than 0 (OK) makes the event's status Error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from agent.protocols.base import Transaction
from agent.protocols.http.event import EventAssembler
from agent.protocols.http.h2streams import Exchange, Fields, Half
from agent.protocols.http.parser import HttpMessage
from agent.transport.types import ConnectionInfo

VERSION = "2"
GRPC_CONTENT_TYPE = b"application/grpc"
NOTE_GRPC_NO_STATUS = "gRPC call without grpc-status"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def message(half: Half, is_request: bool, with_raw: bool) -> HttpMessage:
    """One side of a stream in the HTTP/1.x parser's form."""
    method = uri = authority = b""
    status = 0
    headers: dict[str, bytes] = {}
    for name, value in (*half.fields, *half.trailers):
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                uri = value
            elif name == b":authority":
                authority = value
            elif name == b":status":
                status = int(value) if value.isdigit() and len(value) <= 3 else 0
            continue
        key = name.decode("latin-1").lower()
        old = headers.get(key)
        if old is None:
            headers[key] = value
        else:
            headers[key] = old + (b"; " if key == "cookie" else b", ") + value
    if is_request:
        if authority and "host" not in headers:
            headers["host"] = authority
        if method == b"CONNECT" and not uri:
            uri = authority
    content_type = headers.get("content-type", b"")
    declared = headers.get("content-length", b"")
    length = int(declared) if declared.isdigit() and len(declared) <= 18 else None
    coding = headers.get("content-encoding")
    encodings = tuple(c.strip().lower().decode("latin-1") for c in coding.split(b",") if c.strip()) if coding else ()
    raw = _head_text(is_request, method, uri, status, half) if with_raw else b""
    body = b"".join(half.body) if half.body else b""
    return HttpMessage(
        is_request, half.ts_ns, VERSION, method, uri, status, b"", headers, raw, content_type,
        length if length is not None else half.body_bytes, encodings, body, half.body_bytes, half.wire_bytes,
        half.send, half.save, half.truncated, (), half.direction,
    )


def _head_text(is_request: bool, method: bytes, uri: bytes, status: int, half: Half) -> bytes:
    start = method + b" " + uri + b" HTTP/2" if is_request else b"HTTP/2 %d" % status
    lines = [start]
    lines.extend(name + b": " + value for name, value in half.fields if name[:1] != b":")
    lines.extend(name + b": " + value for name, value in half.trailers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def transaction(assembler: EventAssembler, conn: ConnectionInfo, exchange: Exchange) -> Transaction | None:
    """The transaction of one stream; None when neither side has headers (nothing to say)."""
    settings = assembler.settings
    request = exchange.request
    response = exchange.response
    if response is not None and not response.fields:
        response = None  # reset (or stopped) before its final headers
    if request is None and response is None:
        return None
    req = message(request, True, settings.send_request) if request is not None else None
    resp = message(response, False, settings.send_response) if response is not None else None
    txn = assembler.transaction(conn, req, resp)
    txn.notes.extend(exchange.notes)
    if exchange.notes and any(note.startswith(("Stream reset", "HTTP/2 decoding stopped")) for note in exchange.notes):
        txn.status = "Error"
    if request is not None:
        scheme = request.field(b":scheme")
        if scheme and scheme != b"http":
            set_scheme(txn.fields, _text(scheme))
        content_type = request.field(b"content-type") or b""
        if content_type.startswith(GRPC_CONTENT_TYPE):
            _grpc(txn, request, response)
    return txn


def set_scheme(fields: dict[str, Any], scheme: str) -> None:
    """`:scheme` https (HTTP/2 over TLS plaintext): url.scheme, and url.full without https' default port."""
    url = fields.get("url")
    if not url:
        return
    url["scheme"] = scheme
    full = url.get("full")
    if full and full.startswith("http://"):
        rest = full[7:]
        if scheme == "https" and url.get("port") == 443:
            host, _, path = rest.partition("/")
            if host.endswith(":443"):
                rest = host[:-4] + ("/" + path if path or rest.endswith("/") else "")
        url["full"] = f"{scheme}://{rest}"


def _grpc(txn: Transaction, request: Half, response: Half | None) -> None:
    path = _text(request.field(b":path") or b"")
    service, _, method = path.lstrip("/").rpartition("/")
    rpc: dict[str, Any] = {"system": "grpc"}
    if service:
        rpc["service"] = service
    if method:
        rpc["method"] = method
    txn.fields["rpc"] = rpc
    if response is None:
        return
    status = _last(response.trailers, b"grpc-status")
    if status is None:
        status = response.field(b"grpc-status")  # trailers-only response
    if status is None or not status.isdigit() or len(status) > 3:
        if response.ended:
            txn.notes.append(NOTE_GRPC_NO_STATUS)
        return
    code = int(status)
    rpc["grpc"] = {"status_code": code}
    if code != 0:
        txn.status = "Error"
        text = _last(response.trailers, b"grpc-message") or response.field(b"grpc-message")
        if text:
            txn.notes.append(unquote(_text(text)))  # published in error.message, with any other note


def _last(fields: Fields, name: bytes) -> bytes | None:
    found = None
    for key, value in fields:
        if key == name:
            found = value
    return found
