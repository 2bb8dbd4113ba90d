"""What a protocol session hands to the event builder: one transaction, its protocol fields nested.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, no subclasses outside compiled modules); an edit
is used natively only after set-up rebuilds (`scripts/accel.py build`).  Compiled,
the event builder reads a transaction's attributes as struct fields instead of
through Python's attribute lookup, once per event for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.transport.types import ConnectionInfo


@dataclass(init=False)  # the __init__ below: compiled, a native constructor (a generated one runs as Python)
class Transaction:
    """One request/response pair (or a lone message), ready to become an event.

    `fields` holds the protocol's own event fields, nested as they appear in
    the event (`{"http": {...}, "url": {...}, "method": "GET"}`).  The event
    builder adds every common field from the rest.
    """

    type: str
    conn: ConnectionInfo
    ts_ns: int  # @timestamp: the request's time, else the response's
    end_ns: int | None = None  # event.end: the response's time
    has_request: bool = True  # False: an unmatched response (no event.start)
    status: str = "OK"
    client_bytes: int | None = None  # source.bytes
    server_bytes: int | None = None  # destination.bytes
    notes: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    event_type: tuple[str, ...] | None = None  # default ("connection", "protocol")
    protocol_override: str | None = None  # network.protocol when it differs from type
    domain: str | None = None  # destination.domain
    icmp: tuple[int, int] | None = None  # (type, code) of the request, for the ICMP community id
    # client/server are the reverse of source/destination (a DHCP reply is sent by the server)
    client_is_destination: bool = False
    # False when the protocol never puts None in `fields`: the event builder then skips its null walk
    may_hold_nulls: bool = True

    def __init__(self, type: str, conn: ConnectionInfo, ts_ns: int, end_ns: int | None = None,
                 has_request: bool = True, status: str = "OK", client_bytes: int | None = None,
                 server_bytes: int | None = None, notes: list[str] | None = None,
                 fields: dict[str, Any] | None = None, event_type: tuple[str, ...] | None = None,
                 protocol_override: str | None = None, domain: str | None = None,
                 icmp: tuple[int, int] | None = None, client_is_destination: bool = False,
                 may_hold_nulls: bool = True) -> None:
        self.type = type
        self.conn = conn
        self.ts_ns = ts_ns
        self.end_ns = end_ns
        self.has_request = has_request
        self.status = status
        self.client_bytes = client_bytes
        self.server_bytes = server_bytes
        self.notes = notes if notes is not None else []
        self.fields = fields if fields is not None else {}
        self.event_type = event_type
        self.protocol_override = protocol_override
        self.domain = domain
        self.icmp = icmp
        self.client_is_destination = client_is_destination
        self.may_hold_nulls = may_hold_nulls
