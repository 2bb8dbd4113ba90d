"""Turning a request/response pair into a Transaction with Packetbeat's HTTP fields."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from agent.protocols.base import Transaction
from agent.protocols.http import fields as f
from agent.protocols.http.body import decode_body
from agent.protocols.http.parser import HttpMessage, ParserConfig
from agent.transport.types import ConnectionInfo, Direction

NOTE_UNMATCHED_REQUEST = "Unmatched request"
NOTE_UNMATCHED_RESPONSE = "Unmatched response"
NOTE_HOST_PORT_MISMATCH = "Host header port number mismatch"

# Request-targets with their Host header whose url.* fields are remembered: entries, and the
# longest input cached (so the cache holds at most a few MB whatever the traffic).
TARGET_CACHE_ENTRIES = 4096
CACHED_TARGET_BYTES = 1024

REDACTED = "REDACTED"
_AUTH_HEADERS = ("authorization", "proxy-authorization")
_AUTH_MARK = b"uthorization:"  # Authorization: and Proxy-Authorization:, any case


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The HTTP options, prepared once per protocol config."""

    parser: ParserConfig
    send_request: bool = False
    send_response: bool = False
    send_headers: bool = False
    send_all_headers: bool = False
    header_whitelist: frozenset[str] = frozenset()
    split_cookie: bool = False
    real_ip_header: str = ""
    hide_keywords: frozenset[bytes] = frozenset()
    redact_authorization: bool = False
    redact_headers: tuple[str, ...] = ()
    decode_body: bool = True


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _redact_raw_authorization(raw: bytes) -> bytes:
    """Authorization values in the raw header text become '*', one per byte (as Packetbeat)."""
    lower = raw.lower()
    at = lower.find(_AUTH_MARK)
    if at < 0:
        return raw
    out = bytearray(raw)
    while at >= 0:
        start = at + len(_AUTH_MARK)
        end = raw.find(b"\r\n", start)
        if end < 0:
            end = len(raw)
        out[start:end] = b"*" * (end - start)
        at = lower.find(_AUTH_MARK, end)
    return bytes(out)


def _censor_start_line(raw: bytes, hidden: frozenset[bytes]) -> bytes:
    line_end = raw.find(b"\r\n")
    line = raw[:line_end]
    query_at = line.find(b"?")
    if query_at < 0:
        return raw
    version_at = line.rfind(b" ")
    if version_at < query_at:
        return raw
    censored = f.censor_query(line[query_at + 1:version_at], hidden)
    return line[:query_at + 1] + censored + raw[version_at:]


class _Target(NamedTuple):
    """What a request-target and Host header give an event; the same for every repeat of them."""

    url: dict[str, Any]  # url.* in Packetbeat's order: copied into each event, never changed
    path: str
    host: str
    host_is_ip: bool
    port_mismatch: bool  # the Host header names another port than the server's


def _target(uri: bytes, form_query: bytes | None, host_value: bytes, server_port: int,
            hidden: frozenset[bytes]) -> _Target:
    """Request-targets repeat: the same inputs give the same fields, cached while they are short."""
    if len(uri) + len(host_value) + (len(form_query) if form_query else 0) <= CACHED_TARGET_BYTES:
        return _cached_target(uri, form_query, host_value, server_port, hidden)
    return _build_target(uri, form_query, host_value, server_port, hidden)


def _build_target(uri: bytes, form_query: bytes | None, host_value: bytes, server_port: int,
                  hidden: frozenset[bytes]) -> _Target:
    target = f.split_target(uri)
    query = form_query
    if query is None:
        query = f.normalize_query(target.query, hidden) if target.query else b""
    if b", " in host_value:
        host_value = host_value.split(b", ", 1)[0]
    host, port = f.split_host(_text(host_value)) if host_value else ("", 0)
    mismatch = False
    if port == 0:
        port = server_port
    elif port != server_port:
        mismatch = True
    path = _text(target.path)
    url: dict[str, Any] = {"scheme": "http"}
    if host:
        url["domain"] = host
    if port != 80:
        url["port"] = port
    if path:
        url["path"] = path
        extension = f.path_extension(path)
        if extension:
            url["extension"] = extension
    if query:
        url["query"] = _text(query)
    if host:
        url["full"] = f.full_url(host, port, target.path, query)
    return _Target(url, path, host, f.is_ip(host), mismatch)


