"""An Elasticsearch stand-in: the REST semantics pktbeat relies on, plus fault injection.

It follows Elasticsearch's documented behaviour for the endpoints it serves:
  - `GET /` (and HEAD) with `X-Elastic-Product: Elasticsearch` on every
    response and the configured version (8.15.x or 9.x);
  - media types: `application/json`, `application/x-ndjson`, and the
    versioned `application/vnd.elasticsearch+json; compatible-with=N`, which
    a server of major M accepts only for N in {M, M-1}; anything else is
    `400 media_type_header_exception`, as ES answers a 9.x client from 8.x;
  - `_bulk` (NDJSON, optional gzip body) with per-item statuses and
    `errors: true`; data streams accept only `create`; `create` of an
    existing `_id` is `409 version_conflict_engine_exception`; documents are
    checked against the template's mappings (long/ip/boolean/date values,
    objects vs values, no writes into alias fields: 400
    `mapper_parsing_exception`);
  - `_index_template`, `_ilm/policy`, `_data_stream`, `_count`, `_search`
    (term, terms, match_all, exists, bool filter/must), `_refresh`;
  - `_security/_authenticate` and `_security/user/_has_privileges` when
    users are configured (basic or API key), 401 otherwise.

Fault injection (control API on a second port, JSON):
  - POST /faults {"phases": [{"kind": "refuse"|"429"|"503"|"slow"|"ok"|"garbage"|"garbage_json"|"empty"|"huge",
    "seconds": s, "delay": d, "size": bytes}]} runs the phases back to back from now ("refuse" closes the
    listening socket and resets open connections; "slow" delays every response).  The next four touch
    `_bulk` answers only, after the bulk was applied, as a broken proxy would: "garbage" answers 200 with
    an HTML page, "garbage_json" 200 with a body that is not JSON, "empty" 200 with no body, "huge" the
    real answer padded to `size` bytes;
  - POST /limits {"max_content_length": n}: a request whose (decompressed) body is longer gets
    `413 Request Entity Too Large` with an empty body, as Elasticsearch answers past its
    `http.max_content_length` (0: no limit);
  - POST /item_faults {"mapping_error_every": n, "item_429_every": n, "mapping_error_field": "type",
    "mapping_error_value": "dns"} per-item failures in otherwise successful bulks;
  - GET /stats, POST /reset.

Run: `python -m tests.es_standin --version 8.15.3 [--port P] [--control-port C] [--tls-cert F --tls-key K]
[--user name:password[:read_only]] [--api-key id:key]`; it prints `READY <port> <control port>`.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import ipaddress
import json
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_MEDIA = re.compile(r"^\s*(application|text)/(vnd\.elasticsearch\+)?([a-z-]+)\s*(?:;\s*(.*))?$", re.I)
_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")
_NUMERIC = frozenset({"long", "integer", "short", "byte", "unsigned_long"})


def es_error(kind: str, reason: str, status: int, **extra: Any) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class Store:
    """Indices, data streams, templates and policies, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indices: dict[str, dict[str, bytes]] = {}  # concrete index -> id -> source
        self.streams: dict[str, str] = {}  # data stream -> its backing index
        self.index_mappings: dict[str, dict[str, Any]] = {}  # concrete index -> flattened field -> type
        self.templates: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}

    def template_for(self, name: str) -> dict[str, Any] | None:
        best = None
        for tpl in self.templates.values():
            for pattern in tpl.get("index_patterns", []):
                matched = re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), name)
                if matched and (best is None or tpl.get("priority", 0) > best.get("priority", 0)):
                    best = tpl
        return best

    def resolve(self, target: str) -> list[str]:
        """Concrete indices behind a comma list of names, patterns or data streams."""
        out: list[str] = []
        for part in target.split(","):
            regex = re.compile(re.escape(part).replace(r"\*", ".*"))
            for stream, backing in self.streams.items():
                if regex.fullmatch(stream):
                    out.append(backing)
            for index in self.indices:
                if regex.fullmatch(index) and index not in out:
                    out.append(index)
        return out


