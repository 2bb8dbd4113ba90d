"""The connection phase: CONNECT, ACCEPT, REFUSE and REDIRECT bodies, and the descriptors they carry.

Layouts (offsets in the body, after the 8-byte header), as Wireshark's TNS
dissector names the fields:

- CONNECT: version, compatible version, service options, SDU, TDU, NT
  characteristics, line turnaround, value of one, connect data length and
  offset (from the packet start), max receivable data, connect flags 0/1
  (0x10: NA services required), then, from v315, 32-bit SDU/TDU and flags.
  Connect data longer than 230 bytes is not in the CONNECT: it is the next
  DATA packet.
- ACCEPT: version, service options, SDU, TDU, value of one, accept data
  length and offset, connect flags 0/1; from v315 a 32-bit SDU at 24.
- REFUSE: user and system reason bytes, data length, data: a descriptor
  such as `(DESCRIPTION=(ERR=12514)(VSNNUM=...)(ERROR_STACK=...))`.
- REDIRECT: data length, then the data (inline, or in the next DATA
  packet): the new address, a NUL, and the connect descriptor to send there.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocols.cursor import Cursor
from agent.protocols.errors import ParseError
from agent.protocols.tns.parser import PROTOCOL, U16, U32
from agent.transport.types import Direction

MAX_DEPTH = 32
CONNECT_FLAG_NA_REQUIRED = 0x10

# Listener errors a REFUSE carries, with Oracle's message text.
LISTENER_ERRORS = {
    12505: "TNS:listener does not currently know of SID given in connect descriptor",
    12514: "TNS:listener does not currently know of service requested in connect descriptor",
    12516: "TNS:listener could not find available handler with matching protocol stack",
    12518: "TNS:listener could not hand off client connection",
    12519: "TNS:no appropriate service handler found",
    12520: "TNS:listener could not find available handler for requested type of server",
    12526: "TNS:listener: all appropriate instances are in restricted mode",
    12527: "TNS:listener: all instances are in restricted mode or blocking new connections",
    12528: "TNS:listener: all appropriate instances are blocking new connections",
    12529: "TNS:connect request rejected based on current filtering rules",
}


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    version: int
    version_compatible: int
    sdu: int
    na_required: bool  # the client wants native network encryption/integrity
    data_length: int
    data: bytes  # the descriptor, when it is in the packet (else it follows in DATA)


@dataclass(frozen=True, slots=True)
class Accept:
    version: int
    sdu: int
    na_required: bool


@dataclass(frozen=True, slots=True)
class Refuse:
    user_reason: int
    system_reason: int
    data: bytes


def _cursor(body: bytes, direction: Direction) -> Cursor:
    return Cursor(body, protocol=PROTOCOL, direction=direction)


def parse_connect(body: bytes) -> ConnectRequest:
    c = _cursor(body, Direction.TO_SERVER)
    version = c.u16("version")
    compatible = c.u16("compatible version")
    c.skip(2, "service options")
    sdu = c.u16("SDU")
    c.skip(8, "TDU, characteristics, turnaround, one")
    length = c.u16("connect data length")
    offset = c.u16("connect data offset")
    c.skip(4, "max receivable data")
    flags0 = c.u8("connect flags")
    if version >= 315 and len(body) >= 54:
        sdu = int(U32(body, 50)[0])
    start = offset - 8
    data = body[start:start + length] if 0 <= start < len(body) else b""
    return ConnectRequest(version, compatible, sdu, bool(flags0 & CONNECT_FLAG_NA_REQUIRED), length, data)


def parse_accept(body: bytes) -> Accept:
    c = _cursor(body, Direction.TO_CLIENT)
    version = c.u16("version")
    c.skip(2, "service options")
    sdu = c.u16("SDU")
    c.skip(8, "TDU, one, accept data length and offset")
    flags0 = c.u8("connect flags")
    if version >= 315 and len(body) >= 28:
        sdu = int(U32(body, 24)[0])
    return Accept(version, sdu, bool(flags0 & CONNECT_FLAG_NA_REQUIRED))


def parse_refuse(body: bytes) -> Refuse:
    c = _cursor(body, Direction.TO_CLIENT)
    user, system = c.u8("user reason"), c.u8("system reason")
    length = c.u16("refuse data length")
    return Refuse(user, system, body[4:4 + length])


def redirect_length(body: bytes) -> int:
    if len(body) < 2:
        raise ParseError(PROTOCOL, Direction.TO_CLIENT, 0, "redirect without its data length")
    return int(U16(body, 0)[0])


# -- descriptors ------------------------------------------------------------------------------------


def descriptor_fields(text: str) -> dict[str, str]:
    """The leaves of a connect descriptor by path: `ADDRESS.HOST`, `CONNECT_DATA.CID.PROGRAM` ...

    Paths leave out DESCRIPTION, DESCRIPTION_LIST and ADDRESS_LIST; the first value of a path is kept.
    """
    out: dict[str, str] = {}
    stack: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == ")":
            if stack:
                stack.pop()
            i += 1
            continue
        if char != "(":
            i += 1
            continue
        equals = text.find("=", i)
        if equals < 0 or len(stack) >= MAX_DEPTH:
            break
        stack.append(text[i + 1:equals].strip().upper())
        j = equals + 1
        while j < n and text[j] in " \t\r\n":
            j += 1
        if j < n and text[j] == "(":
            i = j
            continue
        close = text.find(")", j)
        if close < 0:
            close = n
        path = ".".join(p for p in stack if p not in ("DESCRIPTION", "DESCRIPTION_LIST", "ADDRESS_LIST"))
        out.setdefault(path, text[j:close].strip().strip('"'))
        stack.pop()
        i = close + 1
    return out


def first(fields: dict[str, str], *suffixes: str) -> str | None:
    """The first value whose path is, or ends with, one of `suffixes`."""
    for suffix in suffixes:
        for path, value in fields.items():
            if value and (path == suffix or path.endswith("." + suffix)):
                return value
    return None


def listener_error(text: str) -> int | None:
    """The TNS error number a REFUSE descriptor carries (`(ERR=12514)`, or its ERROR_STACK CODE)."""
    fields = descriptor_fields(text)
    for key in ("ERR", "CODE"):
        value = first(fields, key)
        if value is not None and value.isdigit():
            return int(value)
    return None
