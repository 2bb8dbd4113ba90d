"""Packetbeat's console output: one JSON event per line on stdout (or pretty-printed)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.outputs.file import METADATA
from agent.publisher.types import EncodedEvent, Outcome


@dataclass(frozen=True)
class ConsoleOutputConfig:
    pretty: bool = opt(False)
    codec: dict[str, Any] = opt({})
    bulk_max_size: int = opt(2048)

    @property
    def is_pretty(self) -> bool:
        json_codec = self.codec.get("json") if isinstance(self.codec, dict) else None
        return self.pretty or bool(isinstance(json_codec, dict) and json_codec.get("pretty"))


CONFIG_CLASS = ConsoleOutputConfig


class ConsoleOutput:
    name = "console"

    def __init__(self, config: ConsoleOutputConfig) -> None:
        self.pretty = config.is_pretty

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        out = sys.stdout.buffer
        for event in batch:
            line = b"{" + METADATA + event.data[1:]
            if self.pretty:
                line = json.dumps(json.loads(line), indent=2, ensure_ascii=False).encode()
            out.write(line + b"\n")
        out.flush()
        return [Outcome.ACKED] * len(batch)

    def close(self) -> None:
        sys.stdout.flush()


def create(config: ConsoleOutputConfig, context: Any = None) -> ConsoleOutput:
    return ConsoleOutput(config)
