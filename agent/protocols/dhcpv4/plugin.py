"""DHCPv4 events: one per message, no pairing (as in Packetbeat).

Source and destination are the packet's; client and server are the DHCP
client and server, so for a BOOTREPLY they are the reverse of source and
destination (the reply's source is the server).  `source.bytes` is the UDP
payload length, so a reply shows it as `server.bytes`.  Messages that are
not DHCP (too short, no magic cookie, an option past the end) are counted
in `dhcpv4.parse_failures` and dropped, as Packetbeat does; an option
whose value has the wrong size for its type is left out with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.metrics import Counters
from agent.protocols.base import ProtocolConfig, ProtocolSpec, Transaction, check_ports
from agent.protocols.dhcpv4.fields import FIELDS, dhcp_fields
from agent.protocols.dhcpv4.options import option_name
from agent.protocols.dhcpv4.parser import OP_BOOTREPLY, parse
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction

COUNTERS = ("total_packets", "parse_failures", "malformed_options")


def malformed_option_note(code: int) -> str:
    return f"DHCP option {code} ({option_name(code)}) has a malformed value"


@dataclass(frozen=True)
class Dhcpv4Config(ProtocolConfig):
    # The one protocol Packetbeat gives ports by default.
    ports: tuple[int, ...] = opt((67, 68), check=check_ports)


class Dhcpv4Handler:
    def __init__(self, config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> None:
        self.emit = emit
        self.counters = counters

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        self.counters.inc("total_packets")
        try:
            msg = parse(data)
        except ParseError:
            self.counters.inc("parse_failures")
            raise
        # The dispatcher orients `conn` by port; the event wants the packet's own direction.
        src, dst = (conn.client, conn.server) if direction is Direction.TO_SERVER else (conn.server, conn.client)
        packet = ConnectionInfo(src, dst, conn.family, conn.transport)
        dhcp, related, bad = dhcp_fields(msg)
        fields: dict[str, Any] = {"dhcpv4": dhcp}
        if related:
            fields["related"] = {"ip": related}
        txn = Transaction(type="dhcpv4", conn=packet, ts_ns=ts_ns, client_bytes=msg.size, fields=fields,
                          client_is_destination=msg.op == OP_BOOTREPLY)
        if bad:
            self.counters.inc("malformed_options", len(bad))
            txn.notes = [malformed_option_note(code) for code in bad]
        self.emit(txn)

    def tick(self, now_ns: int) -> None:
        pass  # nothing waits: every message is published when it arrives

    def pending(self) -> int:
        return 0


SPEC = ProtocolSpec(
    name="dhcpv4",
    config_class=Dhcpv4Config,
    udp=Dhcpv4Handler,
    fields=FIELDS,
    description="DHCPv4 messages (one event each), client and server from the BOOTP op code",
    counters=COUNTERS,
)