_cached_target = lru_cache(maxsize=TARGET_CACHE_ENTRIES)(_build_target)


def _connect_target(uri: bytes) -> _Target:
    """CONNECT's authority-form target (host:port): the tunnel's end, in url.domain and url.port."""
    text = _text(uri)
    host, port = f.split_host(text)
    url: dict[str, Any] = {"original": text}
    if host:
        url["domain"] = host
    if port:
        url["port"] = port
    return _Target(url, text, host, f.is_ip(host), False)


class EventAssembler:
    """Builds the Transaction of a request and/or response."""

    __slots__ = ("settings",)

    def __init__(self, settings: EventSettings) -> None:
        self.settings = settings

    def transaction(self, conn: ConnectionInfo, request: HttpMessage | None,
                    response: HttpMessage | None) -> Transaction:
        # The sender of the request (else the receiver of the response) is the client.
        if request is not None:
            reverse = request.direction == Direction.TO_CLIENT
        else:
            assert response is not None
            reverse = response.direction == Direction.TO_SERVER
        if reverse:
            conn = conn.reversed()
        status = "OK"
        notes: list[str] = []
        http: dict[str, Any] = {}
        event: dict[str, Any] = {"http": http}
        related: dict[str, list[str]] = {}
        txn = Transaction(type="http", conn=conn, ts_ns=0, fields=event, may_hold_nulls=False)
        if request is not None:
            txn.ts_ns = request.ts_ns
            txn.client_bytes = request.size
            notes.extend(request.notes)
            if response is None:
                notes.append(NOTE_UNMATCHED_REQUEST)
                status = "Error"
            self._request(conn, request, event, http, notes, related, txn)
        if response is not None:
            if request is None:
                txn.ts_ns = response.ts_ns
                txn.has_request = False
                status = "Error"
            txn.end_ns = response.ts_ns
            txn.server_bytes = response.size
            notes.extend(response.notes)
            if request is None:
                notes.append(NOTE_UNMATCHED_RESPONSE)
            if response.status_code >= 400:
                status = "Error"
            self._response(response, event, http, notes)
        txn.status = status
        txn.notes = notes
        if related:
            event["related"] = related
        return txn

    # -- request ---------------------------------------------------------------

    def _request(self, conn: ConnectionInfo, msg: HttpMessage, event: dict[str, Any], http: dict[str, Any],
                 notes: list[str], related: dict[str, list[str]], txn: Transaction) -> None:
        settings = self.settings
        hidden = settings.hide_keywords
        body = msg.body
        if body and msg.save_body and msg.encodings and settings.decode_body:
            body, note = decode_body(body, msg.encodings, settings.parser.max_message_size)
            if note:
                notes.append(note)
        urlencoded = b"urlencoded" in msg.content_type
        form_query: bytes | None = None  # the query as Packetbeat reports it when a form body adds to it
        if msg.content_length > 0 and msg.save_body and urlencoded:
            parsed = f.split_target(msg.uri)
            params = f.collect_params(f.parse_query(parsed.query), hidden) if parsed.query else {}
            params.update(f.collect_params(f.parse_query(body), hidden))
            form_query = f.encode_params(params)
        decoded_length = len(body)
        if hidden and urlencoded and body:
            body = f.censor_query(body, hidden)

        headers = msg.headers
        if msg.method == b"CONNECT":
            target = _connect_target(msg.uri)
        else:
            target = _target(msg.uri, form_query, headers.get("host", b""), conn.server.port, hidden)
        host = target.host
        if target.host_is_ip:
            related.setdefault("ip", []).append(host)
        elif host:
            if msg.method != b"CONNECT":  # a tunnel's target is not this connection's destination (the proxy)
                txn.domain = host
            related.setdefault("hosts", []).append(host)
        if target.port_mismatch:
            notes.append(NOTE_HOST_PORT_MISMATCH)
        if settings.real_ip_header:
            real = headers.get(settings.real_ip_header)
            if real:
                candidate = _text(real.split(b",", 1)[0].strip(b" \t"))
                if candidate.startswith("[") and candidate.endswith("]"):
                    candidate = candidate[1:-1]
                if f.is_ip(candidate):
                    event["network"] = {"forwarded_ip": candidate}
                    related.setdefault("ip", []).append(candidate)

        method = _text(msg.method)
        path = target.path
        request: dict[str, Any] = {"method": method, "bytes": msg.size}
        body_bytes = msg.content_length
        include = msg.send_body and body
        if include:
            body_bytes = decoded_length
        if body_bytes:
            request["body"] = {"bytes": body_bytes}
        if include:
            request["body"]["content"] = _text(body)
        referrer = headers.get("referer")
        if referrer:
            request["referrer"] = _text(referrer)
            related.setdefault("hosts", []).append(request["referrer"])
        request["headers"] = self._headers(msg)
        http["version"] = msg.version
        http["request"] = request

        event["url"] = target.url.copy()
        agent = headers.get("user-agent")
        if agent:
            event["user_agent"] = {"original": _text(agent)}
        event["method"] = method
        event["query"] = f"{method} {path}"
        if settings.send_request:
            raw = msg.raw_headers
            if settings.redact_authorization:
                raw = _redact_raw_authorization(raw)
            if hidden:
                raw = _censor_start_line(raw, hidden)
            event["request"] = _text(raw + body if msg.send_body else raw)
        if not settings.redact_authorization:
            auth = headers.get("authorization")
            user = f.basic_auth_user(auth) if auth else ""
            if user:
                event["user"] = {"name": user}
                related.setdefault("user", []).append(user)

    # -- response --------------------------------------------------------------

    def _response(self, msg: HttpMessage, event: dict[str, Any], http: dict[str, Any], notes: list[str]) -> None:
        settings = self.settings
        body = msg.body
        if body and msg.save_body and msg.encodings and settings.decode_body:
            body, note = decode_body(body, msg.encodings, settings.parser.max_message_size)
            if note:
                notes.append(note)
        response: dict[str, Any] = {}
        if msg.status_code:
            response["status_code"] = msg.status_code
        if msg.status_phrase:
            response["status_phrase"] = _text(msg.status_phrase.lower())
        response["bytes"] = msg.size
        body_bytes = msg.content_length
        include = msg.send_body and body
        if include:
            body_bytes = len(body)
        if body_bytes:
            response["body"] = {"bytes": body_bytes}
        if include:
            response["body"]["content"] = _text(body)
        response["headers"] = self._headers(msg)
        http["response"] = response
        if settings.send_response:
            raw = msg.raw_headers
            event["response"] = _text(raw + body if msg.send_body else raw)

    # -- headers ---------------------------------------------------------------

    def _headers(self, msg: HttpMessage) -> dict[str, Any]:
        settings = self.settings
        out: dict[str, Any] = {"content-length": msg.content_length}
        if msg.content_type:
            out["content-type"] = _text(msg.content_type)
        if not settings.send_headers:
            return out
        send_all = settings.send_all_headers
        whitelist = settings.header_whitelist
        cookie = "cookie" if msg.is_request else "set-cookie"
        for name, value in msg.headers.items():
            if name in {"content-length", "content-type"}:
                continue
            if not send_all and name not in whitelist:
                continue
            if name == cookie and settings.split_cookie:
                out[name] = f.split_cookies(_text(value))
            else:
                out[name] = _text(value)
        for name in settings.redact_headers:
            if name in out and name not in ("content-length", "content-type"):
                out[name] = REDACTED
        if msg.is_request and settings.redact_authorization:
            for name in _AUTH_HEADERS:
                if out.get(name):
                    out[name] = "*"
        return out
