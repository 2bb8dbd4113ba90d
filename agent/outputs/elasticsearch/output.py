"""The Elasticsearch output: bulk `create` requests through the official client.

Per event the output answers the pipeline with an Outcome:
  - ACKED: stored (201), or already stored (409 on `create`: the same
    deterministic `_id` was written before; counted as a duplicate).
  - RETRY: 429, 5xx, a connection error, a timeout, or the whole request
    refused for a transient reason (401/403/408/429/5xx).  The pipeline
    resends with backoff.
  - DROPPED: refused for good (mapping errors and other 4xx items).  Counted,
    and a sample is logged at most once per `SAMPLE_INTERVAL`.

An outage (nothing in a request accepted) and per-item 429s (back-pressure)
are retried without limit: the queue and the spool exist for that.  An item
that the server keeps failing with a 5xx while it accepts its neighbours is a
poison event: from then on each of its 5xx counts, and after `max_retries`
retries it is dropped (max_retries < 0: never).

A request refused with 413 (larger than the server's http.max_content_length)
is split in halves down to single events; an event that is refused alone is
DROPPED, counted (`too_large`) and logged with its size and what is known of
the limit (ES answers 413 with an empty body: the largest request accepted so
far).  An answer that is not a bulk response (an empty or non-JSON 200 from a
proxy, an answer longer than RESPONSE_BYTES_PER_EVENT per event) is described
as the server sent it and retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import elasticsearch
import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import SerializationError, TransportError

from agent import metrics
from agent.outputs.elasticsearch import client as es_client
from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig
from agent.outputs.elasticsearch.fmtstr import FormatError, FormatString, compile_cached
from agent.publisher.types import EncodedEvent, Outcome, OutputError

log = logging.getLogger("pktbeat.output.elasticsearch")

OUTPUT_COUNTERS = ("batches", "requests", "acked", "duplicates", "retryable", "dropped", "connect_errors",
                   "request_errors", "too_many", "server_errors", "poison_dropped", "split_413", "too_large",
                   "bad_responses", "reconnects")
SAMPLE_INTERVAL = 10.0
MAX_CHUNK_BYTES = 50 * 1024 * 1024  # below http.max_content_length (100mb)
RESPONSE_BYTES_PER_EVENT = 4096  # a bulk answer is a few hundred bytes per item, errors included
MIN_RESPONSE_BYTES = 1024 * 1024
TOO_LARGE_LOG_LINES = 10  # per SAMPLE_INTERVAL: each such event is logged, up to this many
_RETRIABLE_REQUEST = frozenset({401, 403, 408, 429})
_TRACKED_LIMIT = 100_000


def _quiet_client_logs() -> None:
    """The client logs every request at INFO and every node failure with a traceback; this output
    reports failures itself, once per attempt, so its loggers only pass errors (unless set explicitly)."""
    for name in ("elastic_transport.transport", "elastic_transport.node_pool"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)


class ElasticsearchOutput:
    name = "elasticsearch"

    def __init__(self, config: ElasticsearchOutputConfig, *, index_prefix_check: bool = True) -> None:
        _quiet_client_logs()
        self.config = config
        self.bulk_max_size, workers, _ = config.effective()
        self.urls = es_client.host_urls(config)
        self.concurrency = max(1, workers * len(self.urls)) if config.loadbalance else max(1, workers)
        self.batch_size = self.bulk_max_size * self.concurrency
        self.backoff_init = config.backoff.init
        self.backoff_max = config.backoff.max
        try:
            self._default_index = FormatString(config.resolved_index())
            self._pipeline = FormatString(config.pipeline) if config.pipeline else None
        except FormatError as exc:
            raise OutputError(f"output.elasticsearch: {exc}") from None
        if self._pipeline is not None and self._pipeline.constant is None:
            raise OutputError("output.elasticsearch.pipeline: event fields in the pipeline name are not supported")
        self._formats = compile_cached()
        self.client = es_client.build_client(
            config, concurrency=self.concurrency,
            max_response_bytes=max(MIN_RESPONSE_BYTES, RESPONSE_BYTES_PER_EVENT * self.bulk_max_size))
        self.server: es_client.ServerInfo | None = None
        self.counters = metrics.register("output.elasticsearch", OUTPUT_COUNTERS)
        self._lock = threading.Lock()
        self._attempts: OrderedDict[str, int] = OrderedDict()  # poison-event retry counts, by event id
        self._last_sample = 0.0
        self._samples_skipped = 0
        self._largest_accepted = 0  # bytes of the largest bulk request the server took (a 413 comes bare)
        self._too_large_window = (0.0, 0)  # (start, lines logged in it)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pktbeat-es") \
            if self.concurrency > 1 else None

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> es_client.ServerInfo:
        """Discover the server's version and set the compatibility headers; raises on failure."""
        info = es_client.discover(self.client)
        es_client.negotiate(self.client, info)
        if self.server is None or self.server.version != info.version:
            log.info("connected to Elasticsearch %s (cluster %s); compatibility header: %s", info.version,
                     info.cluster_name, _compat_text(info.major))
        self.server = info
        return info

    def _ensure_connected(self) -> bool:
        if self.server is not None:
            return True
        try:
            self.connect()
        except (TransportError, OSError) as exc:
            self.counters["connect_errors"] += 1
            log.warning("Elasticsearch not reachable at %s: %s", ", ".join(self.urls), _short(exc))
            return False
        except es_client.ServerUnavailable as exc:
            self.counters["connect_errors"] += 1
            log.warning("Elasticsearch not ready at %s: %s", ", ".join(self.urls), exc)
            return False
        except OutputError as exc:
            self.counters["connect_errors"] += 1
            log.error("Elasticsearch refused the connection: %s", exc)
            return False
        return True

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        self.counters["batches"] += 1
        if not self._ensure_connected():
            return [Outcome.RETRY] * len(batch)
        chunks = [batch[i:i + self.bulk_max_size] for i in range(0, len(batch), self.bulk_max_size)]
        if self._pool is None or len(chunks) == 1:
            results = [self._publish_chunk(chunk) for chunk in chunks]
        else:
            results = list(self._pool.map(self._publish_chunk, chunks))
        outcomes = [o for part in results for o in part]
        if all(o is Outcome.RETRY for o in outcomes) and self.server is not None and self._lost_connection:
            self.server = None  # rediscover (the server may have been replaced or up/downgraded)
            self.counters["reconnects"] += 1
        return outcomes

    _lost_connection = False

    def _publish_chunk(self, chunk: list[EncodedEvent]) -> list[Outcome]:
        """One or more bulk requests for `chunk` (split so that none passes MAX_CHUNK_BYTES)."""
        lines = [line for event in chunk for line in (self._action(event), event.data)]
        outcomes: list[Outcome] = []
        start = size = 0
        for i, event in enumerate(chunk):
            item = len(lines[2 * i]) + len(event.data) + 2
            if i > start and size + item > MAX_CHUNK_BYTES:
                outcomes += self._bulk(chunk[start:i], lines[2 * start:2 * i], size)
                start = i
                size = 0
            size += item
        return outcomes + self._bulk(chunk[start:], lines[2 * start:], size)

    def _bulk(self, chunk: list[EncodedEvent], lines: list[bytes], size: int) -> list[Outcome]:
        self.counters["requests"] += 1
        self._lost_connection = False
        pipeline = self._pipeline.constant if self._pipeline else None
        try:
            response = self.client.bulk(operations=cast(Any, lines), pipeline=pipeline)
        except elasticsearch.ApiError as exc:
            return self._request_failure(chunk, exc.meta.status, exc.body, size)
        except SerializationError:
            return self._bad_response(chunk, "not JSON")
        except TransportConnectionError as exc:
            causes = (exc.__cause__, *exc.errors)
            too_large = next((e for e in causes if isinstance(e, es_client.ResponseTooLarge)), None)
            if too_large is not None:
                self.counters["bad_responses"] += 1
                log.warning("bulk request of %d event(s): %s (a bulk answer is about a few hundred bytes per "
                            "event); retrying with backoff", len(chunk), too_large)
                return [Outcome.RETRY] * len(chunk)
            self.counters["connect_errors"] += 1
            self._lost_connection = True
            log.warning("bulk request failed: %s", _short(exc))
            return [Outcome.RETRY] * len(chunk)
        except TransportError as exc:  # timeouts, TLS errors
            self.counters["request_errors"] += 1
            self._lost_connection = True
            log.warning("bulk request failed: %s", _short(exc))
            return [Outcome.RETRY] * len(chunk)
        body = response.body
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return self._bad_response(chunk, "not a bulk response")
        if len(items) != len(chunk):
            return self._bad_response(chunk, f"{len(items)} items for {len(chunk)} events")
        self._largest_accepted = max(self._largest_accepted, size)
        statuses: list[int] = []
        errors: list[Any] = []
        for item in items:
            result = next(iter(item.values()), None) if isinstance(item, dict) and item else None
            status = result.get("status") if isinstance(result, dict) else None
            statuses.append(status if isinstance(status, int) else 500)
            errors.append(result.get("error") if isinstance(result, dict) else f"malformed item {str(item)[:100]}")
        any_accepted = any(s < 300 or s == 409 for s in statuses)
        return [self._item_outcome(event, status, error, any_accepted)
                for event, status, error in zip(chunk, statuses, errors, strict=True)]

    def _bad_response(self, chunk: list[EncodedEvent], what: str) -> list[Outcome]:
        """An answer Elasticsearch would not send: say what the server sent, and retry."""
        self.counters["bad_responses"] += 1
        log.warning("bulk request of %d event(s): the server answered %s (%s); retrying with backoff", len(chunk),
                    es_client.describe_body(es_client.last_response()), what)
        return [Outcome.RETRY] * len(chunk)

    def _action(self, event: EncodedEvent) -> bytes:
        return orjson.dumps({"create": {"_index": self._index_for(event), "_id": event.event_id}})

    def _index_for(self, event: EncodedEvent) -> str:
        fmt = self._formats(event.index) if event.index else self._default_index
        try:
            name = fmt.render(event.data)
        except (ValueError, FormatError):
            name = None
        if not name:
            name = self._default_index.render(event.data) or "packetbeat"
        return name.lower()

    def _request_failure(self, chunk: list[EncodedEvent], status: int, body: Any, size: int) -> list[Outcome]:
        """The whole bulk request was refused."""
        text = _error_text(body.get("error", body) if isinstance(body, dict) else body) if body else "empty body"
        if status == 413:
            if len(chunk) > 1:
                self.counters["split_413"] += 1
                half = len(chunk) // 2
                log.warning("bulk request of %d events (%d bytes) too large (413); splitting", len(chunk), size)
                return self._publish_chunk(chunk[:half]) + self._publish_chunk(chunk[half:])
            self._too_large(chunk[0], size)
            return [Outcome.DROPPED]
        if status == 400 and "media_type_header_exception" in text:
            log.warning("the server refused the compatibility header (%s); rediscovering its version", text)
            self.server = None
            return [Outcome.RETRY] * len(chunk)
        if status in _RETRIABLE_REQUEST or status >= 500:
            self.counters["too_many" if status == 429 else "server_errors" if status >= 500 else "request_errors"] \
                += 1
            if status in (401, 403):
                log.error("bulk request refused (%d): %s; check the credentials and privileges", status, text)
            else:
                log.warning("bulk request answered %d (%s); retrying with backoff", status, text)
            return [Outcome.RETRY] * len(chunk)
        self.counters["dropped"] += len(chunk)
        self._sample(f"bulk request of {len(chunk)} events refused ({status}): {text}; dropped")
        return [Outcome.DROPPED] * len(chunk)

    def _item_outcome(self, event: EncodedEvent, status: int, error: Any, any_accepted: bool) -> Outcome:
        if status < 300:
            self.counters["acked"] += 1
            self._forget(event.event_id)
            return Outcome.ACKED
        if status == 409:
            self.counters["duplicates"] += 1
            self.counters["acked"] += 1
            self._forget(event.event_id)
            return Outcome.ACKED
        if status == 429 or status >= 500:
            self.counters["retryable"] += 1
            if status != 429 and self.config.max_retries >= 0 and (
                    any_accepted or event.event_id in self._attempts):
                attempts = self._remember(event.event_id)
                if attempts > self.config.max_retries:
                    self.counters["poison_dropped"] += 1
                    self._forget(event.event_id)
                    self._sample(f"event {event.event_id} refused {attempts} times ({status}: "
                                 f"{_error_text(error)}); dropped after output.elasticsearch.max_retries")
                    return Outcome.DROPPED
            return Outcome.RETRY
        self.counters["dropped"] += 1
        self._forget(event.event_id)
        self._sample(f"event {event.event_id} refused ({status}): {_error_text(error)}; dropped. "
                     f"Event: {event.data[:300].decode('utf-8', 'replace')}")
        return Outcome.DROPPED

    def _too_large(self, event: EncodedEvent, size: int) -> None:
        self.counters["too_large"] += 1
        self.counters["dropped"] += 1
        now = time.monotonic()
        with self._lock:
            start, logged = self._too_large_window
            if now - start >= SAMPLE_INTERVAL:
                start, logged = now, 0
            self._too_large_window = (start, logged + 1)
        if logged >= TOO_LARGE_LOG_LINES:
            return
        known = f"; the largest request it accepted was {self._largest_accepted} bytes" \
            if self._largest_accepted else ""
        log.error("event %s (%s) is too large for Elasticsearch: its bulk request of %d bytes was refused with 413 "
                  "even alone (over the server's http.max_content_length%s); dropped, %d so far%s", event.event_id,
                  event.type or "event", size, known, self.counters["too_large"],
                  "; more in the next 10s are only counted" if logged + 1 == TOO_LARGE_LOG_LINES else "")

    def _remember(self, event_id: str) -> int:
        with self._lock:
            count = self._attempts.pop(event_id, 0) + 1
            self._attempts[event_id] = count
            while len(self._attempts) > _TRACKED_LIMIT:
                self._attempts.popitem(last=False)
            return count

    def _forget(self, event_id: str) -> None:
        if self._attempts:
            with self._lock:
                self._attempts.pop(event_id, None)

    def _sample(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_sample < SAMPLE_INTERVAL:
                self._samples_skipped += 1
                return
            skipped, self._samples_skipped = self._samples_skipped, 0
            self._last_sample = now
        suffix = f" ({skipped} similar failure(s) not logged since the last sample)" if skipped else ""
        log.warning("%s%s", message, suffix)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.client.close()
        except Exception:  # closing never fails the shutdown
            pass


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', '')}: {error.get('reason', '')}"
        caused = error.get("caused_by")
        if isinstance(caused, dict):
            text += f" (caused by {caused.get('type', '')}: {caused.get('reason', '')})"
        return text
    return str(error)[:500]


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _compat_text(major: int) -> str:
    compat = es_client.compat_for(major)
    if compat is None:
        return f"compatible-with={es_client.CLIENT_MAJOR}"
    if compat >= 8:
        return f"compatible-with={compat}"
    return "plain application/json"


def create(config: ElasticsearchOutputConfig, agent_config: Any = None) -> ElasticsearchOutput:
    return ElasticsearchOutput(config)


__all__ = ["ElasticsearchOutput", "create", "elasticsearch"]
