"""Plausibility checks for a MySQL connection picked up mid-stream: does a segment start at a packet boundary?

Each returns True (trust it), False (not a boundary: skip the segment) or
None (too few bytes to tell yet: hold them and wait for more).
"""

from __future__ import annotations

from agent.protocols.mysql import wire


def looks_like_greeting(data: bytes) -> bool | None:
    if len(data) < 5:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if data[3] != 0 or data[4] != 10 or not 20 <= length < 1024:
        return False
    if data.find(b"\0", 5, 5 + 64) != -1:
        return True
    return None if len(data) < 5 + 64 else False


def plausible_login(data: bytes) -> bool | None:
    if len(data) >= 4 and data[3] != 1:
        return False
    if len(data) < 36:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if not 32 <= length <= 65536:
        return False
    caps = int.from_bytes(data[4:8], "little")
    return bool(caps & wire.CLIENT_PROTOCOL_41) and data[13:32] == bytes(19)


def plausible_plain(data: bytes, server: bool) -> bool | None:
    """A packet header at the start of `data`: a reply's first packet, or a command."""
    if len(data) < 5:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if length == 0:
        return False
    if server:
        return data[3] != 0  # a reply continues the command's sequence numbers
    if data[3] != 0 or data[4] not in wire.COMMAND_NAMES:
        return False
    end = 4 + length
    if end >= len(data) or length == wire.MAX_PACKET:
        return True
    # more bytes after the packet: pipelined commands also start with sequence 0 and a known command
    nxt = data[end:end + 5]
    if len(nxt) < 5:
        return None
    return nxt[3] == 0 and nxt[4] in wire.COMMAND_NAMES


def plausible_compressed(data: bytes, expect_seq: int) -> bool | None:
    if len(data) < 11:
        return None
    clen = data[0] | data[1] << 8 | data[2] << 16
    ulen = data[4] | data[5] << 8 | data[6] << 16
    if clen == 0:
        return False
    if ulen == 0:
        inner = data[7:7 + clen]
        if len(inner) < 5:
            return None if len(data) < 7 + clen else False
        length = inner[0] | inner[1] << 8 | inner[2] << 16
        if length + 4 != clen:
            return False
        if expect_seq == 1:
            return inner[3] == 1
        return inner[3] == 0 and inner[4] in wire.COMMAND_NAMES
    if data[7:11] == b"\x28\xb5\x2f\xfd":
        return True
    return data[7] == 0x78 and (data[7] << 8 | data[8]) % 31 == 0
