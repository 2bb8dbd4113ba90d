"""Building the official client from `output.elasticsearch.*`, and negotiating with the server's version.

The 9.x client sends `compatible-with=9` media types on every request; an
8.x server refuses those with `400 media_type_header_exception`.  pktbeat
asks `GET /` first with plain `application/json` (which every version
accepts), reads the server's major version, and then rewrites the client's
media types to what that server accepts:
  - server major >= client major: the client's own (`compatible-with=9`);
  - server major 8: `compatible-with=8`;
  - server major 7: plain `application/json` / `application/x-ndjson`.

Every response is read through BoundedNode: at most `max_response_bytes`
(decompressed), so a broken or hostile server cannot make the agent hold a
huge answer (reading a 52 MB bulk answer whole took the agent to ~1 GB).  The
last answer's status, media type and first bytes are kept per thread
(`last_response()`), so an answer that is not what Elasticsearch sends can be
described in the log.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import elasticsearch
from elastic_transport import Transport, Urllib3HttpNode

from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig
from agent.publisher.types import OutputError

log = logging.getLogger("pktbeat.output.elasticsearch")

CLIENT_MAJOR = int(elasticsearch.__versionstr__.split(".")[0])
_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+);\s*compatible-with=\d+")
DEFAULT_RESPONSE_LIMIT = 64 * 1024 * 1024
_READ_CHUNK = 256 * 1024
_PREVIEW = 200
_last = threading.local()


class ResponseTooLarge(Exception):
    """The server's answer was longer than this client reads."""


@dataclass(frozen=True)
class RawResponse:
    """What the server last answered on this thread (for error messages)."""

    status: int
    content_type: str
    length: int
    preview: bytes


def last_response() -> RawResponse | None:
    value: RawResponse | None = getattr(_last, "response", None)
    return value


def describe_body(raw: RawResponse | None) -> str:
    """A bulk answer that is not Elasticsearch's, in words: status, media type, length and its start."""
    if raw is None:
        return "no answer was recorded"
    if not raw.length:
        return f"{raw.status} with an empty body"
    text = raw.preview.decode("utf-8", "replace").replace("\n", " ").strip()
    more = "..." if raw.length > len(raw.preview) else ""
    return f"{raw.status} with a {raw.length}-byte {raw.content_type or 'untyped'} body: {text!r}{more}"


