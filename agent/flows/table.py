"""User-space flow table for file replay (placeholder until the flows work lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.capture.packet import Packet
from agent.config.model import FlowsConfig


class FlowTable:
    def __init__(self, config: FlowsConfig, publish: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self.publish = publish

    def packet(self, pkt: Packet) -> None:
        pass

    def tick(self, now_ns: int) -> None:
        pass

    def final(self, now_ns: int) -> None:
        pass
