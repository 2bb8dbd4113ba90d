"""Sans-IO decoding of one DHCPv4 message (a UDP payload).

The fixed BOOTP header (RFC 2131 §2) is followed by the magic cookie and
the options.  Options are collected by code in order of first appearance;
a code seen twice is concatenated (RFC 3396, long options).  When the
Option Overload option says so, the `file` and `sname` fields hold more
options (RFC 2131 §4.1: options, then file, then sname).

Malformed input (too short, no magic cookie, an option running past the
end) raises `ParseError`: Packetbeat drops such packets and counts them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.transport.session import ParseError

HEADER_LEN = 236  # op .. file: everything before the magic cookie
MAGIC_COOKIE = b"\x63\x82\x53\x63"
MIN_LEN = HEADER_LEN + len(MAGIC_COOKIE)
MAX_CHADDR = 16

OP_BOOTREQUEST = 1
OP_BOOTREPLY = 2

OPT_PAD = 0
OPT_END = 255
OPT_OVERLOAD = 52

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: bytes
    yiaddr: bytes
    siaddr: bytes
    giaddr: bytes
    chaddr: bytes  # the first hlen bytes (at most 16)
    sname: bytes  # empty when the field carries options
    file: bytes  # empty when the field carries options
    options: tuple[tuple[int, bytes], ...]  # (code, value) without Pad/End, repeated codes joined
    size: int  # the UDP payload length

    @property
    def is_reply(self) -> bool:
        return self.op == OP_BOOTREPLY

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & 0x8000)


def _fail(offset: int, reason: str) -> ParseError:
    return ParseError("dhcpv4", None, offset, reason)


def _scan_options(data: bytes, base: int, into: dict[int, bytearray]) -> None:
    """Collect the options of one area (`base` is its offset in the message, for errors)."""
    pos = 0
    end = len(data)
    while pos < end:
        code = data[pos]
        if code == OPT_PAD:
            pos += 1
            continue
        if code == OPT_END:
            return
        if pos + 1 >= end:
            raise _fail(base + pos, f"option {code} has no length byte")
        length = data[pos + 1]
        start = pos + 2
        if start + length > end:
            raise _fail(base + pos, f"option {code} of {length} bytes runs past the end of its area")
        value = data[start:start + length]
        current = into.get(code)
        if current is None:
            into[code] = bytearray(value)
        else:
            current += value
        pos = start + length


def _text_field(raw: bytes) -> bytes:
    end = raw.find(b"\x00")
    return raw if end < 0 else raw[:end]


def parse(data: bytes) -> DhcpMessage:
    """Decode one DHCPv4 message; raises ParseError when it is not one."""
    if len(data) < MIN_LEN:
        raise _fail(len(data), f"{len(data)} bytes is shorter than a DHCP message ({MIN_LEN})")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = _HEADER.unpack_from(data)
    if data[HEADER_LEN:MIN_LEN] != MAGIC_COOKIE:
        raise _fail(HEADER_LEN, "no DHCP magic cookie")
    found: dict[int, bytearray] = {}
    _scan_options(data[MIN_LEN:], MIN_LEN, found)
    overload = found.get(OPT_OVERLOAD)
    mode = overload[0] if overload else 0
    if mode & 1:
        _scan_options(file, 108, found)
        file = b""
    if mode & 2:
        _scan_options(sname, 44, found)
        sname = b""
    return DhcpMessage(
        op=op, htype=htype, hlen=hlen, hops=hops, xid=xid, secs=secs, flags=flags,
        ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr,
        chaddr=chaddr[:min(hlen, MAX_CHADDR)],
        sname=_text_field(sname), file=_text_field(file),
        options=tuple((code, bytes(value)) for code, value in found.items()),
        size=len(data),
    )