def flatten_mapping(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out[path] = {"type": spec.get("type", "object")}
            out.update(flatten_mapping(spec["properties"], path + "."))
        else:
            out[path] = spec
    return out


_BROKEN_BULK = frozenset({"garbage", "garbage_json", "empty", "huge"})


class Faults:
    def __init__(self) -> None:
        self.phases: list[tuple[float, float, str, float, int]] = []  # (start, end, kind, delay, size)
        self.max_content_length = 0
        self.mapping_error_every = 0
        self.item_429_every = 0
        self.mapping_error_field = ""
        self.mapping_error_value: Any = None
        self.reject_field = ""  # documents whose field equals reject_value always fail with reject_status
        self.reject_value: Any = None
        self.reject_status = 503

    def current(self, now: float) -> tuple[str, float]:
        for start, end, kind, delay, _ in self.phases:
            if start <= now < end:
                return kind, delay
        return "ok", 0.0

    def size(self, now: float) -> int:
        for start, end, _, _, size in self.phases:
            if start <= now < end:
                return size
        return 0


class Standin:
    def __init__(self, version: str = "8.15.3", host: str = "127.0.0.1", port: int = 0, control_port: int = 0,
                 tls: tuple[str, str] | None = None, users: dict[str, tuple[str, bool]] | None = None,
                 api_keys: dict[str, str] | None = None) -> None:
        self.version = version
        self.major = int(version.split(".", 1)[0])
        self.host = host
        self.tls = tls
        self.users = users or {}
        self.api_keys = api_keys or {}
        self.store = Store()
        self.faults = Faults()
        self.stats: dict[str, int] = {}
        self.stats_lock = threading.Lock()
        self.cluster_uuid = uuid.uuid4().hex[:22]
        self._server: ThreadingHTTPServer | None = None
        self._server_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.port = port
        self._listen()
        self._control = ThreadingHTTPServer((host, control_port), _control_handler(self))
        self._control.daemon_threads = True
        self.control_port = self._control.server_address[1]
        threading.Thread(target=self._control.serve_forever, daemon=True).start()
        threading.Thread(target=self._phase_loop, daemon=True).start()

    # -- listening socket (closed to refuse connections) -------------------------------------

    def _listen(self) -> None:
        with self._server_lock:
            if self._server is not None:
                return
            server = ThreadingHTTPServer((self.host, self.port), _handler(self), bind_and_activate=False)
            server.allow_reuse_address = True
            server.daemon_threads = True
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.server_bind()
            server.server_activate()
            if self.tls is not None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*self.tls)
                server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self.port = server.server_address[1]
            self._server = server
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _refuse(self) -> None:
        with self._server_lock:
            server, self._server = self._server, None
            conns = list(self._connections)
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in conns:  # an outage also breaks established connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _phase_loop(self) -> None:
        while True:
            kind, _ = self.faults.current(time.monotonic())
            if kind == "refuse":
                self._refuse()
            else:
                self._listen()
            time.sleep(0.05)

    def count(self, name: str, amount: int = 1) -> None:
        with self.stats_lock:
            self.stats[name] = self.stats.get(name, 0) + amount

    # -- request handling -----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        """(status, JSON body (or raw bytes, or None), response content type)."""
        kind, delay = self.faults.current(time.monotonic())
        if delay:
            time.sleep(delay)
        media = self._check_media(headers, bool(body))
        if isinstance(media, tuple):
            return media
        accept_type = media
        if kind == "429":
            self.count("status_429")
            return 429, es_error("es_rejected_execution_exception",
                                 "rejected execution of coordinating operation [shard_detail=standin]", 429), \
                accept_type
        if kind == "503":
            self.count("status_503")
            return 503, es_error("cluster_block_exception",
                                 "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];", 503), \
                accept_type
        auth = self._authenticate(headers)
        if isinstance(auth, _Refusal):
            return auth.status, auth.body, auth.content_type
        user, read_only = auth
        parts = urlsplit(target)
        path = unquote(parts.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            status, payload = self._route(method, path, params, body, user, read_only)
        except _BadRequest as exc:
            status, payload = 400, es_error(exc.kind, exc.reason, 400)
        if kind in _BROKEN_BULK and path.rstrip("/").endswith("/_bulk") and status == 200:
            return self._broken(kind, payload, accept_type)
        return status, payload, accept_type

    def _broken(self, kind: str, payload: Any, accept_type: str) -> tuple[int, Any, str]:
        """A bulk answer mangled as a broken proxy would (the bulk itself was applied)."""
        self.count(f"broken_{kind}")
        if kind == "garbage":
            return 200, b"<html><body><h1>502 Bad Gateway</h1>upstream sent garbage</body></html>", "text/html"
        if kind == "garbage_json":
            return 200, b'{"took": 3, "errors": false, "items": [{"create": {"status": 2', accept_type
        if kind == "empty":
            return 200, b"", accept_type
        data = json.dumps(payload).encode()
        entry = b'{"create":{"status":201}},'  # many small objects: what costs a parser most
        count = max(0, self.faults.size(time.monotonic()) - len(data)) // len(entry)
        return 200, data[:-1] + b',"padding":[' + entry * count + b'{}]}', accept_type

    def _check_media(self, headers: dict[str, str], has_body: bool) -> str | tuple[int, Any, str]:
        failed: list[str] = []
        versions: dict[str, int] = {}
        reason = ""
        for name in ("Accept", "Content-Type"):
            value = headers.get(name.lower())
            if not value or value.strip() == "*/*":
                continue
            for part in value.split(","):
                match = _MEDIA.match(part)
                if not match:
                    continue
                compat = _COMPAT.search(match.group(4) or "")
                if compat:
                    wanted = int(compat.group(1))
                    versions[name] = wanted
                    if wanted not in (self.major, self.major - 1):
                        failed.append(name)
                        reason = (f"{name} version must be either version {self.major} or {self.major - 1}, "
                                  f"but found {wanted}. {name}={value}")
                elif match.group(2):
                    failed.append(name)
                    reason = f"Invalid media-type value on header {name}: {value}"
        if not failed and len(versions) == 2 and has_body and len(set(versions.values())) > 1:
            failed = ["Accept", "Content-Type"]
            reason = "Content-Type and Accept version requests have to match."
        if failed:
            self.count("media_type_refused")
            body = es_error("media_type_header_exception",
                            f"Invalid media-type value on headers [{', '.join(sorted(set(failed)))}]", 400)
            body["error"]["caused_by"] = {"type": "status_exception", "reason": reason}
            return 400, body, "application/json"
        if "Accept" in versions:
            return f"application/vnd.elasticsearch+json;compatible-with={versions['Accept']}"
        return "application/json"

    def _authenticate(self, headers: dict[str, str]) -> tuple[str, bool] | _Refusal:
        if not self.users and not self.api_keys:
            return "", False
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        try:
            decoded = base64.b64decode(token).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        name, _, secret = decoded.partition(":")
        if scheme == "Basic" and name in self.users and self.users[name][0] == secret:
            return name, self.users[name][1]
        if scheme == "ApiKey" and self.api_keys.get(name) == secret:
            return f"apikey-{name}", False
        self.count("status_401")
        body = es_error("security_exception", "unable to authenticate user [" + name + "] for REST request [/]", 401,
                        header={"WWW-Authenticate": 'Basic realm="security" charset="UTF-8"'})
        return _Refusal(401, body, "application/json")

    def _route(self, method: str, path: str, params: dict[str, str], body: bytes, user: str,
               read_only: bool) -> tuple[int, Any]:
        segs = [s for s in path.split("/") if s]
        if not segs:
            if method in ("GET", "HEAD"):
                return 200, self._info()
            raise _BadRequest("illegal_argument_exception", f"unsupported method {method} on /")
        if segs[-1] == "_bulk" and method in ("POST", "PUT"):
            default_index = segs[0] if len(segs) == 2 else None
            return self._bulk(body, default_index, params, read_only)
        if segs[0] == "_index_template" and len(segs) == 2:
            return self._index_template(method, segs[1], body)
        if segs[:2] == ["_ilm", "policy"] and len(segs) == 3:
            return self._policy(method, segs[2], body)
        if segs[0] == "_data_stream" and len(segs) == 2:
            return self._data_stream(method, segs[1])
        if segs[0] == "_security":
            return self._security(segs, body, user, read_only)
        if segs[-1] in ("_count", "_search"):
            target = segs[0] if len(segs) == 2 else "*"
            query = json.loads(body) if body else {}
            return self._search(target, query, params, count_only=segs[-1] == "_count")
        if segs[-1] == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        return 404, es_error("index_not_found_exception", f"no such index [{segs[0]}]", 404)

    def _info(self) -> dict[str, Any]:
        return {
            "name": "standin-node", "cluster_name": "pktbeat-standin", "cluster_uuid": self.cluster_uuid,
            "version": {
                "number": self.version, "build_flavor": "default", "build_type": "tar",
                "build_hash": "0" * 40, "build_date": "2024-08-05T10:05:34.233336849Z", "build_snapshot": False,
                "lucene_version": "9.11.1" if self.major == 8 else "10.1.0",
                "minimum_wire_compatibility_version": f"{self.major - 1}.17.0",
                "minimum_index_compatibility_version": f"{self.major - 1}.0.0",
            },
            "tagline": "You Know, for Search",
        }

    # -- _bulk --------------------------------------------------------------------------------------

    def _bulk(self, body: bytes, default_index: str | None, params: dict[str, str],
              read_only: bool) -> tuple[int, Any]:
        started = time.monotonic()
        lines = body.split(b"\n")
        items: list[dict[str, Any]] = []
        i = 0
        seq = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if not line:
                continue
            try:
                action = json.loads(line)
                (op, meta), = action.items()
            except (ValueError, AttributeError):
                raise _BadRequest("illegal_argument_exception", "Malformed action/metadata line") from None
            source = None
            if op in ("create", "index", "update"):
                if i >= len(lines):
                    raise _BadRequest("illegal_argument_exception", "The bulk request must be terminated by a newline")
                source = lines[i]
                i += 1
            elif op != "delete":
                raise _BadRequest("illegal_argument_exception", f"Malformed action/metadata line, unknown op [{op}]")
            seq += 1
            items.append({op: self._bulk_item(op, meta, source, default_index, read_only, seq)})
        self.count("bulk_requests")
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return 200, {"errors": errors, "took": int((time.monotonic() - started) * 1000), "items": items}

    def _bulk_item(self, op: str, meta: dict[str, Any], source: bytes | None, default_index: str | None,
                   read_only: bool, seq: int) -> dict[str, Any]:
        name = meta.get("_index") or default_index
        doc_id = meta.get("_id") or uuid.uuid4().hex[:20]
        result: dict[str, Any] = {"_index": name, "_id": doc_id}
        if not name:
            return {**result, "status": 400, "error": {"type": "action_request_validation_exception",
                                                       "reason": "Validation Failed: 1: index is missing;"}}
        if read_only:
            self.count("item_403")
            return {**result, "status": 403, "error": {
                "type": "security_exception",
                "reason": f"action [indices:data/write/bulk[s]] is unauthorized for user on indices [{name}]"}}
        faults = self.faults
        self.count("items")
        try:
            doc = json.loads(source) if source is not None else None
        except ValueError:
            return {**result, "status": 400, "error": {"type": "document_parsing_exception",
                                                       "reason": "failed to parse"}}
        if faults.reject_field and isinstance(doc, dict) and doc.get(faults.reject_field) == faults.reject_value:
            self.count(f"item_{faults.reject_status}")
            kind = "es_rejected_execution_exception" if faults.reject_status == 429 else "unavailable_shards_exception"
            return {**result, "status": faults.reject_status, "error": {"type": kind, "reason": "injected"}}
        if faults.item_429_every and seq % faults.item_429_every == 0:
            self.count("item_429")
            return {**result, "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution of primary operation"}}
        if (faults.mapping_error_every and seq % faults.mapping_error_every == 0) or (
                faults.mapping_error_field and isinstance(doc, dict)
                and doc.get(faults.mapping_error_field) == faults.mapping_error_value):
            self.count("item_mapping_error")
            return {**result, "status": 400, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:42] failed to parse field [injected] of type [long] in document with id "
                          f"'{doc_id}'. Preview of field's value: 'x'",
                "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"x\""}}}
        with self.store.lock:
            concrete, problem = self._target(name, op)
            if problem is not None:
                self.count("item_400")
                return {**result, "status": 400, "error": problem}
            result["_index"] = concrete
            docs = self.store.indices[concrete]
            if op == "delete":
                existed = docs.pop(doc_id, None) is not None
                return {**result, "result": "deleted" if existed else "not_found", "status": 200 if existed else 404}
            if isinstance(doc, dict):
                problem = self._check_doc(concrete, doc, doc_id)
                if problem is not None:
                    self.count("item_400")
                    return {**result, "status": 400, "error": problem}
            if op == "create" and doc_id in docs:
                self.count("item_409")
                return {**result, "status": 409, "error": {
                    "type": "version_conflict_engine_exception",
                    "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])",
                    "index_uuid": "standin", "shard": "0", "index": concrete}}
            created = doc_id not in docs
            docs[doc_id] = bytes(source or b"")
        self.count("item_201" if created else "item_200")
        return {**result, "_version": 1, "result": "created" if created else "updated",
                "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": seq, "_primary_term": 1,
                "status": 201 if created else 200}

    def _target(self, name: str, op: str) -> tuple[str, dict[str, Any] | None]:
        """The concrete index for a write to `name` (creating it as ES would), or an error."""
        store = self.store
        if name in store.streams:
            if op not in ("create", "delete"):
                return "", {"type": "illegal_argument_exception",
                            "reason": "only write ops with an op_type of create are allowed in data streams"}
            return store.streams[name], None
        if name in store.indices:
            return name, None
        if name != name.lower() or name.startswith(("_", "-", "+")):
            return "", {"type": "invalid_index_name_exception",
                        "reason": f"Invalid index name [{name}], must be lowercase"}
        template = store.template_for(name)
        if template is not None and "data_stream" in template:
            if op != "create":
                return "", {"type": "illegal_argument_exception",
                            "reason": "only write ops with an op_type of create are allowed in data streams"}
            backing = self._create_stream(name, template)
            return backing, None
        store.indices[name] = {}
        store.index_mappings[name] = self._mapping_of(template)
        return name, None

    def _create_stream(self, name: str, template: dict[str, Any]) -> str:
        backing = f".ds-{name}-{datetime.now(UTC):%Y.%m.%d}-000001"
        self.store.streams[name] = backing
        self.store.indices[backing] = {}
        self.store.index_mappings[backing] = self._mapping_of(template)
        return backing

    @staticmethod
    def _mapping_of(template: dict[str, Any] | None) -> dict[str, Any]:
        if template is None:
            return {}
        props = template.get("template", {}).get("mappings", {}).get("properties", {})
        return flatten_mapping(props)

    def _check_doc(self, index: str, doc: dict[str, Any], doc_id: str) -> dict[str, Any] | None:
        mapping = self.store.index_mappings.get(index) or {}
        if not mapping:
            return None
        return _check_value(mapping, doc, "", doc_id)

    # -- templates, policies, data streams -------------------------------------------------------

    def _index_template(self, method: str, name: str, body: bytes) -> tuple[int, Any]:
        store = self.store
        with store.lock:
            if method in ("PUT", "POST"):
                tpl = json.loads(body)
                if not isinstance(tpl.get("index_patterns"), list) or not tpl["index_patterns"]:
                    raise _BadRequest("action_request_validation_exception",
                                      "Validation Failed: 1: index patterns are missing;")
                store.templates[name] = tpl
                self.count("templates_put")
                return 200, {"acknowledged": True}
            if name not in store.templates:
                return 404, es_error("resource_not_found_exception", f"index template matching [{name}] not found",
                                     404)
            if method == "DELETE":
                del store.templates[name]
                return 200, {"acknowledged": True}
            return 200, {"index_templates": [{"name": name, "index_template": store.templates[name]}]}

    def _policy(self, method: str, name: str, body: bytes) -> tuple[int, Any]:
        store = self.store
        with store.lock:
            if method == "PUT":
                policy = json.loads(body).get("policy")
                if not isinstance(policy, dict):
                    raise _BadRequest("x_content_parse_exception", "[put_lifecycle_request] policy is missing")
                store.policies[name] = policy
                return 200, {"acknowledged": True}
            if name not in store.policies:
                return 404, es_error("resource_not_found_exception", f"Lifecycle policy not found: {name}", 404)
            if method == "DELETE":
                del store.policies[name]
                return 200, {"acknowledged": True}
            return 200, {name: {"version": 1, "modified_date": "2024-01-01T00:00:00.000Z",
                                "policy": store.policies[name]}}

    def _data_stream(self, method: str, name: str) -> tuple[int, Any]:
        store = self.store
        with store.lock:
            if method == "PUT":
                if name in store.streams:
                    return 400, es_error("resource_already_exists_exception",
                                         f"data_stream [{name}] already exists", 400)
                template = store.template_for(name)
                if template is None or "data_stream" not in template:
                    return 400, es_error("illegal_argument_exception",
                                         f"no matching index template found for data stream [{name}]", 400)
                self._create_stream(name, template)
                return 200, {"acknowledged": True}
            names = [s for s in store.streams if re.fullmatch(re.escape(name).replace(r"\*", ".*"), s)]
            if not names:
                return 404, es_error("resource_not_found_exception", f"data_stream matching [{name}] not found", 404)
            if method == "DELETE":
                for stream in names:
                    backing = store.streams.pop(stream)
                    store.indices.pop(backing, None)
                    store.index_mappings.pop(backing, None)
                return 200, {"acknowledged": True}
            streams = []
            for stream in names:
                template = store.template_for(stream) or {}
                template_name = next((n for n, t in store.templates.items() if t is template), "")
                lifecycle = template.get("template", {}).get("settings", {}).get("index", {}).get("lifecycle", {})
                streams.append({"name": stream, "timestamp_field": {"name": "@timestamp"},
                                "indices": [{"index_name": store.streams[stream]}], "generation": 1,
                                "status": "GREEN", "template": template_name,
                                "ilm_policy": lifecycle.get("name")})
            return 200, {"data_streams": streams}

    # -- security ------------------------------------------------------------------------------------

    def _security(self, segs: list[str], body: bytes, user: str, read_only: bool) -> tuple[int, Any]:
        if not self.users and not self.api_keys:
            return 500, es_error("security_exception",
                                 "Security must be explicitly enabled when using a [basic] license. "
                                 "Enable security by setting [xpack.security.enabled] to [true] in the "
                                 "elasticsearch.yml file and restart the node.", 500)
        if segs[1:] == ["_authenticate"]:
            kind = "api_key" if user.startswith("apikey-") else "realm"
            return 200, {"username": user, "roles": ["writer"], "enabled": True, "authentication_type": kind}
        if segs[1:] == ["user", "_has_privileges"]:
            request = json.loads(body) if body else {}
            index: dict[str, dict[str, bool]] = {}
            for entry in request.get("index", []):
                for name in entry.get("names", []):
                    index[name] = {p: not read_only or p in ("read", "view_index_metadata")
                                   for p in entry.get("privileges", [])}
            allowed = all(all(v.values()) for v in index.values())
            return 200, {"username": user, "has_all_requested": allowed, "cluster": {}, "index": index,
                         "application": {}}
        return 404, es_error("resource_not_found_exception", "unknown security endpoint", 404)

    # -- search ------------------------------------------------------------------------------------------

    def _search(self, target: str, request: dict[str, Any], params: dict[str, str],
                count_only: bool) -> tuple[int, Any]:
        query = request.get("query", {"match_all": {}})
        with self.store.lock:
            indices = self.store.resolve(target)
            if not indices and "*" not in target:
                return 404, es_error("index_not_found_exception", f"no such index [{target}]", 404,
                                     **{"resource.type": "index_or_alias", "resource.id": target})
            snapshot = [(index, list(self.store.indices[index].items())) for index in indices]
        if query == {"match_all": {}} and count_only:
            total = sum(len(docs) for _, docs in snapshot)
            return 200, {"count": total, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        hits = []
        for index, docs in snapshot:
            for doc_id, raw in docs:
                doc = json.loads(raw)
                if _matches(query, doc):
                    hits.append((index, doc_id, doc))
        if count_only:
            return 200, {"count": len(hits), "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        size = int(request.get("size", params.get("size", 10)))
        start = int(request.get("from", params.get("from", 0)))
        page = hits[start:start + size]
        return 200, {"took": 1, "timed_out": False,
                     "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0,
                              "hits": [{"_index": i, "_id": d, "_score": 1.0, "_source": s} for i, d, s in page]}}


@dataclass(frozen=True)
class _Refusal:
    status: int
    body: Any
    content_type: str


class _BadRequest(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# -- mapping checks (what ES refuses at index time) ------------------------------------------------------

def _check_value(mapping: dict[str, Any], doc: dict[str, Any], prefix: str, doc_id: str) -> dict[str, Any] | None:
    for key, value in doc.items():
        path = f"{prefix}{key}"
        spec = mapping.get(path)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, dict):
                if spec is not None and spec.get("type") not in ("object", "nested", "flattened"):
                    return _parse_error(path, spec.get("type", "object"), doc_id, item, "")
                if spec is not None and spec.get("type") == "flattened":
                    continue
                problem = _check_value(mapping, item, path + ".", doc_id)
                if problem is not None:
                    return problem
                continue
            if spec is None:
                continue
            kind = spec.get("type", "object")
            if kind == "alias":
                return {"type": "document_parsing_exception",
                        "reason": f"[1:1] Cannot write to a field alias [{path}]."}
            if kind in ("object", "nested"):
                return {"type": "document_parsing_exception",
                        "reason": f"[1:1] object mapping for [{path}] tried to parse field [{key}] as object, "
                                  f"but found a concrete value"}
            if not _fits(kind, item):
                return _parse_error(path, kind, doc_id, item, "")
    return None


def _parse_error(path: str, kind: str, doc_id: str, value: Any, extra: str) -> dict[str, Any]:
    preview = json.dumps(value)[:40]
    return {"type": "document_parsing_exception",
            "reason": f"[1:1] failed to parse field [{path}] of type [{kind}] in document with id '{doc_id}'. "
                      f"Preview of field's value: '{preview}'" + extra,
            "caused_by": {"type": "illegal_argument_exception", "reason": f"cannot parse {preview} as {kind}"}}


def _fits(kind: str, value: Any) -> bool:
    if kind in _NUMERIC:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value.is_integer()
        if isinstance(value, str):
            try:
                float(value)
                return True
            except ValueError:
                return False
        return False
    if kind in ("float", "double", "half_float", "scaled_float"):
        try:
            float(value)
            return not isinstance(value, bool)
        except (TypeError, ValueError):
            return False
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false", "")
    if kind == "ip":
        try:
            ipaddress.ip_address(str(value).split("%", 1)[0])
            return True
        except ValueError:
            return False
    if kind == "date":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
                return True
            except ValueError:
                return False
        return False
    return True


# -- queries -------------------------------------------------------------------------------------------------

def _values(doc: Any, path: str) -> list[Any]:
    if isinstance(doc, dict) and path in doc:
        found = doc[path]
        return found if isinstance(found, list) else [found]
    head, _, rest = path.partition(".")
    if isinstance(doc, list):
        return [v for item in doc for v in _values(item, path)]
    if not isinstance(doc, dict) or head not in doc:
        return []
    if not rest:
        found = doc[head]
        return found if isinstance(found, list) else [found]
    return _values(doc[head], rest)


def _matches(query: dict[str, Any], doc: dict[str, Any]) -> bool:
    (kind, spec), = query.items()
    if kind == "match_all":
        return True
    if kind == "term":
        (field, wanted), = spec.items()
        if isinstance(wanted, dict):
            wanted = wanted.get("value")
        return any(_equal(v, wanted) for v in _values(doc, field))
    if kind == "terms":
        (field, options), = ((k, v) for k, v in spec.items() if k != "boost")
        return any(_equal(v, w) for v in _values(doc, field) for w in options)
    if kind == "exists":
        return bool(_values(doc, spec["field"]))
    if kind == "bool":
        for clause in ("must", "filter"):
            parts = spec.get(clause, [])
            for part in parts if isinstance(parts, list) else [parts]:
                if not _matches(part, doc):
                    return False
        not_parts = spec.get("must_not", [])
        return all(not _matches(part, doc) for part in (not_parts if isinstance(not_parts, list) else [not_parts]))
    raise _BadRequest("parsing_exception", f"unknown query [{kind}]")


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return str(value).lower() == str(wanted).lower()
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float, str)):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return value == wanted


