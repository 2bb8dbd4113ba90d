"""DHCP options as Packetbeat renders them under `dhcpv4.option`, and the names tables it uses.

Only the options Packetbeat knows become fields; the others are still
parsed (their codes name them in `parameter_request_list`).  A value of
the wrong size for its option is left out and reported back as a note.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

MESSAGE_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release",
                 8: "inform"}

# ARP hardware types as the DHCP library Packetbeat uses names them (unknown: "Invalid").
HARDWARE_TYPES = {
    1: "Ethernet", 2: "Experimental Ethernet", 3: "Amateur Radio AX.25", 4: "Proteon ProNET Token Ring",
    5: "Chaos", 6: "IEEE 802", 7: "ARCNET", 8: "Hyperchannel", 9: "Lanstar", 10: "Autonet Short Address",
    11: "LocalTalk", 12: "LocalNet", 13: "Ultra link", 14: "SMDS", 15: "Frame Relay", 16: "ATM", 17: "HDLC",
    18: "Fibre Channel", 19: "ATM 2", 20: "Serial Line", 21: "ATM 3", 22: "MIL-STD-188-220", 23: "Metricom",
    24: "IEEE 1394.1995", 25: "MAPOS", 26: "Twinaxial", 27: "EUI-64", 28: "HIPARP",
    29: "IP and ARP over ISO 7816-3", 30: "ARPSec", 31: "IPsec tunnel", 32: "Infiniband",
    33: "CAI, TIA-102 Project 125 Common Air Interface", 34: "Wiegand Interface", 35: "Pure IP",
}

# Option names for parameter_request_list (the library's mnemonics, typos included).
OPTION_NAMES = {
    0: "Pad", 1: "Subnet Mask", 2: "Time Offset", 3: "Router", 4: "Time Server", 5: "Name Server",
    6: "Domain Name Server", 7: "Log Server", 8: "Quote Server", 9: "LPR Server", 10: "Impress Server",
    11: "Resource Location Server", 12: "Host Name", 13: "Boot File Size", 14: "Merit Dump File",
    15: "Domain Name", 16: "Swap Server", 17: "Root Path", 18: "Extensions Path",
    19: "IP Forwarding enable/disable", 20: "Non-local Source Routing enable/disable", 21: "Policy Filter",
    22: "Maximum Datagram Reassembly Size", 23: "Default IP Time-to-live", 24: "Path MTU Aging Timeout",
    25: "Path MTU Plateau Table", 26: "Interface MTU", 27: "All Subnets Are Local", 28: "Broadcast Address",
    29: "Perform Mask Discovery", 30: "Mask Supplier", 31: "Perform Router Discovery",
    32: "Router Solicitation Address", 33: "Static Routing Table", 34: "Trailer Encapsulation",
    35: "ARP Cache Timeout", 36: "Ethernet Encapsulation", 37: "Default TCP TTL", 38: "TCP Keepalive Interval",
    39: "TCP Keepalive Garbage", 40: "Network Information Service Domain", 41: "Network Information Servers",
    42: "NTP Servers", 43: "Vendor Specific Information", 44: "NetBIOS over TCP/IP Name Server",
    45: "NetBIOS over TCP/IP Datagram Distribution Server", 46: "NetBIOS over TCP/IP Node Type",
    47: "NetBIOS over TCP/IP Scope", 48: "X Window System Font Server", 49: "X Window System Display Manager",
    50: "Requested IP Address", 51: "IP Addresses Lease Time", 52: "Option Overload", 53: "DHCP Message Type",
    54: "Server Identifier", 55: "Parameter Request List", 56: "Message", 57: "Maximum DHCP Message Size",
    58: "Renew Time Value", 59: "Rebinding Time Value", 60: "Class Identifier", 61: "Client identifier",
    62: "NetWare/IP Domain Name", 63: "NetWare/IP Information", 64: "Network Information Service+ Domain",
    65: "Network Information Service+ Servers", 66: "TFTP Server Name", 67: "Bootfile Name",
    68: "Mobile IP Home Agent", 69: "SMTP Server", 70: "POP Server", 71: "NNTP Server", 72: "Default WWW Server",
    73: "Default Finger Server", 74: "Default IRC Server", 75: "StreetTalk Server",
    76: "StreetTalk Directory Assistance Server", 77: "User Class Information", 78: "SLP DIrectory Agent",
    79: "SLP Service Scope", 80: "Rapid Commit", 81: "FQDN", 82: "Relay Agent Information",
    83: "Internet Storage Name Service", 85: "NDS Servers", 86: "NDS Tree Name", 87: "NDS Context",
    88: "BCMCS Controller Domain Name List", 89: "BCMCS Controller IPv4 Address List", 90: "Authentication",
    91: "Client Last Transaction Time", 92: "Associated IP", 93: "Client System Architecture Type",
    94: "Client Network Interface Identifier", 95: "LDAP", 97: "Client Machine Identifier",
    98: "OpenGroup's User Authentication", 99: "GEOCONF_CIVIC", 100: "IEEE 1003.1 TZ String",
    101: "Reference to the TZ Database", 112: "NetInfo Parent Server Address", 113: "NetInfo Parent Server Tag",
    114: "URL", 116: "Auto-Configure", 117: "Name Service Search", 118: "Subnet Selection",
    119: "DNS Domain Search List", 120: "SIP Servers DHCP Option", 121: "Classless Static Route Option",
    122: "CCC, CableLabs Client Configuration", 123: "GeoConf", 124: "Vendor-Identifying Vendor Class",
    125: "Vendor-Identifying Vendor-Specific", 128: "TFTP Server IP Address", 129: "Call Server IP Address",
    130: "Discrimination String", 131: "RemoteStatistics Server IP Address", 132: "802.1P VLAN ID",
    133: "802.1Q L2 Priority", 134: "Diffserv Code Point", 135: "HTTP Proxy for phone-specific applications",
    136: "PANA Authentication Agent", 137: "LoST Server", 138: "CAPWAP Access Controller Addresses",
    139: "OPTION-IPv4_Address-MoS", 140: "OPTION-IPv4_FQDN-MoS", 141: "SIP UA Configuration Service Domains",
    142: "OPTION-IPv4_Address-ANDSF", 143: "OPTION-IPv6_Address-ANDSF", 150: "TFTP Server Address",
    151: "Status Code", 152: "Base Time", 153: "Start Time of State", 154: "Query Start Time",
    155: "Query End Time", 156: "DHCP Staet", 157: "Data Source", 175: "Etherboot", 176: "IP Telephone",
    177: "Etherboot / PacketCable and CableHome", 208: "PXELinux Magic String", 209: "PXELinux Config File",
    210: "PXELinux Path Prefix", 211: "PXELinux Reboot Time", 212: "OPTION_6RD", 213: "OPTION_V4_ACCESS_DOMAIN",
    220: "Subnet Allocation", 221: "Virtual Subnet Selection", 255: "End",
}


def option_name(code: int) -> str:
    return OPTION_NAMES.get(code) or f"Unknown ({code})"


def ipv4(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def text(raw: bytes) -> str:
    # Clients often count a terminating NUL in the length; it is not part of the name.
    return raw.rstrip(b"\x00").decode("utf-8", "replace")


def _single_ip(raw: bytes) -> str | None:
    return ipv4(raw) if len(raw) == 4 else None


def _ip_list(raw: bytes) -> list[str] | None:
    if not raw or len(raw) % 4:
        return None
    return [ipv4(raw[i:i + 4]) for i in range(0, len(raw), 4)]


def _routers(raw: bytes) -> str | list[str] | None:
    addresses = _ip_list(raw)
    if addresses is None:
        return None
    # One router is a string, as in Packetbeat; several keep every address.
    return addresses[0] if len(addresses) == 1 else addresses


def _u32(raw: bytes) -> int | None:
    return struct.unpack("!I", raw[:4])[0] if len(raw) >= 4 else None


def _s32(raw: bytes) -> int | None:
    return struct.unpack("!i", raw[:4])[0] if len(raw) >= 4 else None


def _u16(raw: bytes) -> int | None:
    return struct.unpack("!H", raw)[0] if len(raw) == 2 else None


def _message_type(raw: bytes) -> str | None:
    if len(raw) != 1:
        return None
    return MESSAGE_TYPES.get(raw[0], f"unknown ({raw[0]})")


def _request_list(raw: bytes) -> list[str]:
    return [option_name(code) for code in raw]


def _vendor_identifying(raw: bytes) -> list[dict[str, Any]] | None:
    """RFC 3925 option 124: enterprise number + length-prefixed data, repeated."""
    out: list[dict[str, Any]] = []
    pos = 0
    while pos < len(raw):
        if pos + 5 > len(raw):
            return None
        enterprise, length = struct.unpack_from("!IB", raw, pos)
        pos += 5
        if pos + length > len(raw):
            return None
        out.append({"id": enterprise, "data": raw[pos:pos + length].hex()})
        pos += length
    return out or None


_RENDERERS: dict[int, tuple[str, Any]] = {
    53: ("message_type", _message_type),
    55: ("parameter_request_list", _request_list),
    50: ("requested_ip_address", _single_ip),
    54: ("server_identifier", _single_ip),
    28: ("broadcast_address", _single_ip),
    57: ("max_dhcp_message_size", _u16),
    60: ("class_identifier", text),
    15: ("domain_name", text),
    6: ("dns_servers", _ip_list),
    124: ("vendor_identifying_options", _vendor_identifying),
    1: ("subnet_mask", lambda raw: ipv4(raw[:4]) if len(raw) >= 4 else None),
    2: ("utc_time_offset_sec", _s32),
    3: ("router", _routers),
    4: ("time_servers", _ip_list),
    42: ("ntp_servers", _ip_list),
    12: ("hostname", text),
    51: ("ip_address_lease_time_sec", _u32),
    56: ("message", text),
    58: ("renewal_time_sec", _u32),
    59: ("rebinding_time_sec", _u32),
    67: ("boot_file_name", text),
}


def render(options: tuple[tuple[int, bytes], ...]) -> tuple[dict[str, Any], list[int]]:
    """The `dhcpv4.option` object, and the codes whose value did not fit their option."""
    out: dict[str, Any] = {}
    bad: list[int] = []
    for code, raw in options:
        entry = _RENDERERS.get(code)
        if entry is None:
            continue
        name, renderer = entry
        value = renderer(raw)
        if value == []:
            continue  # an empty request list: nothing to show, nothing wrong
        if value is None:
            bad.append(code)
            continue
        out[name] = value
    return out, bad
