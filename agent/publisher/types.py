"""What flows from the event layer to outputs: encoded events and per-event outcomes.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).  One
EncodedEvent is built per published event.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(init=False)  # the __init__ below: compiled, a native constructor (a generated one runs as Python)
class EncodedEvent:
    """One event as JSON, ready for any output (not frozen: one is built per event, and a frozen
    dataclass costs several times as much to construct; nothing changes one after encoding).

    `data` is the document without `@metadata`; outputs that write it (file,
    console) splice it in.  `event_id` is deterministic (a hash of what the event
    is: agent/events/builder.py), so a resend after an ambiguous failure cannot
    create a duplicate.
    """

    data: bytes
    event_id: str
    index: str | None = None  # a per-protocol `index` override
    type: str = ""  # the event's `type` (http, dns, flow, ...)

    def __init__(self, data: bytes, event_id: str, index: str | None = None, type: str = "") -> None:
        self.data = data
        self.event_id = event_id
        self.index = index
        self.type = type


EventFields: TypeAlias = tuple[bytes, str, str | None, str]  # an EncodedEvent as the worker channel sends it


def event_fields(events: Sequence[EncodedEvent]) -> list[EventFields]:
    """Events as plain tuples, which pickle at a third of the cost of the objects (agent/runtime/channel.py)."""
    return [(event.data, event.event_id, event.index, event.type) for event in events]


def events_from_fields(rows: list[EventFields]) -> list[EncodedEvent]:
    return [EncodedEvent(data, event_id, index, kind) for data, event_id, index, kind in rows]


class Outcome(enum.IntEnum):
    ACKED = 0  # stored (or already stored: a 409 on create)
    RETRY = 1  # not stored, worth trying again (429, 5xx, connection errors)
    DROPPED = 2  # refused for good (mapping error...): counted and sampled in the log


class Output(Protocol):
    """An output takes a batch and says, per event, what happened to it."""

    name: str

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]: ...

    def close(self) -> None: ...


class OutputError(Exception):
    """An output that cannot be set up (bad settings, unreachable at start when that is fatal)."""
