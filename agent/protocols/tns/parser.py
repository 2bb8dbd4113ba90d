"""Oracle TNS packets, one parser per direction.

A packet is an 8-byte header and a body.  The header's length is 2 bytes
(then a 2-byte packet checksum, zero in practice) until the listener
ACCEPTs protocol version 315 or later; from then on both directions use a
4-byte length with no checksum (Oracle 12c's "large SDU").  The session
switches both parsers with `set_large(True)`.  Picked up mid-connection,
a parser guesses per packet as Wireshark does: checksum bytes 0 (or the 4
some 10g clients set) mean the 2-byte form.

Packet types: CONNECT, ACCEPT, ACK, REFUSE, REDIRECT, DATA, NULL, ABORT,
RESEND, MARKER, ATTENTION, CONTROL, data descriptor (types 1-19; a data
descriptor's LOB data follows it, outside its declared length).  The body
of each is handed out as it is (`TnsPacket`); the session and the decoders
in `connect.py` and `ttc.py` read them.

Clients that negotiate out-of-band breaks send one byte of TCP urgent data
(a break) before a RESET marker; the byte sits in the stream between two
packets.  A single byte that makes the next 8 bytes a valid MARKER header
is skipped, with the note NOTE_OOB_BREAK.

After lost bytes or a malformed header there is no marker to find the next
packet by; senders write whole packets, so the parser waits for a segment
that starts with a plausible DATA or MARKER header.

Limits: a packet longer than MAX_PACKET is a ParseError (the SDU is at most
2 MiB).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.stream import Gap, lost_sync
from agent.transport.types import Direction

PROTOCOL = "tns"

CONNECT, ACCEPT, ACK, REFUSE, REDIRECT, DATA, NULL, ABORT = 1, 2, 3, 4, 5, 6, 7, 9
RESEND, MARKER, ATTENTION, CONTROL, DATA_DESCRIPTOR = 11, 12, 13, 14, 15
MAX_TYPE = 19
HEADER = 8
MAX_PACKET = 2 * 1024 * 1024 + HEADER  # the largest SDU Oracle negotiates is 2 MiB

TYPE_NAMES = {CONNECT: "CONNECT", ACCEPT: "ACCEPT", ACK: "ACK", REFUSE: "REFUSE", REDIRECT: "REDIRECT",
              DATA: "DATA", NULL: "NULL", ABORT: "ABORT", RESEND: "RESEND", MARKER: "MARKER",
              ATTENTION: "ATTENTION", CONTROL: "CONTROL", DATA_DESCRIPTOR: "DATA_DESCRIPTOR"}

NOTE_OOB_BREAK = "An out-of-band break byte between TNS packets was skipped"

# Big-endian readers (offset into a buffer), also used by the connect-packet decoder.
U16 = struct.Struct(">H").unpack_from
U32 = struct.Struct(">I").unpack_from


@dataclass(frozen=True, slots=True)
class TnsPacket:
    type: int
    flags: int
    body: bytes  # after the 8-byte header
    size: int  # bytes on the wire, header included
    ts_ns: int
    skipped_break: bool = False  # an out-of-band break byte came before it


def _header_length(data: bytes | bytearray, pos: int, large: bool | None) -> int:
    """The packet length a header at `pos` declares (the form guessed when `large` is None)."""
    if large is None:
        checksum = U16(data, pos + 2)[0]
        large = checksum not in (0, 4)
    return int(U32(data, pos)[0]) if large else int(U16(data, pos)[0])


def _plausible(data: bytes | bytearray, pos: int, large: bool | None) -> bool:
    ptype = data[pos + 4]
    return 1 <= ptype <= MAX_TYPE and HEADER <= _header_length(data, pos, large) <= MAX_PACKET


class PacketParser:
    """The TNS packets of one direction."""

    __slots__ = ("buffer", "direction", "large", "resync")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.buffer = ReceiveBuffer(PROTOCOL, direction, MAX_PACKET)
        self.large: bool | None = False  # None: unknown (picked up mid-stream), guessed per packet
        self.resync = False  # lost: wait for a segment that starts with a packet header

    def set_large(self, large: bool | None) -> None:
        self.large = large

    def feed(self, data: bytes, ts_ns: int) -> list[TnsPacket]:
        buf = self.buffer
        if self.resync:
            # Senders write whole packets: after lost bytes, a segment that starts with a header starts a packet.
            if len(data) < HEADER or data[4] not in (DATA, MARKER) or not _plausible(data, 0, self.large):
                return []
            self.resync = False
        if data and not buf.feed(data, ts_ns):
            return []  # still waiting for the rest of a large packet
        out: list[TnsPacket] = []
        while True:
            packet = self._next()
            if packet is None:
                return out
            out.append(packet)

    def _next(self) -> TnsPacket | None:
        buf = self.buffer
        data, pos = buf.data, buf.pos
        if len(data) - pos < HEADER:
            return None
        skipped = False
        if not _plausible(data, pos, self.large):
            # One byte of TCP urgent data (an out-of-band break) before a MARKER.
            if len(data) - pos < HEADER + 1:
                return None
            if data[pos + 5] != MARKER or not _plausible(data, pos + 1, self.large):
                raise self._error(pos, "not a TNS packet header")
            buf.pos = pos = pos + 1
            skipped = True
        length = _header_length(data, pos, self.large)
        if data[pos + 4] == DATA_DESCRIPTOR:
            # Its data (LOB/FILE chunks) follows the packet and is not counted in the header's length.
            if len(data) - pos < HEADER + 8:
                return None
            length += int(U32(data, pos + 12)[0])
            if length > MAX_PACKET:
                raise self._error(pos, f"data descriptor of {length} bytes")
        if len(data) - pos < length:
            buf.wait_for(length)
            if skipped:
                buf.pos -= 1  # read the break byte again with the complete packet
            return None
        ts = buf.ts_at(pos)
        body = bytes(data[pos + HEADER:pos + length])
        buf.pos = pos + length
        return TnsPacket(data[pos + 4], data[pos + 5], body, length + skipped, ts, skipped)

    def _error(self, pos: int, reason: str) -> ParseError:
        return self.buffer.error(reason, pos)

    def gap(self, nbytes: int, ts_ns: int) -> Gap[TnsPacket]:
        """Lost bytes: packet boundaries are gone for this direction until a segment starts with a header."""
        self.reset()
        return lost_sync()

    def reset(self) -> None:
        """After a ParseError or lost bytes: drop what is buffered; resynchronise at a segment that starts with a
        packet header."""
        self.buffer.clear()
        self.resync = True
