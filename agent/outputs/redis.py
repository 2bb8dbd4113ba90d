"""Packetbeat's `output.redis`: events as JSON (with @metadata) pushed to a list or published on a channel.

A batch goes in one round trip: `RPUSH key e1 e2 ...` for `datatype: list`,
or a pipeline of `PUBLISH key e` for `datatype: channel`, grouped by key when
`key` is a format string (`%{[type]}`).  Hosts are tried in order (with
`loadbalance: true`, each batch starts at the next host); a host that fails
is skipped until its backoff (`backoff.init` doubling to `backoff.max`) has
passed.  A failure leaves every event of the batch to be retried by the
pipeline; Redis either stores a whole RPUSH or none of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agent import metrics
from agent.config.typed import opt
from agent.outputs.connection import BackoffConfig, TlsClientConfig
from agent.outputs.elasticsearch.fmtstr import FormatError, FormatString
from agent.outputs.file import METADATA
from agent.publisher.types import EncodedEvent, Outcome, OutputError

log = logging.getLogger("pktbeat.output.redis")

REDIS_COUNTERS = ("batches", "acked", "failed_batches", "connect_errors", "missing_key")


@dataclass(frozen=True)
class RedisOutputConfig:
    hosts: tuple[str, ...] = opt(("localhost:6379",))
    port: int = opt(6379, bounds=(1, 65535))
    key: str = opt("packetbeat")
    password: str = opt("")
    db: int = opt(0, check=lambda v: None if v >= 0 else "must be 0 or more")
    datatype: str = opt("list", check=lambda v: None if v in ("list", "channel") else "must be list or channel")
    timeout: float = opt(5.0, kind="duration", check=lambda v: None if v > 0 else "must be greater than 0")
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    max_retries: int = opt(3, bounds=(-(2**31), 2**31 - 1))
    bulk_max_size: int = opt(2048, check=lambda v: None if v > 0 else "must be greater than 0")
    worker: int = opt(1, aliases=("workers",))
    loadbalance: bool = opt(True)
    ssl: TlsClientConfig | None = opt(None)
    codec: dict[str, Any] = opt({})

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "keys": "conditional keys are not supported; use a format string in key",
        "proxy_url": "SOCKS5 proxies are not supported",
        "proxy_use_local_resolver": "SOCKS5 proxies are not supported",
        "index": "use key",
    }


CONFIG_CLASS = RedisOutputConfig


@dataclass
class _Host:
    name: str
    client: redis.Redis
    down_until: float = 0.0
    backoff: float = 0.0


def _parse_host(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("redis://") or text.startswith("rediss://"):
        text = text.split("://", 1)[1]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        return text.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise OutputError(f"output.redis.hosts: bad port in {text!r}") from None


class RedisOutput:
    name = "redis"

    def __init__(self, config: RedisOutputConfig) -> None:
        self.config = config
        self.batch_size = config.bulk_max_size
        self.backoff_init = config.backoff.init
        self.backoff_max = config.backoff.max
        try:
            self.key = FormatString(config.key)
        except FormatError as exc:
            raise OutputError(f"output.redis.key: {exc}") from None
        self.counters = metrics.register("output.redis", REDIS_COUNTERS)
        self.hosts: list[_Host] = []
        for text in config.hosts:
            host, port = _parse_host(str(text), config.port)
            self.hosts.append(_Host(f"{host}:{port}", redis.Redis(
                host=host, port=port, db=config.db, password=config.password or None,
                socket_timeout=config.timeout, socket_connect_timeout=config.timeout,
                retry=Retry(NoBackoff(), 0),  # the pipeline retries, with the configured backoff
                **_ssl_kwargs(config.ssl))))
        if not self.hosts:
            raise OutputError("output.redis.hosts: at least one host is needed")
        self._next = 0

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        self.counters["batches"] += 1
        groups: dict[str, list[bytes]] = {}
        outcomes = [Outcome.ACKED] * len(batch)
        for i, event in enumerate(batch):
            try:
                key = self.key.render(event.data)
            except ValueError:
                key = None
            if not key:
                self.counters["missing_key"] += 1
                log.warning("output.redis.key %r: a field is missing in the event; dropped", self.key.text)
                outcomes[i] = Outcome.DROPPED
                continue
            groups.setdefault(key, []).append(b"{" + METADATA + event.data[1:])
        if not groups:
            return outcomes
        now = time.monotonic()
        order = self.hosts[self._next:] + self.hosts[:self._next]
        if self.config.loadbalance:
            self._next = (self._next + 1) % len(self.hosts)
        candidates = [h for h in order if h.down_until <= now] or order[:1]
        for host in candidates:
            try:
                self._send(host.client, groups)
            except redis.RedisError as exc:
                self.counters["connect_errors"] += 1
                host.backoff = min(self.backoff_max, host.backoff * 2 if host.backoff else self.backoff_init)
                host.down_until = time.monotonic() + host.backoff
                log.warning("redis %s failed: %s", host.name, exc)
                continue
            host.backoff = 0.0
            host.down_until = 0.0
            self.counters["acked"] += sum(len(v) for v in groups.values())
            return outcomes
        self.counters["failed_batches"] += 1
        return [Outcome.RETRY if o is Outcome.ACKED else o for o in outcomes]

    def _send(self, client: redis.Redis, groups: dict[str, list[bytes]]) -> None:
        pipe = client.pipeline(transaction=False)
        for key, values in groups.items():
            if self.config.datatype == "list":
                pipe.rpush(key, *values)
            else:
                for value in values:
                    pipe.publish(key, value)
        pipe.execute()

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.client.close()
            except redis.RedisError:
                pass


def _ssl_kwargs(cfg: TlsClientConfig | None) -> dict[str, Any]:
    if cfg is None or not cfg.enabled:
        return {}
    kwargs: dict[str, Any] = {"ssl": True}
    if cfg.certificate_authorities:
        kwargs["ssl_ca_certs"] = cfg.certificate_authorities[0]
    if cfg.certificate:
        kwargs["ssl_certfile"] = cfg.certificate
        kwargs["ssl_keyfile"] = cfg.key
    if cfg.verification_mode == "none":
        kwargs["ssl_cert_reqs"] = "none"
        kwargs["ssl_check_hostname"] = False
    elif cfg.verification_mode == "certificate":
        kwargs["ssl_check_hostname"] = False
    return kwargs


def test_output(config: RedisOutputConfig, echo: Any) -> bool:
    """`pktbeat test output` for Redis: connect, authenticate, select the db, PING each host."""
    ok = True
    try:
        output = RedisOutput(config)
    except OutputError as exc:
        echo(f"redis: {exc}")
        return False
    try:
        for host in output.hosts:
            echo(f"redis: {host.name}...")
            try:
                host.client.ping()
                info = host.client.info("server")
                echo("  connection... OK")
                echo(f"  version: {info.get('redis_version', '?')}")
                echo(f"  db {config.db}, datatype {config.datatype}, key {config.key}... OK")
            except redis.AuthenticationError as exc:
                echo(f"  authentication... ERROR {exc}")
                ok = False
            except redis.RedisError as exc:
                echo(f"  connection... ERROR {exc}")
                ok = False
    finally:
        output.close()
    return ok


def create(config: RedisOutputConfig, agent_config: Any = None) -> RedisOutput:
    return RedisOutput(config)
