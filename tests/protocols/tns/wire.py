"""TNS packets and TTC values as bytes, for the tests and the test listener.

Written from Wireshark's TNS dissector fields and python-oracledb's documented
message layouts (facts about the wire, not their code).
"""

from __future__ import annotations

import struct

CONNECT, ACCEPT, REFUSE, REDIRECT, DATA, RESEND, MARKER, CONTROL = 1, 2, 4, 5, 6, 11, 12, 14


def packet(ptype: int, body: bytes, large: bool = False, flags: int = 0) -> bytes:
    """A TNS packet: 2-byte length (and a zero checksum), or 4-byte length once v315+ was accepted."""
    size = 8 + len(body)
    head = struct.pack(">I", size) if large else struct.pack(">HH", size, 0)
    return head + bytes([ptype, flags]) + b"\x00\x00" + body


def data(payload: bytes, large: bool = True, data_flags: int = 0) -> bytes:
    return packet(DATA, struct.pack(">H", data_flags) + payload, large)


def connect_body(descriptor: bytes, version: int = 319, inline: bool | None = None) -> bytes:
    """CONNECT fields (74-byte packet before the descriptor, as python-oracledb lays it out)."""
    body = struct.pack(">HHHHHHHHHHIBB", version, 300, 0x0401, 8192, 8192, 0x4F98, 0, 1, len(descriptor), 74, 0,
                       0x84, 0x84)
    body += bytes(24) + struct.pack(">IIII", 8192, 8192, 0, 1)
    return body + (descriptor if inline or (inline is None and len(descriptor) <= 230) else b"")


def connect(descriptor: bytes, version: int = 319) -> bytes:
    """CONNECT, and the DATA packet carrying a descriptor longer than 230 bytes."""
    inline = len(descriptor) <= 230
    out = packet(CONNECT, connect_body(descriptor, version, inline))
    if not inline:
        out += packet(DATA, b"\x00\x00" + descriptor)
    return out


def accept(version: int = 319, sdu: int = 8192, options: int = 0x0001, flags2: int = 0) -> bytes:
    body = struct.pack(">HHHHHHHBB", version, options, min(sdu, 0xFFFF), 0xFFFF, 1, 0, 0, 0x01, 0x01)
    body += bytes(8) + struct.pack(">I", sdu)
    if version >= 318:
        body += bytes(5) + struct.pack(">I", flags2)
    body = body[:10] + struct.pack(">H", 8 + len(body)) + body[12:]  # accept data offset: just past the fields
    return packet(ACCEPT, body)


def refuse(text: bytes, user_reason: int = 34, system_reason: int = 0) -> bytes:
    return packet(REFUSE, struct.pack(">BBH", user_reason, system_reason, len(text)) + text)


def redirect(text: bytes, inline: bool = False) -> bytes:
    """REDIRECT: its data length, and the data in a DATA packet after it (or inline)."""
    if inline:
        return packet(REDIRECT, struct.pack(">H", len(text)) + text)
    return packet(REDIRECT, struct.pack(">H", len(text))) + packet(DATA, b"\x00\x00" + text)


def resend() -> bytes:
    return packet(RESEND, b"")


def marker(kind: int, large: bool = True) -> bytes:
    return packet(MARKER, bytes([1, 0, kind]), large)


# -- TTC values -------------------------------------------------------------------------------------


def ub(value: int) -> bytes:
    """Oracle's variable-length unsigned integer: a length byte, then big-endian bytes."""
    if value == 0:
        return b"\x00"
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(raw)]) + raw


def chunked(value: bytes) -> bytes:
    """Bytes with a length byte, or 0xFE and chunks for 253 bytes and more."""
    if len(value) <= 252:
        return bytes([len(value)]) + value
    out = b"\xfe"
    for i in range(0, len(value), 32767):
        piece = value[i:i + 32767]
        out += ub(len(piece)) + piece
    return out + b"\x00"


def text(value: bytes) -> bytes:
    """A string with its length twice (ub4, then the bytes with their own length)."""
    return ub(len(value)) + (chunked(value) if value else b"")
