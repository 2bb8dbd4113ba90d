"""Settings of a network output's connection, shared by the outputs that have them (Elasticsearch, Redis).

Packetbeat's outputs take the same `backoff.*` and the same core `ssl.*`
settings; each output's config class uses these, so they are checked alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt

VERIFICATION_MODES = ("full", "strict", "certificate", "none")


def _positive_duration(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _verification(value: str) -> str | None:
    return None if value in VERIFICATION_MODES else f"must be one of {', '.join(VERIFICATION_MODES)}"


@dataclass(frozen=True)
class BackoffConfig:
    """After a failure, wait `init`, doubling up to `max`, before trying a host again."""

    init: float = opt(1.0, kind="duration", check=_positive_duration)
    max: float = opt(60.0, kind="duration", check=_positive_duration)


@dataclass(frozen=True)
class TlsClientConfig:
    """The `ssl.*` settings every TLS output reads; an output that reads more extends it."""

    enabled: bool = opt(True)
    certificate_authorities: tuple[str, ...] = opt(())
    verification_mode: str = opt("full", check=_verification)
    certificate: str = opt("")
    key: str = opt("")
