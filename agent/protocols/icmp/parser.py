"""Sans-IO parsing of one ICMP message (the bytes from the type field on)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.transport.session import ParseError

# Types whose reply comes back with the same id and sequence number.
PAIR_TYPES = {4: frozenset({8, 0, 13, 14, 15, 16, 17, 18}), 6: frozenset({128, 129})}
RESPONSE_TYPES = {4: frozenset({0, 14, 16, 18}), 6: frozenset({129})}
ERROR_TYPES = {4: frozenset({3, 4, 11, 12}), 6: frozenset({1, 2, 3, 4})}

_V4_NAMES = {
    0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench", 5: "Redirect", 8: "EchoRequest",
    9: "RouterAdvertisement", 10: "RouterSolicitation", 11: "TimeExceeded", 12: "ParameterProblem",
    13: "TimestampRequest", 14: "TimestampReply", 15: "InfoRequest", 16: "InfoReply",
    17: "AddressMaskRequest", 18: "AddressMaskReply",
}
_V4_CODES = {
    3: ("Net", "Host", "Protocol", "Port", "FragmentationNeeded", "SourceRoutingFailed", "NetUnknown",
        "HostUnknown", "SourceIsolated", "NetAdminProhibited", "HostAdminProhibited", "NetTOS", "HostTOS",
        "CommAdminProhibited", "HostPrecedence", "PrecedenceCutoff"),
    5: ("Net", "Host", "TOS+Net", "TOS+Host"),
    11: ("TTLExceeded", "FragmentReassemblyTimeExceeded"),
    12: ("PointerIndicatesError", "MissingOption", "BadLength"),
}
_V6_NAMES = {
    1: "DestinationUnreachable", 2: "PacketTooBig", 3: "TimeExceeded", 4: "ParameterProblem",
    128: "EchoRequest", 129: "EchoReply", 130: "MLDv1MulticastListenerQueryMessage",
    131: "MLDv1MulticastListenerReportMessage", 132: "MLDv1MulticastListenerDoneMessage",
    133: "RouterSolicitation", 134: "RouterAdvertisement", 135: "NeighborSolicitation",
    136: "NeighborAdvertisement", 137: "Redirect", 143: "MLDv2MulticastListenerReportMessageV2",
}
_V6_CODES = {
    1: ("NoRouteToDst", "AdminProhibited", "BeyondScopeOfSrc", "AddressUnreachable", "PortUnreachable",
        "SrcAddressFailedPolicy", "RejectRouteToDst"),
    3: ("HopLimitExceeded", "FragmentReassemblyTimeExceeded"),
    4: ("ErroneousHeaderField", "UnrecognizedNextHeader", "UnrecognizedIPv6Option"),
}

HEADER_LEN = 8


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    version: int
    type: int
    code: int
    id: int  # 0 unless the type is a request/reply pair
    seq: int
    length: int  # bytes after the 8-byte header

    @property
    def is_request(self) -> bool:
        return self.type not in RESPONSE_TYPES[self.version]

    @property
    def is_error(self) -> bool:
        return self.type in ERROR_TYPES[self.version]

    @property
    def needs_counterpart(self) -> bool:
        return self.type in PAIR_TYPES[self.version]

    @property
    def name(self) -> str:
        return describe(self.version, self.type, self.code)


def parse(version: int, data: bytes) -> IcmpMessage:
    if version not in (4, 6):
        raise ParseError("icmp", None, 0, f"unknown ICMP version {version}")
    if len(data) < 4:
        raise ParseError("icmp", None, 0, f"message of {len(data)} bytes is shorter than the 4-byte header")
    typ, code = data[0], data[1]
    ident = seq = 0
    if typ in PAIR_TYPES[version]:
        if len(data) < HEADER_LEN:
            raise ParseError("icmp", None, 4, "echo-style message without id and sequence")
        ident, seq = struct.unpack_from("!HH", data, 4)
    return IcmpMessage(version, typ, code, ident, seq, max(0, len(data) - HEADER_LEN))


def describe(version: int, typ: int, code: int) -> str:
    """The message name as gopacket prints it: `EchoRequest`, `DestinationUnreachable(Port)`."""
    names, codes = (_V4_NAMES, _V4_CODES) if version == 4 else (_V6_NAMES, _V6_CODES)
    name = names.get(typ)
    if name is None:
        return f"{typ}({code})"
    table = codes.get(typ)
    if table is None:
        return name if code == 0 else f"{name}(Code: {code})"
    if code < len(table):
        return f"{name}({table[code]})"
    return f"{name}(Code: {code})"
