"""Sans-IO DNS decoding: whole messages (RFC 1035 wire format with EDNS0) and TCP framing.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

`parse_message` turns one message into a frozen `DnsMessage` or raises
`ParseError`; it accepts exactly what Packetbeat accepts, plus one stricter
rule: compression pointers must point backwards.  Notably, like Packetbeat:

- the question section must be complete, but the record sections may hold
  fewer records than the header counts (a message cut at a record boundary);
- bytes after the last record are ignored;
- a message with a header and nothing else is not DNS.

`TcpFramer` splits one direction of a TCP stream into messages by their
2-byte length prefix, whatever the segmentation, and can skip the rest of a
message after a gap so parsing resumes on the next one.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final, NamedTuple

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.dns import names as N
from agent.protocols.dns import rdata
from agent.protocols.dns.domain import NameCursor
from agent.protocols.errors import ParseError
from agent.protocols.stream import Gap, in_sync, lost_sync
from agent.transport.types import Direction

# Messages are immutable typed records (NamedTuple rather than frozen dataclasses:
# building one per packet costs a fifth as much).

HEADER_LEN: Final = 12
MAX_MESSAGE: Final = 65535  # the largest length a TCP prefix can announce
# Header words are read byte by byte rather than with struct: typed, mypyc keeps them native numbers.
_T_A: Final = N.T_A
_T_OPT: Final = N.T_OPT


class Question(NamedTuple):
    name: str  # presentation form without the trailing dot; the root is "."
    qtype: int
    qclass: int


class Record(NamedTuple):
    name: str  # presentation form without the trailing dot
    rtype: int
    rclass: int
    ttl: int
    # Packetbeat's fields for the RDATA ("data" plus per-type extras); None for
    # records Packetbeat leaves out of the lists (OPT, an A/AAAA without address).
    fields: dict[str, Any] | None


class Edns(NamedTuple):
    """The OPT pseudo-record (RFC 6891): its header fields and raw options."""

    udp_size: int
    ext_rcode: int  # the upper 8 bits of the 12-bit RCODE, already shifted left by 4
    version: int
    do: bool
    options: tuple[tuple[int, bytes], ...]


class DnsMessage(NamedTuple):
    id: int
    flags: int  # the header's second word: QR, OPCODE, AA, TC, RD, RA, Z, AD, CD, RCODE
    rcode: int  # with the EDNS extended bits
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authorities: tuple[Record, ...]
    additionals: tuple[Record, ...]  # OPT included, as on the wire
    edns: Edns | None  # the last OPT of the additional section
    length: int  # bytes on the wire (for TCP, the caller adds the 2-byte prefix)

    @property
    def response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def authoritative(self) -> bool:
        return bool(self.flags & 0x0400)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def recursion_available(self) -> bool:
        return bool(self.flags & 0x0080)

    @property
    def authentic_data(self) -> bool:
        return bool(self.flags & 0x0020)

    @property
    def checking_disabled(self) -> bool:
        return bool(self.flags & 0x0010)


_NONE: tuple[Record, ...] = ()
# Record(...) and the others without the Python-level __new__ frame of a NamedTuple.
_new_record: Final = partial(tuple.__new__, Record)
_new_question: Final = partial(tuple.__new__, Question)
_new_message: Final = partial(tuple.__new__, DnsMessage)


def parse_message(data: bytes, direction: Direction | None = None) -> DnsMessage:
    """Decode one DNS message; raises ParseError when it is not one."""
    size = len(data)
    if size < HEADER_LEN:
        raise ParseError("dns", direction, 0, f"{size} bytes is shorter than the 12-byte header")
    ident = _u16(data, 0)
    flags = _u16(data, 2)
    qdcount = _u16(data, 4)
    ancount = _u16(data, 6)
    nscount = _u16(data, 8)
    arcount = _u16(data, 10)
    if size == HEADER_LEN:
        raise ParseError("dns", direction, size, "a header without question or records is not a DNS message")
    c = NameCursor(data, HEADER_LEN, size, direction)
    if qdcount == 1:
        questions: tuple[Question, ...] = (_question(c),)
    else:
        questions = tuple([_question(c) for _ in range(qdcount)])
    edns = None
    answers = _records(c, ancount)[0] if ancount else _NONE
    authorities = _records(c, nscount)[0] if nscount else _NONE
    if arcount:
        additionals, edns = _records(c, arcount)
    else:
        additionals = _NONE
    if not (questions or answers or authorities or additionals):
        raise c.error("no question and no records: not a DNS message")
    rcode = flags & 0xF
    if edns is not None:
        rcode |= edns.ext_rcode
    message: DnsMessage = _new_message((ident, flags, rcode, questions, answers, authorities, additionals, edns, size))
    return message


def _u16(data: bytes, at: int) -> int:
    return data[at] << 8 | data[at + 1]


def _question(c: NameCursor) -> Question:
    name = c.name()
    if len(name) > 1:
        name = name[:-1]
    # A question cut after its name or type is accepted (as Packetbeat does).
    pos = c.pos
    if c.end - pos >= 4:
        buf = c.data
        qtype = _u16(buf, pos)
        qclass = _u16(buf, pos + 2)
        c.pos = pos + 4
        question: Question = _new_question((name, qtype, qclass))
        return question
    qtype = 0 if c.at_end() else c.u16()
    qclass = 0 if c.at_end() else c.u16()
    return Question(name, qtype, qclass)


def _records(c: NameCursor, count: int) -> tuple[tuple[Record, ...], Edns | None]:
    out: list[Record] = []
    edns: Edns | None = None
    buf = c.data
    end = c.end
    rd = NameCursor(buf, 0, 0, c.direction, c.names)  # re-pointed at each record's RDATA
    for _ in range(count):
        if c.pos >= end:
            break  # the header counted more records than the message holds
        owner = c.name()
        if len(owner) > 1:
            owner = owner[:-1]
        pos = c.pos
        if pos + 10 > end:
            raise c.error("record header cut short")
        rtype = _u16(buf, pos)
        rclass = _u16(buf, pos + 2)
        ttl = _u16(buf, pos + 4) << 16 | _u16(buf, pos + 6)
        rdlength = _u16(buf, pos + 8)
        start = pos + 10
        stop = start + rdlength
        if stop > end:
            raise c.error(f"RDLENGTH {rdlength} runs past the end of the message")
        c.pos = stop
        fields: dict[str, Any] | None
        if rtype == _T_A and rdlength == 4:  # the common case, without the general machinery
            fields = {"data": f"{buf[start]}.{buf[start + 1]}.{buf[start + 2]}.{buf[start + 3]}"}
        else:
            rd.pos = start
            rd.end = stop
            if rtype == _T_OPT:
                edns = _edns(rd, rclass, ttl)
                fields = None
            else:
                fields = rdata.render(rd, rtype)
        out.append(_new_record((owner, rtype, rclass, ttl, fields)))
    return tuple(out), edns


def _edns(c: NameCursor, udp_size: int, ttl: int) -> Edns:
    options = []
    while not c.at_end():
        code = c.u16()
        options.append((code, c.take(c.u16())))
    return Edns(udp_size, (ttl >> 24) << 4, (ttl >> 16) & 0xFF, bool(ttl & 0x8000), tuple(options))


# -- DNS over TCP ----------------------------------------------------------------------

class TcpFramer:
    """One direction of DNS over TCP: messages behind 2-byte length prefixes.

    `feed` returns every message completed by the new bytes, with the time
    its first byte arrived.  A zero-length message comes out as b"".  At most
    one partial message (2 + 65535 bytes) is ever buffered.
    """

    __slots__ = ("_skip", "buf")

    def __init__(self) -> None:
        self.buf = ReceiveBuffer("dns", None, MAX_MESSAGE + 2)
        self._skip = 0  # bytes still to drop: the rest of a message cut by a gap

    @property
    def buffered(self) -> int:
        return self.buf.buffered

    @property
    def partial(self) -> int:
        """Bytes of an unfinished message held (0: at a message boundary)."""
        self.buf.release()
        return self.buf.unread + self._skip

    def feed(self, data: bytes, ts_ns: int) -> list[tuple[bytes, int]]:
        rb = self.buf
        if self._skip:
            data, self._skip = rb.skip_front(data, self._skip)
        out: list[tuple[bytes, int]] = []
        if not data or not rb.feed(data, ts_ns):
            return out
        buf = rb.data
        pos = rb.pos
        size = len(buf)
        while size - pos >= 2:
            end = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
            if end > size:
                rb.pos = pos
                rb.wait_for(end - pos)
                return out
            out.append((bytes(buf[pos + 2:end]), rb.ts_at(pos)))
            pos = end
        rb.pos = pos
        return out

    def gap(self, nbytes: int, ts_ns: int) -> Gap[bytes]:
        """`nbytes` were lost; the head of the message they cut short comes out.

        When the lost bytes fall inside a message whose length is known, the
        rest of it is skipped and framing resumes on the next message (in
        sync); otherwise the next byte that arrives is taken as a new message.
        """
        rb = self.buf
        rb.release()
        if self._skip:
            self._skip = max(0, self._skip - nbytes)
            return in_sync()
        if not rb.unread:
            return lost_sync()
        buf, pos = rb.data, rb.pos
        head = bytes(buf[pos + 2:])
        in_frame = False
        if rb.unread >= 2:
            missing = 2 + (buf[pos] << 8 | buf[pos + 1]) - rb.unread
            in_frame = nbytes <= missing
            self._skip = missing - nbytes if in_frame else 0
        rb.clear()
        return Gap([head], in_frame)

    def close(self) -> bytes | None:
        """The stream ended; returns the head of the message it cut short, or None."""
        rb = self.buf
        rb.release()
        head = bytes(rb.data[rb.pos + 2:]) if rb.unread else None
        if head is None and self._skip:
            head = b""
        rb.clear()
        self._skip = 0
        return head

    def reset(self) -> None:
        self.buf.clear()
        self._skip = 0
