"""Flows for file replay: the user-space flow source plus the reporter, behind one small facade.

Two timing modes:

- `follow_clock=False` (the default; for `-t`): the flow timer never fires
  during the input, and every flow is reported once, final, at the end (or
  when the bounded table evicts it).  This is what Packetbeat does with
  `-t`: its flow timer runs on the wall clock, first fires on the next 10 s
  boundary after start, and a top-speed replay is normally over before
  that.  Packetbeat's own flow tests depend on it (flowhash_icmp6.pcap has
  5-15 s gaps between packets of one flow with `timeout: 2s`, and expects 10
  flows whose community ids come from their last packets).  Unlike
  Packetbeat's, the result does not depend on how fast the machine is.
- `follow_clock=True`: `period`, `timeout` and delta reports follow the
  clock given to `tick()`: the wall clock for a paced replay, or the packet
  clock when a user wants a capture's flows as a live agent would have
  reported them, deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.capture.packet import Packet
from agent.config.model import FlowsConfig
from agent.flows.reporter import FlowReporter
from agent.flows.usertable import UserFlowSource


class FlowTable:
    def __init__(self, config: FlowsConfig, publish: Callable[[dict[str, Any]], None], *,
                 timestamp_digits: int = 3, follow_clock: bool = False) -> None:
        self.config = config
        self.follow_clock = follow_clock
        self.source = UserFlowSource(config.max_flows, keep_macs=not config.allow_mismatched_eth)
        self.reporter = FlowReporter(config, self.source, publish, timestamp_digits)
        self.source.on_evict = self.reporter.report_evicted
        self.packet: Callable[[Packet], None] = self.source.packet  # the per-packet path, without a hop

    def tick(self, now_ns: int) -> None:
        self.source.expire(now_ns)
        if self.follow_clock:
            self.reporter.tick(now_ns)

    def final(self, now_ns: int) -> None:
        self.source.flush()
        self.reporter.final(now_ns)
