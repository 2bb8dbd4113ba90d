"""The contract between the transport layer and protocol packages.

A protocol package provides (docs/adding-a-protocol.md walks through one):

- `parser.py`: a sans-IO parser.  Bytes of one direction go in, typed
  messages come out; "need more bytes" is a normal result, malformed input
  raises `ParseError`.  It never reads a clock, a socket or a global.  Stream
  parsers follow `agent.protocols.stream.StreamParser` and read through
  `agent.protocols.buffer.ReceiveBuffer` and `agent.protocols.cursor.Cursor`.
- `plugin.py`: the protocol's `ProtocolSpec`: its config class and a factory
  for per-connection `StreamSession`s (TCP) and/or a `DatagramHandler` (UDP),
  which run the parser, correlate requests with responses and emit
  `Transaction`s.
- `fields.py`: the event fields it publishes, as a table the index template
  is built from, and the function that turns a transaction into them.

The transport layer calls sessions; sessions call `SessionContext.emit`.
Nothing here imports the event, publisher or output layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.transaction import Transaction
from agent.transport.session import DatagramHandler, HandOver, HandOvers, ParseError, StreamSession
from agent.transport.types import ConnectionInfo

__all__ = [
    "DatagramHandler",
    "HandOver",
    "ParseError",
    "ProtocolConfig",
    "ProtocolSpec",
    "SessionContext",
    "StreamSession",
    "Transaction",
    "check_ports",
    "prefixed",
]


def check_ports(ports: tuple[int, ...]) -> str | None:
    """The `ports` setting's check (for a protocol that gives it its own default)."""
    for port in ports:
        if not 0 < port < 65536:
            return f"port {port} is outside 1-65535"
    return None


@dataclass(frozen=True)
class ProtocolConfig:
    """Packetbeat's settings common to every protocol."""

    enabled: bool = opt(True)
    ports: tuple[int, ...] = opt((), check=check_ports)
    send_request: bool = opt(False)
    send_response: bool = opt(False)
    transaction_timeout: float = opt(10.0, kind="duration", bounds=(0.1, 86400.0))
    keep_null: bool = opt(False)
    fields: dict[str, Any] = opt({})
    fields_under_root: bool = opt(False)
    tags: tuple[str, ...] = opt(())
    index: str = opt("")
    processors: list[Any] = opt([])

    # Packetbeat settings this protocol does not act on, with the reason (warned, not refused).
    UNSUPPORTED: ClassVar[Mapping[str, str]] = {}


C = TypeVar("C", bound=ProtocolConfig)

Emit = Callable[[Transaction], None]


class SessionContext(Generic[C]):
    """What a session may use: its config (the protocol's own class), connection, counters, the emit hook and
    the hand-over to another protocol."""

    __slots__ = ("config", "conn", "counters", "emit", "hand_overs", "handed_over", "protocol")

    def __init__(self, protocol: str, config: C, conn: ConnectionInfo, emit: Emit, counters: Counters,
                 hand_overs: HandOvers | None = None) -> None:
        self.protocol = protocol
        self.config = config
        self.conn = conn
        self.emit = emit
        self.counters = counters
        self.hand_overs = hand_overs
        self.handed_over: HandOver | None = None  # the last request made (what a test without a transport reads)

    def hand_over(self, protocol: str, ts_ns: int, to_server: bytes = b"", to_client: bytes = b"") -> None:
        """From this byte on the connection is `protocol`: one call, then return and expect no more calls.

        `to_server`/`to_client` are the bytes each direction already carried past the
        switch (buffered and not consumed): the new session gets them first.  Publish
        what is due before calling; the transport replaces this session when the
        current `feed` (`gap`, `fin`, `recover`) returns.  A protocol that is not
        enabled cannot take over: the connection is then no longer decoded.
        """
        request = HandOver(protocol, (to_server, to_client), ts_ns)  # indexed by Direction
        self.handed_over = request
        if self.hand_overs is not None:
            self.hand_overs.post(self.conn, request)


DatagramFactory = Callable[[C, Emit, Counters], DatagramHandler]


def prefixed(prefix: str, table: str) -> str:
    """A field table with `prefix.` before every name (one table reused under several parents)."""
    return "\n".join(f"{prefix}.{line}" for line in table.strip().splitlines())


@dataclass(frozen=True)
class ProtocolSpec(Generic[C]):
    """One protocol's registration: the only thing the registry table lists.

    Generic over the protocol's config class, so its session and datagram
    factories receive that class, typed, with no downcast.
    """

    name: str
    config_class: type[C]
    tcp: Callable[[SessionContext[C]], StreamSession] | None = None
    udp: DatagramFactory[C] | None = None
    # ICMPv4/ICMPv6 messages: not port based, every message goes to this handler.
    icmp: DatagramFactory[C] | None = None
    description: str = ""
    # Its event fields, one `name type [modifiers]` line each (the format of agent/events/fields.py);
    # the index template is assembled from every registered protocol's table.
    fields: str = ""
    # Counters the protocol registers, for documentation and the metrics endpoint.
    counters: tuple[str, ...] = ("unmatched_requests", "unmatched_responses", "parse_errors")

    @property
    def transports(self) -> tuple[str, ...]:
        out = []
        if self.tcp is not None:
            out.append("tcp")
        if self.udp is not None:
            out.append("udp")
        if self.icmp is not None:
            out.append("icmp")
        return tuple(out)
