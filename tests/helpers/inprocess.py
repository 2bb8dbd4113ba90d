"""Running packets through the real layers in-process (no CLI), for tests that replay many variants."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.capture.decode import FrameDecoder
from agent.capture.packet import IPPROTO_TCP, Packet
from agent.capture.pcapfile import CaptureReader
from agent.config.load import from_tree
from agent.config.yamlload import normalize
from agent.protocols.base import Transaction
from agent.runtime import wiring

VOLATILE = ("agent", "host", "ecs")


def read_packets(pcap: str | Path) -> list[Packet]:
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        packets = [decoder.decode(frame, ts, wire) for ts, frame, wire in reader]
    return [p for p in packets if p is not None]


def events_for(packets: Iterable[Packet], protocols: list[dict[str, Any]],
               settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The events the agent would publish for `packets` (agent/host/ecs fields removed)."""
    tree = normalize({"packetbeat.protocols": protocols, "packetbeat.interfaces.internal_networks": ["private"],
                      "output.discard": {}, **(settings or {})})
    config = from_tree(tree)
    builder = wiring.event_builder(config, wiring.AgentIdentity.create("test", "id"))
    events: list[dict[str, Any]] = []

    def emit(txn: Transaction) -> None:
        event = builder.transaction_event(txn)
        if event is not None:
            for key in VOLATILE:
                event.pop(key, None)
            events.append(event)

    dispatcher = wiring.dispatcher(config, emit)
    last = 0
    for pkt in packets:
        dispatcher.handle(pkt)
        if pkt.ts_ns - last > 100_000_000:
            dispatcher.expire(pkt.ts_ns)
            last = pkt.ts_ns
    dispatcher.expire(last)
    return events


def split_tcp(packets: Iterable[Packet], cut_points: Iterable[float]) -> list[Packet]:
    """Re-segment every TCP payload at the given relative cut points (0 < c < 1), keeping sequence numbers."""
    cuts = sorted(c for c in cut_points if 0 < c < 1)
    out: list[Packet] = []
    for pkt in packets:
        data = pkt.payload
        if pkt.l4proto != IPPROTO_TCP or len(data) < 2 or not cuts:
            out.append(pkt)
            continue
        bounds = sorted({0, *(max(1, min(len(data) - 1, int(c * len(data)))) for c in cuts), len(data)})
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            last = i == len(bounds) - 2
            out.append(Packet(pkt.ts_ns, pkt.family, pkt.l4proto, pkt.src, pkt.dst, pkt.sport, pkt.dport,
                              data[a:b], seq=(pkt.seq + a) & 0xFFFFFFFF, ack=pkt.ack,
                              tcp_flags=pkt.tcp_flags if last else pkt.tcp_flags & ~0x01, window=pkt.window,
                              wire_len=pkt.wire_len, flags=pkt.flags, missing=pkt.missing if last else 0))
    return out
