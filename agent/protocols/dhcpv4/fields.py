"""What one DHCPv4 message becomes in the event: Packetbeat's `dhcpv4.*` fields, and their table."""

from __future__ import annotations

from typing import Any

from agent.protocols.dhcpv4.options import HARDWARE_TYPES, ipv4, render
from agent.protocols.dhcpv4.parser import OP_BOOTREPLY, OP_BOOTREQUEST, DhcpMessage

# Packetbeat's dhcpv4 fields.yml, with its types; `option.router` holds one address or several.
FIELDS = """
dhcpv4.transaction_id keyword
dhcpv4.seconds long
dhcpv4.flags keyword
dhcpv4.client_ip ip
dhcpv4.assigned_ip ip
dhcpv4.server_ip ip
dhcpv4.relay_ip ip
dhcpv4.client_mac keyword
dhcpv4.server_name keyword
dhcpv4.boot_file_name keyword
dhcpv4.op_code keyword
dhcpv4.hops long
dhcpv4.hardware_type keyword
dhcpv4.option.message_type keyword
dhcpv4.option.parameter_request_list keyword
dhcpv4.option.class_identifier keyword
dhcpv4.option.domain_name keyword
dhcpv4.option.hostname keyword
dhcpv4.option.ip_address_lease_time_sec long
dhcpv4.option.boot_file_name keyword
dhcpv4.option.broadcast_address ip
dhcpv4.option.dns_servers ip
dhcpv4.option.max_dhcp_message_size long
dhcpv4.option.message match_only_text
dhcpv4.option.ntp_servers ip
dhcpv4.option.rebinding_time_sec long
dhcpv4.option.renewal_time_sec long
dhcpv4.option.requested_ip_address ip
dhcpv4.option.router ip
dhcpv4.option.server_identifier ip
dhcpv4.option.subnet_mask ip
dhcpv4.option.time_servers ip
dhcpv4.option.utc_time_offset_sec long
dhcpv4.option.vendor_identifying_options.id long
dhcpv4.option.vendor_identifying_options.data keyword
"""

_ZERO_IP = b"\x00\x00\x00\x00"


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