# -- HTTP plumbing ------------------------------------------------------------------------------------------

def _handler(standin: Standin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "standin"

        def setup(self) -> None:
            conn = self.request
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn.do_handshake()
                except (ssl.SSLError, OSError):
                    standin.count("tls_handshake_failed")
                    raise
            standin._connections.add(conn)
            super().setup()

        def finish(self) -> None:
            standin._connections.discard(self.request)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding", "").lower() == "gzip" and body:
                body = gzip.decompress(body)
                standin.count("gzip_requests")
            if standin.faults.current(time.monotonic())[0] == "refuse":
                standin.count("reset_in_outage")  # the listener is closing: this connection dies too
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            standin.count("requests")
            limit = standin.faults.max_content_length
            if limit and len(body) > limit:
                standin.count("status_413")
                status, payload, ctype = 413, b"", "text/plain"
            else:
                status, payload, ctype = standin.handle(self.command, self.path, headers, body)
            data = payload if isinstance(payload, bytes) else b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", ctype)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"')
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _safe(self) -> None:
            try:
                self._serve()
            except (ConnectionError, ssl.SSLError, OSError):
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _safe

    return Handler


def _control_handler(standin: Standin) -> type[BaseHTTPRequestHandler]:
    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/stats":
                with standin.stats_lock:
                    stats = dict(standin.stats)
                with standin.store.lock:
                    stats["documents"] = sum(len(d) for d in standin.store.indices.values())
                kind, _ = standin.faults.current(time.monotonic())
                stats["phase"] = kind  # type: ignore[assignment]
                self._reply(stats)
            else:
                self._reply({"port": standin.port, "version": standin.version})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            faults = standin.faults
            if self.path == "/faults":
                now = time.monotonic()
                phases = []
                for phase in request.get("phases", []):
                    seconds = float(phase.get("seconds", 0))
                    phases.append((now, now + seconds, str(phase.get("kind", "ok")), float(phase.get("delay", 0)),
                                   int(phase.get("size", 0))))
                    now += seconds
                faults.phases = phases
            elif self.path == "/limits":
                faults.max_content_length = int(request.get("max_content_length", 0))
            elif self.path == "/item_faults":
                faults.mapping_error_every = int(request.get("mapping_error_every", 0))
                faults.item_429_every = int(request.get("item_429_every", 0))
                faults.mapping_error_field = str(request.get("mapping_error_field", ""))
                faults.mapping_error_value = request.get("mapping_error_value")
                faults.reject_field = str(request.get("reject_field", ""))
                faults.reject_value = request.get("reject_value")
                faults.reject_status = int(request.get("reject_status", 503))
            elif self.path == "/reset":
                standin.faults = Faults()
                standin.store = Store()
                with standin.stats_lock:
                    standin.stats.clear()
            self._reply({"acknowledged": True})

    return Control


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Elasticsearch stand-in for pktbeat's tests")
    parser.add_argument("--version", default="8.15.3")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--user", action="append", default=[], help="name:password[:read_only]")
    parser.add_argument("--api-key", action="append", default=[], help="id:key")
    args = parser.parse_args(argv)
    users = {}
    for spec in args.user:
        name, password, *rest = spec.split(":")
        users[name] = (password, bool(rest and rest[0] == "read_only"))
    api_keys = dict(spec.split(":", 1) for spec in args.api_key)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    standin = Standin(args.version, args.host, args.port, args.control_port, tls, users, api_keys)
    print(f"READY {standin.port} {standin.control_port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
