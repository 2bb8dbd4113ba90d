"""`output.elasticsearch.*`: Packetbeat's settings, defaults and presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.config.typed import opt, positive
from agent.outputs.connection import BackoffConfig, TlsClientConfig

DEFAULT_INDEX = "packetbeat-%{[agent.version]}"
PRESETS = ("balanced", "throughput", "scale", "latency", "custom")



def _compression(value: int) -> str | None:
    return None if 0 <= value <= 9 else "must be between 0 and 9"


def _preset(value: str) -> str | None:
    return None if value in PRESETS else f"must be one of {', '.join(PRESETS)}"


@dataclass(frozen=True)
class SslConfig(TlsClientConfig):
    key_passphrase: str = opt("")
    supported_protocols: tuple[str, ...] = opt(())
    cipher_suites: tuple[str, ...] = opt(())


@dataclass(frozen=True)
class ElasticsearchOutputConfig:
    hosts: tuple[str, ...] = opt(("localhost:9200",))
    protocol: str = opt("", check=lambda v: None if v in ("", "http", "https") else "must be http or https")
    path: str = opt("")
    headers: dict[str, Any] = opt({})
    username: str = opt("")
    password: str = opt("")
    api_key: str = opt("")
    ssl: SslConfig = field(default_factory=SslConfig)
    preset: str = opt("custom", check=_preset)
    bulk_max_size: int = opt(1600, check=positive)
    worker: int = opt(1, check=positive, aliases=("workers",))
    compression_level: int = opt(1, check=_compression)
    timeout: float = opt(90.0, kind="duration", check=lambda v: None if v > 0 else "must be greater than 0")
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    max_retries: int = opt(3, bounds=(-(2**31), 2**31 - 1))  # below 0: never drop
    index: str = opt("")
    pipeline: str = opt("")
    escape_html: bool = opt(False)
    allow_older_versions: bool = opt(True)
    loadbalance: bool = opt(True)

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "proxy_url": "HTTP proxies are not supported by pktbeat's Elasticsearch output",
        "proxy_disable": "HTTP proxies are not supported",
        "proxy_headers": "HTTP proxies are not supported",
        "kerberos": "Kerberos authentication is not supported",
        "parameters": "extra bulk URL parameters are not supported",
        "indices": "conditional indices are not supported; use the per-protocol index setting",
        "pipelines": "conditional pipelines are not supported; use output.elasticsearch.pipeline",
        "non_indexable_policy": "non-indexable events are dropped, counted and sampled in the log",
        "idle_connection_timeout": "connections are kept by the client's pool",
        "queue": "set the queue at the top level (queue.mem / queue.disk)",
    }

    def effective(self) -> tuple[int, int, int]:
        """(bulk_max_size, worker, compression_level) after the preset."""
        values = PRESET_OUTPUT.get(self.preset)
        if values is None:
            return self.bulk_max_size, self.worker, self.compression_level
        return values

    def resolved_index(self) -> str:
        return self.index or DEFAULT_INDEX

    def queue_preset(self) -> tuple[int, int, float] | None:
        """(queue.mem.events, flush.min_events, flush.timeout) the preset implies; None for `custom`."""
        return PRESET_QUEUE.get(self.preset)


# Packetbeat's presets: (bulk_max_size, worker, compression_level) and the queue they imply.
PRESET_OUTPUT: dict[str, tuple[int, int, int]] = {
    "balanced": (1600, 1, 1),
    "throughput": (1600, 4, 1),
    "scale": (1600, 1, 1),
    "latency": (50, 1, 1),
}
PRESET_QUEUE: dict[str, tuple[int, int, float]] = {  # (mem.events, flush.min_events, flush.timeout)
    "balanced": (3200, 1600, 10.0),
    "throughput": (12800, 1600, 5.0),
    "scale": (3200, 1600, 20.0),
    "latency": (4100, 2050, 1.0),
}
