"""A capture worker's per-packet and per-event steps.

The worker's loop (polling the ring, ticks, stats, stop) stays in worker.py: it runs a few
hundred times a second.  These run per packet and per transaction, where an interpreted frame
and a call to an interpreted method cost more than the compiled work around them.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.capture.chunks import ChunkJoiner
from agent.capture.dump import DumpWriter
from agent.capture.packet import F_LAST_CHUNK, IPPROTO_TCP, Packet
from agent.events.builder import EventBuilder
from agent.protocols.transaction import Transaction
from agent.publisher.types import EncodedEvent
from agent.runtime.topstats import TransactionStats
from agent.transport.dispatcher import Dispatcher


class PacketSteps:
    """Hands a ring batch's packets to the dispatcher: whole datagrams, each written to the dump first."""

    def __init__(self, dispatcher: Dispatcher, joiner: ChunkJoiner, counters: dict[str, int],
                 dump: DumpWriter | None) -> None:
        self.dispatcher = dispatcher
        self.joiner = joiner
        self.counters = counters
        self.dump = dump

    def process(self, packets: list[Packet]) -> int:
        """Returns the newest packet's time (0 without packets)."""
        dispatcher = self.dispatcher
        joiner = self.joiner
        waiting = joiner.waiting
        dump = self.dump
        whole = 0
        for pkt in packets:
            if pkt.l4proto != IPPROTO_TCP and (waiting or not pkt.flags & F_LAST_CHUNK):
                joined = joiner.add(pkt)
                if joined is None:
                    continue
                pkt = joined
            whole += 1
            if dump is not None:
                dump.write(pkt)
            dispatcher.handle(pkt)
        counters = self.counters
        counters["records"] = counters.get("records", 0) + len(packets)
        counters["packets"] = counters.get("packets", 0) + whole
        return packets[-1].ts_ns if packets else 0


class EventBatch:
    """A worker's transactions as encoded events, counted by type and status, in batches for the parent."""

    def __init__(self, builder: EventBuilder, by_status: dict[str, int], top: TransactionStats, limit: int,
                 full: Callable[[], None]) -> None:
        self.builder = builder
        self.by_status = by_status  # events.<type>.<status>: /metrics' pktbeat_events_total
        self.top = top
        self.limit = limit
        self.full = full  # called when the batch reaches `limit`: sends it
        self.events: list[EncodedEvent] = []
        self._status_names: dict[tuple[str, Any], str] = {}

    def emit(self, txn: Transaction) -> None:
        built = self.builder.encode_transaction(txn)
        if built is None:
            return
        event, encoded = built
        kind = encoded.type
        status = event.get("status", "")
        if type(status) is not str:  # a processor may have set anything: the name is its text
            status = f"{status}"
        name = self._status_names.get((kind, status))
        if name is None:
            name = f"{kind}.{status}"
            if len(self._status_names) < 1024:  # types times statuses: a handful, but never unbounded
                self._status_names[(kind, status)] = name
        by_status = self.by_status
        by_status[name] = by_status.get(name, 0) + 1
        self.top.add(event)
        events = self.events
        events.append(encoded)
        if len(events) >= self.limit:
            self.full()

    def take(self) -> list[EncodedEvent]:
        events = self.events
        self.events = []
        return events
