"""HTTP's event fields (with their index mapping), and the request/response pair turned into a Transaction
with Packetbeat's HTTP fields.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__`/frozen classes; the config reaches it
as `EventSettings`, never as the uncompiled config class); an edit is used
natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from agent.protocols.base import Transaction
from agent.protocols.http import url as f
from agent.protocols.http.body import decode_body
from agent.protocols.http.head import is_urlencoded
from agent.protocols.http.messages import HttpMessage, ParserConfig
from agent.transport.types import ConnectionInfo, Direction

# Packetbeat's http fields.yml (the header maps take any header as a keyword).  Besides these: url.*,
# user_agent.*, user.name, method, query, request, response (common fields).
FIELDS: Final = """
http.version keyword
http.request.method keyword
http.request.bytes long
http.request.body.bytes long
http.request.body.content wildcard +text
http.request.mime_type keyword
http.request.referrer keyword
http.request.id keyword
http.request.headers object dynamic=keyword
http.request.params alias=url.query
http.response.status_code long
http.response.status_phrase keyword
http.response.bytes long
http.response.body.bytes long
http.response.body.content wildcard +text
http.response.mime_type keyword
http.response.headers object dynamic=keyword
http.response.code alias=http.response.status_code
http.response.phrase alias=http.response.status_phrase
"""

NOTE_UNMATCHED_REQUEST: Final = "Unmatched request"
NOTE_UNMATCHED_RESPONSE: Final = "Unmatched response"
NOTE_HOST_PORT_MISMATCH: Final = "Host header port number mismatch"

# Request-targets with their Host header whose url.* fields are remembered: entries, and the
# longest input cached (so the cache holds at most a few MB whatever the traffic).
TARGET_CACHE_ENTRIES: Final = 4096
CACHED_TARGET_BYTES: Final = 1024

REDACTED: Final = "REDACTED"
_AUTH_HEADERS: Final = ("authorization", "proxy-authorization")
_AUTH_MARK: Final = b"uthorization:"  # Authorization: and Proxy-Authorization:, any case


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


# Status phrases as published (lower-cased text), by their bytes: a few phrases make nearly all responses.
_PHRASES: Final[dict[bytes, str]] = {}
_PHRASES_MAX: Final = 256


def _phrase_text(phrase: bytes) -> str:
    text = _PHRASES.get(phrase)
    if text is None:
        text = _text(phrase.lower())
        if len(_PHRASES) >= _PHRASES_MAX:
            _PHRASES.clear()
        if len(phrase) <= 64:
            _PHRASES[phrase] = text
    return text


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


_new_target: Final = tuple.__new__


def _target(uri: bytes, form_query: bytes | None, host_value: bytes, server_port: int,
            hidden: frozenset[bytes]) -> _Target:
    """Request-targets repeat: the same inputs give the same fields, cached while they are short."""
    if len(uri) + len(host_value) + (len(form_query) if form_query else 0) > CACHED_TARGET_BYTES:
        return _build_target(uri, form_query, host_value, server_port, hidden)
    key = (uri, form_query, host_value, server_port, hidden)
    target = TARGET_CACHE.get(key)
    if target is None:
        target = _build_target(uri, form_query, host_value, server_port, hidden)
        if len(TARGET_CACHE) >= TARGET_CACHE_ENTRIES:
            TARGET_CACHE.clear()  # cheaper than an LRU's bookkeeping on every hit; refills with what repeats
        TARGET_CACHE[key] = target
    return target


def _build_target(uri: bytes, form_query: bytes | None, host_value: bytes, server_port: int,
                  hidden: frozenset[bytes]) -> _Target:
    target = f.split_target(uri)
    query = form_query
    if query is None:
        query = f.normalize_query(target.query, hidden) if target.query else b""
    if host_value.find(b", ") >= 0:
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
    return _new_target(_Target, (url, path, host, f.is_ip(host), mismatch))  # without NamedTuple's Python __new__


TARGET_CACHE: Final[dict[tuple[bytes, bytes | None, bytes, int, frozenset[bytes]], _Target]] = {}


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
        body, form_query, decoded_length = self._request_body(msg, notes)
        target = self._request_target(conn, msg, form_query, event, notes, related, txn)
        method = _text(msg.method)
        request: dict[str, Any] = {"method": method, "bytes": msg.size}
        _add_body(request, msg, body, decoded_length)
        referrer = msg.headers.get("referer")
        if referrer:
            request["referrer"] = _text(referrer)
            related.setdefault("hosts", []).append(request["referrer"])
        request["headers"] = self._headers(msg)
        http["version"] = msg.version
        http["request"] = request

        event["url"] = target.url.copy()
        agent = msg.headers.get("user-agent")
        if agent:
            event["user_agent"] = {"original": _text(agent)}
        event["method"] = method
        event["query"] = f"{method} {target.path}"
        if settings.send_request:
            raw = msg.raw_headers
            if settings.redact_authorization:
                raw = _redact_raw_authorization(raw)
            if settings.hide_keywords:
                raw = _censor_start_line(raw, settings.hide_keywords)
            event["request"] = _text(raw + body if msg.send_body else raw)
        if not settings.redact_authorization:
            auth = msg.headers.get("authorization")
            user = f.basic_auth_user(auth) if auth else ""
            if user:
                event["user"] = {"name": user}
                related.setdefault("user", []).append(user)

    def _request_body(self, msg: HttpMessage, notes: list[str]) -> tuple[bytes, bytes | None, int]:
        """(the body as published: decoded, hidden keywords censored; the query as Packetbeat reports it when a
        form body adds to it; the decoded body's length)."""
        hidden = self.settings.hide_keywords
        body = self._decoded_body(msg, notes)
        form_query: bytes | None = None
        if not body and msg.content_length <= 0:
            return body, form_query, 0  # the usual request: nothing to read parameters from or to censor
        urlencoded = is_urlencoded(msg.content_type)
        if msg.content_length > 0 and msg.save_body and urlencoded:
            parsed = f.split_target(msg.uri)
            params = f.collect_params(f.parse_query(parsed.query), hidden) if parsed.query else {}
            params.update(f.collect_params(f.parse_query(body), hidden))
            form_query = f.encode_params(params)
        decoded_length = len(body)
        if hidden and urlencoded and body:
            body = f.censor_query(body, hidden)
        return body, form_query, decoded_length

    def _request_target(self, conn: ConnectionInfo, msg: HttpMessage, form_query: bytes | None,
                        event: dict[str, Any], notes: list[str], related: dict[str, list[str]],
                        txn: Transaction) -> _Target:
        """The request's target (url.*), its host in related.hosts or .ip and destination.domain, and the
        client address a proxy header gives (network.forwarded_ip)."""
        headers = msg.headers
        if msg.method == b"CONNECT":
            target = _connect_target(msg.uri)
        else:
            target = _target(msg.uri, form_query, headers.get("host", b""), conn.server.port,
                             self.settings.hide_keywords)
        host = target.host
        if target.host_is_ip:
            related.setdefault("ip", []).append(host)
        elif host:
            if msg.method != b"CONNECT":  # a tunnel's target is not this connection's destination (the proxy)
                txn.domain = host
            related.setdefault("hosts", []).append(host)
        if target.port_mismatch:
            notes.append(NOTE_HOST_PORT_MISMATCH)
        real_ip_header = self.settings.real_ip_header
        real = headers.get(real_ip_header) if real_ip_header else None
        if real:
            candidate = _text(real.split(b",", 1)[0].strip(b" \t"))
            if candidate.startswith("[") and candidate.endswith("]"):
                candidate = candidate[1:-1]
            if f.is_ip(candidate):
                event["network"] = {"forwarded_ip": candidate}
                related.setdefault("ip", []).append(candidate)
        return target

    # -- response --------------------------------------------------------------

    def _response(self, msg: HttpMessage, event: dict[str, Any], http: dict[str, Any], notes: list[str]) -> None:
        body = self._decoded_body(msg, notes)
        response: dict[str, Any] = {}
        if msg.status_code:
            response["status_code"] = msg.status_code
        if msg.status_phrase:
            response["status_phrase"] = _phrase_text(msg.status_phrase)
        response["bytes"] = msg.size
        _add_body(response, msg, body, len(body))
        response["headers"] = self._headers(msg)
        http["response"] = response
        if self.settings.send_response:
            raw = msg.raw_headers
            event["response"] = _text(raw + body if msg.send_body else raw)

    def _decoded_body(self, msg: HttpMessage, notes: list[str]) -> bytes:
        """The body with its content codings undone when it is kept and decode_body is on."""
        body = msg.body
        settings = self.settings
        if body and msg.save_body and msg.encodings and settings.decode_body:
            body, note = decode_body(body, msg.encodings, settings.parser.max_message_size)
            if note:
                notes.append(note)
        return body

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


def _add_body(section: dict[str, Any], msg: HttpMessage, body: bytes, decoded_length: int) -> None:
    """`body.bytes` (the decoded length when the body is published, else Content-Length) and `body.content`."""
    include = msg.send_body and body
    body_bytes = decoded_length if include else msg.content_length
    if body_bytes:
        section["body"] = {"bytes": body_bytes}
    if include:
        section["body"]["content"] = _text(body)
