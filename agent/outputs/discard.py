"""Packetbeat's discard output: acknowledges and forgets (for benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.publisher.types import EncodedEvent, Outcome


@dataclass(frozen=True)
class DiscardOutputConfig:
    pass


CONFIG_CLASS = DiscardOutputConfig


class DiscardOutput:
    name = "discard"

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        return [Outcome.ACKED] * len(batch)

    def close(self) -> None:
        pass


def create(config: DiscardOutputConfig, context: Any = None) -> DiscardOutput:
    return DiscardOutput()