class _ReadResponse:
    """The parts of urllib3's response the node uses, with the body already read."""

    def __init__(self, status: int, headers: Any, data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class _BoundedPool:
    """Wraps the node's connection pool: reads each answer itself, up to `limit` bytes."""

    def __init__(self, pool: Any, limit: int) -> None:
        self._pool = pool
        self._limit = limit

    def urlopen(self, method: str, url: str, **kwargs: Any) -> _ReadResponse:
        kwargs["preload_content"] = False
        response = self._pool.urlopen(method, url, **kwargs)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.read(_READ_CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > self._limit:
                    _last.response = RawResponse(response.status, response.headers.get("content-type", ""), size,
                                                 b"".join(chunks)[:_PREVIEW])
                    response.close()  # the rest is never read: this connection cannot be reused
                    raise ResponseTooLarge(f"the server's answer is larger than {self._limit} bytes "
                                           f"(status {response.status}); not read further")
                chunks.append(chunk)
        finally:
            response.release_conn()
        data = b"".join(chunks)
        _last.response = RawResponse(response.status, response.headers.get("content-type", ""), len(data),
                                     data[:_PREVIEW])
        return _ReadResponse(response.status, response.headers, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def bounded_node_class(limit: int) -> type[Urllib3HttpNode]:
    class BoundedNode(Urllib3HttpNode):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.pool = _BoundedPool(self.pool, limit)  # type: ignore[assignment]

    return BoundedNode


class ServerUnavailable(OutputError):
    """The server answered, but is overloaded or not ready (429, 5xx): retry later."""


class CompatTransport(Transport):
    """A transport that rewrites the client's compatibility media types for the server it talks to."""

    compat_major: int | None = None  # None: leave the client's headers alone

    def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:
        major = self.compat_major
        headers = kwargs.get("headers")
        if major is not None and major != CLIENT_MAJOR and isinstance(headers, Mapping):
            rewritten = dict(headers)
            for name in list(rewritten):
                if name.lower() in ("accept", "content-type"):
                    rewritten[name] = _rewrite(str(rewritten[name]), major)
            kwargs["headers"] = rewritten
        return super().perform_request(method, target, **kwargs)


def _rewrite(value: str, major: int) -> str:
    if major >= 8:
        return _COMPAT.sub(lambda m: f"application/vnd.elasticsearch+{m.group(1)}; compatible-with={major}", value)
    return _COMPAT.sub(lambda m: f"application/{m.group(1)}", value)


def compat_for(server_major: int) -> int | None:
    """The compatible-with version to send to a server of `server_major` (None: the client's own)."""
    if server_major >= CLIENT_MAJOR:
        return None
    return server_major


@dataclass(frozen=True)
class ServerInfo:
    version: str
    major: int
    cluster_name: str
    build_flavor: str

    @property
    def serverless(self) -> bool:
        return self.build_flavor == "serverless"


def host_urls(config: ElasticsearchOutputConfig) -> list[str]:
    """Packetbeat's host forms: `host`, `host:port`, `scheme://host:port/path`; protocol/path fill the gaps."""
    urls = []
    for raw in config.hosts:
        text = str(raw).strip()
        if not text:
            raise OutputError("output.elasticsearch.hosts: empty host")
        has_scheme = "://" in text
        parts = urlsplit(text if has_scheme else f"{config.protocol or 'http'}://{text}")
        if parts.scheme not in ("http", "https"):
            raise OutputError(f"output.elasticsearch.hosts: {text!r}: the scheme must be http or https")
        if not parts.hostname:
            raise OutputError(f"output.elasticsearch.hosts: {text!r}: no host name")
        try:
            port = parts.port or 9200
        except ValueError:
            raise OutputError(f"output.elasticsearch.hosts: {text!r}: bad port") from None
        path = parts.path if parts.path not in ("", "/") else config.path
        path = "/" + path.strip("/") if path and path.strip("/") else ""
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        urls.append(f"{parts.scheme}://{host}:{port}{path}")
    if not urls:
        raise OutputError("output.elasticsearch.hosts: at least one host is needed")
    return urls


def ssl_context(config: ElasticsearchOutputConfig) -> ssl.SSLContext | None:
    cfg = config.ssl
    if not cfg.enabled:
        return None
    ctx = ssl.create_default_context()
    try:
        for ca in cfg.certificate_authorities:
            if ca.lstrip().startswith("-----BEGIN"):
                ctx.load_verify_locations(cadata=ca)
            else:
                ctx.load_verify_locations(cafile=ca)
        if cfg.certificate or cfg.key:
            if not (cfg.certificate and cfg.key):
                raise OutputError("output.elasticsearch.ssl: certificate and key must be set together")
            ctx.load_cert_chain(cfg.certificate, cfg.key, password=cfg.key_passphrase or None)
    except (OSError, ssl.SSLError) as exc:
        raise OutputError(f"output.elasticsearch.ssl: {exc}") from None
    if cfg.verification_mode in ("certificate", "none"):
        ctx.check_hostname = False
    if cfg.verification_mode == "none":
        ctx.verify_mode = ssl.CERT_NONE
    versions = {"TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
                "TLSv1.3": ssl.TLSVersion.TLSv1_3}
    chosen = [versions[v] for v in cfg.supported_protocols if v in versions]
    if chosen:
        ctx.minimum_version = min(chosen)
        ctx.maximum_version = max(chosen)
    if cfg.cipher_suites:
        try:
            ctx.set_ciphers(":".join(cfg.cipher_suites))
        except ssl.SSLError as exc:
            raise OutputError(f"output.elasticsearch.ssl.cipher_suites: {exc}") from None
    return ctx


def auth_headers(config: ElasticsearchOutputConfig) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in config.headers.items()}
    if config.api_key:
        key = config.api_key
        token = base64.b64encode(key.encode()).decode() if ":" in key else key
        headers["Authorization"] = f"ApiKey {token}"
    elif config.username:
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def build_client(config: ElasticsearchOutputConfig, *, timeout: float | None = None, concurrency: int = 1,
                 max_response_bytes: int = DEFAULT_RESPONSE_LIMIT) -> elasticsearch.Elasticsearch:
    urls = host_urls(config)
    needs_tls = any(u.startswith("https://") for u in urls)
    kwargs: dict[str, Any] = {}
    if needs_tls:
        ctx = ssl_context(config)
        if ctx is not None:
            kwargs["ssl_context"] = ctx
            if config.ssl.verification_mode == "none":
                kwargs["verify_certs"] = False
                kwargs["ssl_show_warn"] = False
    _, _, compression = config.effective()
    return elasticsearch.Elasticsearch(
        urls,
        headers=auth_headers(config),
        request_timeout=timeout if timeout is not None else config.timeout,
        http_compress=compression > 0,
        transport_class=CompatTransport,
        node_class=bounded_node_class(max_response_bytes),
        # Each request tries every host once; the pipeline retries with backoff after that.
        max_retries=max(0, len(urls) - 1),
        retry_on_timeout=True,
        retry_on_status=(),
        connections_per_node=max(2, concurrency),
        dead_node_backoff_factor=1.0,
        max_dead_node_backoff=30.0,
        **kwargs,
    )


def discover(client: elasticsearch.Elasticsearch) -> ServerInfo:
    """`GET /` with plain JSON media types; raises the transport's errors (connection, TLS, HTTP)."""
    meta, body = client.transport.perform_request(
        "GET", "/", headers={"accept": "application/json", **_auth_only(client)})
    if meta.status == 401:
        raise OutputError("authentication failed (401): check username/password or api_key")
    if meta.status == 403:
        raise OutputError("forbidden (403): the user may not read the cluster info")
    if meta.status in (408, 429) or meta.status >= 500:
        raise ServerUnavailable(f"GET / answered {meta.status}: {_reason(body)}")
    if not 200 <= meta.status < 300:
        raise OutputError(f"GET / answered {meta.status}: {_reason(body)}")
    if meta.headers.get("x-elastic-product") != "Elasticsearch":
        raise OutputError("the server is not Elasticsearch (no X-Elastic-Product: Elasticsearch header)")
    version = body.get("version", {}) if isinstance(body, dict) else {}
    number = str(version.get("number", ""))
    try:
        major = int(number.split(".", maxsplit=1)[0])
    except ValueError:
        raise OutputError(f"the server reported an unreadable version {number!r}") from None
    return ServerInfo(number, major, str(body.get("cluster_name", "")), str(version.get("build_flavor", "")))


def negotiate(client: elasticsearch.Elasticsearch, info: ServerInfo) -> None:
    if info.major < 7:
        raise OutputError(f"Elasticsearch {info.version} is too old; pktbeat needs 7.17 or later")
    transport = client.transport
    assert isinstance(transport, CompatTransport)
    transport.compat_major = compat_for(info.major)


def _auth_only(client: elasticsearch.Elasticsearch) -> dict[str, str]:
    headers = getattr(client, "_headers", {}) or {}
    return {k: v for k, v in headers.items() if k.lower() not in ("accept", "content-type")}


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('type', '')}: {error.get('reason', '')}"
        if error:
            return str(error)
    return str(body)[:200]
