"""What an HTTP connection becomes once it is no longer HTTP (a CONNECT or Upgrade tunnel that is not
handed to `tls`): its bytes are counted, not parsed.

Not compiled, unlike the session that switches to it (agent/protocols/http/session.py): it extends the
interpreted `NullSession`, which a native class cannot, and it runs only for tunnels.
"""

from __future__ import annotations

from agent.metrics import Counters
from agent.transport.session import NullSession
from agent.transport.types import Direction


class TunnelBytes(NullSession):
    """A `NullSession` that counts what it swallows (`tunnel_bytes`)."""

    __slots__ = ("counters",)

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.counters["tunnel_bytes"] += len(data)
