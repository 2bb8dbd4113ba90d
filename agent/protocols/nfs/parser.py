"""Sans-IO ONC-RPC over TCP: record marking (RFC 5531 §11) and the call/reply headers.

A record is one or more fragments, each behind a 4-byte marker (last-
fragment bit + 31-bit length).  Only the head of each record (the first
`HEAD_LIMIT` bytes) is kept: that is all the call/reply headers and the
NFS fields need, so a 1 MiB READ reply costs 64 KiB at most, and its
full size is still counted.  A record start must look like RPC; when it
does not (a capture that began mid-record, garbage), `ParseError` is
raised and the session resets the framer: it then scans forward for a
marker followed by a plausible call or reply header.  A gap inside a
fragment keeps sync (the length says where the next marker is); a gap
across a marker loses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.nfs.xdr import Xdr, XdrError
from agent.protocols.stream import CarryCompleted, Gap, in_sync, lost_sync
from agent.transport.types import Direction

HEAD_LIMIT = 64 * 1024  # bytes of each record kept for decoding
MAX_FRAGMENTS = 4096  # fragments in one record
MAX_FRAGMENT_LEN = 64 * 1024 * 1024  # a longer fragment is taken as garbage, not RPC
RESYNC_WINDOW = 64 * 1024  # bytes searched for a record start before older ones are dropped
MIN_HEADER = 12  # xid, msg_type and rpcvers/reply_stat: enough to tell RPC from garbage

RPC_CALL = 0
RPC_REPLY = 1
RPC_VERSION = 2
MSG_ACCEPTED = 0
MSG_DENIED = 1

_LAST = 0x80000000
_SIZE_MASK = 0x7FFFFFFF
# msg_type CALL + rpcvers 2, and msg_type REPLY + MSG_ACCEPTED/MSG_DENIED, 8 bytes into a record.
_RESYNC_PATTERNS = (b"\x00\x00\x00\x00\x00\x00\x00\x02", b"\x00\x00\x00\x01\x00\x00\x00\x00",
                    b"\x00\x00\x00\x01\x00\x00\x00\x01")


@dataclass(frozen=True, slots=True)
class Record:
    head: bytes  # the first HEAD_LIMIT bytes of the record (less when a gap cut it)
    size: int  # payload bytes of all fragments, markers excluded
    fragments: int
    ts_ns: int  # when its first byte arrived


@dataclass(frozen=True, slots=True)
class RpcCall:
    xid: int
    program: int
    version: int
    procedure: int
    cred_flavor: int
    cred: bytes
    body: bytes  # the record head; the procedure's arguments start at `args_at`
    args_at: int
    size: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class RpcReply:
    xid: int
    accepted: bool  # MSG_ACCEPTED; else MSG_DENIED
    stat: int  # accept_stat, or reject_stat when denied
    body: bytes  # the record head; the procedure's results start at `results_at`
    results_at: int
    size: int
    ts_ns: int


def _plausible_start(head: bytes | bytearray) -> bool:
    """Do the first MIN_HEADER bytes of a record look like an RPC call or reply?"""
    msg_type = int.from_bytes(head[4:8], "big")
    word = int.from_bytes(head[8:12], "big")
    if msg_type == RPC_CALL:
        return word == RPC_VERSION
    return msg_type == RPC_REPLY and word in (MSG_ACCEPTED, MSG_DENIED)


class RecordFramer:
    """One direction's record marking: bytes in, whole records (their heads) out."""

    __slots__ = ("_checked", "_frag_left", "_fragments", "_frozen", "_head", "_last", "_searched", "_size", "_ts",
                 "buf", "direction", "dropped_bytes", "synced")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.synced = True
        self.dropped_bytes = 0  # skipped while looking for a record start
        # A partial fragment marker, or (out of sync) the bytes searched for a record start; payload streams by.
        self.buf = ReceiveBuffer("nfs", direction, RESYNC_WINDOW)
        self._searched = 0  # stream offset up to which the resync search has looked
        self._reset_record()

    def _reset_record(self) -> None:
        self._frag_left = -1  # -1: a fragment marker comes next
        self._last = False
        self._head = bytearray()
        self._frozen = False  # a gap cut the head: nothing more is appended
        self._checked = False
        self._size = 0
        self._fragments = 0
        self._ts = 0

    @property
    def buffered(self) -> int:
        return self.buf.buffered + len(self._head)

    @property
    def mid_record(self) -> bool:
        return self.synced and (self._fragments > 0 or self.buf.unread > 0)

    def _fail(self, reason: str) -> ParseError:
        return ParseError("nfs", self.direction, self._size, reason)

    def reset(self) -> None:
        """Drop the record in progress and look for the next record start."""
        self.synced = False
        self.buf.clear()
        self._reset_record()

    def feed(self, data: bytes, ts_ns: int) -> list[Record]:
        """The records `data` completes, in order; ParseError when a record start is not RPC (it carries the
        records completed before it, `error.messages`)."""
        out: list[Record] = []
        rb = self.buf
        rb.feed(data, ts_ns)
        if not self.synced and not self._resync():
            return out
        with CarryCompleted(out):
            while rb.pos < len(rb.data):
                if self._frag_left < 0:
                    marker = rb.take(4)
                    if marker is None:
                        break
                    word = int.from_bytes(marker, "big")
                    self._start_fragment(word & _SIZE_MASK, bool(word & _LAST), ts_ns)
                    if self._frag_left == 0 and self._last:
                        out.append(self._finish())
                    continue
                self._fragment_bytes(out)
        return out

    def _fragment_bytes(self, out: list[Record]) -> None:
        """Payload of the current fragment: the record's head is kept, the rest counted."""
        rb = self.buf
        pos = rb.pos
        take_n = min(self._frag_left, len(rb.data) - pos)
        room = HEAD_LIMIT - len(self._head)
        if room > 0 and not self._frozen:
            self._head += rb.data[pos:pos + min(take_n, room)]
        self._size += take_n
        self._frag_left -= take_n
        rb.pos = pos + take_n
        if not self._checked and len(self._head) >= MIN_HEADER:
            self._checked = True
            if not _plausible_start(self._head):
                raise self._fail("record does not start with an RPC call or reply header")
        if self._frag_left == 0:
            self._frag_left = -1
            if self._last:
                out.append(self._finish())

    def _start_fragment(self, length: int, last: bool, ts_ns: int) -> None:
        if self._fragments == 0:
            self._ts = ts_ns
            if length > MAX_FRAGMENT_LEN:
                raise self._fail(f"fragment of {length} bytes is over the limit of {MAX_FRAGMENT_LEN}")
        self._fragments += 1
        if self._fragments > MAX_FRAGMENTS:
            raise self._fail(f"record of more than {MAX_FRAGMENTS} fragments")
        self._frag_left = length
        self._last = last

    def _finish(self) -> Record:
        record = Record(bytes(self._head), self._size, self._fragments, self._ts)
        self._reset_record()
        self._frag_left = -1
        return record

    def gap(self, nbytes: int, ts_ns: int) -> Gap[Record]:
        """`nbytes` were lost: in sync when they fall inside the current fragment (the record it completed)."""
        rb = self.buf
        if not self.synced:
            rb.clear()
            return lost_sync()
        if 0 < nbytes <= self._frag_left and not rb.unread:
            self._size += nbytes
            self._frag_left -= nbytes
            self._frozen = True
            rb.skip_unbuffered(nbytes)
            if self._frag_left == 0:
                self._frag_left = -1
                if self._last:
                    return in_sync(self._finish())
            return in_sync()
        self.reset()
        return lost_sync()

    def _resync(self) -> bool:
        """Search the unread bytes for a record start: True once found (the read position is there)."""
        rb = self.buf
        scan, pos = rb.data, rb.pos
        # Earlier bytes were searched already: only patterns ending in the new ones can be new.
        first = max(pos + 8, self._searched - rb.base - len(_RESYNC_PATTERNS[0]) + 1)
        self._searched = rb.base + len(scan)
        best = -1
        for pattern in _RESYNC_PATTERNS:
            at = scan.find(pattern, first)
            while at >= 0:
                start = at - 8
                length = int.from_bytes(scan[start:start + 4], "big") & _SIZE_MASK
                if MIN_HEADER <= length <= MAX_FRAGMENT_LEN:
                    if best < 0 or start < best:
                        best = start
                    break
                at = scan.find(pattern, at + 1)
        if best >= 0:
            self.dropped_bytes += best - pos
            rb.pos = best
            self.synced = True
            return True
        keep = len(_RESYNC_PATTERNS[0]) + 7
        if len(scan) - pos > RESYNC_WINDOW:
            self.dropped_bytes += len(scan) - pos - keep
            rb.pos = len(scan) - keep
        return False


