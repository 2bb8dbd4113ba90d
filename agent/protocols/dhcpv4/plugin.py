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
from agent.protocols.base import ProtocolConfig, ProtocolSpec, Transaction
from agent.protocols.dhcpv4.options import HARDWARE_TYPES, ipv4, option_name, render
from agent.protocols.dhcpv4.parser import OP_BOOTREPLY, OP_BOOTREQUEST, DhcpMessage, parse
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction

COUNTERS = ("total_packets", "parse_failures", "malformed_options")
_ZERO_IP = b"\x00\x00\x00\x00"


def malformed_option_note(code: int) -> str:
    return f"DHCP option {code} ({option_name(code)}) has a malformed value"


def _check_ports(ports: tuple[int, ...]) -> str | None:
    for port in ports:
        if not 0 < port < 65536:
            return f"port {port} is outside 1-65535"
    return None


@dataclass(frozen=True)
class Dhcpv4Config(ProtocolConfig):
    # The one protocol Packetbeat gives ports by default.
    ports: tuple[int, ...] = opt((67, 68), check=_check_ports)


def op_code_name(op: int) -> str:
    if op == OP_BOOTREQUEST:
        return "bootrequest"
    if op == OP_BOOTREPLY:
        return "bootreply"
    return "invalid"


def client_mac(chaddr: bytes) -> str:
    return chaddr.hex("-").upper()


def dhcp_fields(msg: DhcpMessage) -> tuple[dict[str, Any], list[str], list[int]]:
    """(the `dhcpv4` object, the extra related IPs, option codes with malformed values)."""
    out: dict[str, Any] = {
        "op_code": op_code_name(msg.op),
        "hardware_type": HARDWARE_TYPES.get(msg.htype, "Invalid"),
        "hops": msg.hops,
        "transaction_id": f"0x{msg.xid:08x}",
        "seconds": msg.secs,
        "flags": "broadcast" if msg.broadcast else "unicast",
    }
    if msg.chaddr:
        out["client_mac"] = client_mac(msg.chaddr)
    related: list[str] = []
    for name, raw in (("client_ip", msg.ciaddr), ("assigned_ip", msg.yiaddr), ("server_ip", msg.siaddr),
                      ("relay_ip", msg.giaddr)):
        if raw != _ZERO_IP:
            out[name] = ipv4(raw)
            related.append(out[name])
    if msg.sname:
        out["server_name"] = msg.sname.decode("utf-8", "replace")
    if msg.file:
        out["boot_file_name"] = msg.file.decode("utf-8", "replace")
    options, bad = render(msg.options)
    if options:
        out["option"] = options
    return out, related, bad


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


def _handler(config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> Dhcpv4Handler:
    return Dhcpv4Handler(config, emit, counters)


SPEC = ProtocolSpec(
    name="dhcpv4",
    config_class=Dhcpv4Config,
    udp=_handler,
    description="DHCPv4 messages (one event each), client and server from the BOOTP op code",
    counters=COUNTERS,
)