def decode(record: Record, direction: Direction) -> RpcCall | RpcReply:
    """The RPC header of a record; ParseError when it is malformed."""
    xdr = Xdr(record.head)
    try:
        xid = xdr.uint()
        msg_type = xdr.uint()
        if msg_type == RPC_CALL:
            rpc_version = xdr.uint()
            if rpc_version != RPC_VERSION:
                raise XdrError(8, f"RPC version {rpc_version}, not {RPC_VERSION}")
            program = xdr.uint()
            version = xdr.uint()
            procedure = xdr.uint()
            cred_flavor = xdr.uint()
            cred = xdr.dynamic_opaque()
            xdr.uint()  # verifier flavor
            xdr.dynamic_opaque()  # verifier body
            return RpcCall(xid, program, version, procedure, cred_flavor, cred, record.head, xdr.pos,
                           record.size, record.ts_ns)
        if msg_type == RPC_REPLY:
            reply_stat = xdr.uint()
            if reply_stat == MSG_ACCEPTED:
                xdr.uint()  # verifier flavor
                xdr.dynamic_opaque()  # verifier body
                return RpcReply(xid, True, xdr.uint(), record.head, xdr.pos, record.size, record.ts_ns)
            if reply_stat == MSG_DENIED:
                return RpcReply(xid, False, xdr.uint(), record.head, xdr.pos, record.size, record.ts_ns)
            raise XdrError(8, f"reply status {reply_stat} is neither accepted nor denied")
        raise XdrError(4, f"message type {msg_type} is neither call nor reply")
    except XdrError as exc:
        raise ParseError("nfs", direction, exc.offset, exc.reason) from None
