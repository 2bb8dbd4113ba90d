"""The spool's bytes on disk: segment files of framed, checksummed records that a reader can resynchronise on.

A segment starts with SEGMENT_HEADER (16 bytes: a name and the format
version).  Each record is

    RECORD_MAGIC (4 bytes) | u32 payload length | u32 crc32(payload) | payload

and a payload is `u16 id length, u16 index length, u16 type length, id, index,
type, event JSON`.

Why the magic: one damaged byte must cost only the record that holds it.  A
record whose magic, length or CRC does not check is skipped by searching for
the next magic whose record does check.  The magic starts with 0xFE, a byte
that UTF-8 never contains, so it does not occur inside event JSON; where it
occurs by chance elsewhere, the CRC still has to match before a record is
believed.  A wrong length makes the CRC cover the wrong bytes, so it is caught
by the same check.

Segments written before this format existed ("legacy": no header, records
`u32 length, u32 crc32, payload` without a magic) are still read, in order,
up to their first damaged record.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.publisher.types import EncodedEvent

SEGMENT_HEADER = b"pktbeat-spool\x00\x02\n"  # name, NUL, format version 2, newline
RECORD_MAGIC = b"\xfePKr"
MAX_RECORD = 64 * 1024 * 1024  # a longer length can only be damage
_RECORD = struct.Struct("<III")  # magic (as a u32), length, crc32
_LEGACY = struct.Struct("<II")  # length, crc32
_META = struct.Struct("<HHH")
_MAGIC_U32 = _RECORD.unpack(RECORD_MAGIC + bytes(8))[0]
RECORD_OVERHEAD = _RECORD.size
WINDOW = 1024 * 1024  # bytes read at a time when scanning or reading

# Reads `length` bytes of a segment's data at `offset` (fewer at its end).
Source = Callable[[int, int], bytes]


def encode(event: EncodedEvent) -> bytes:
    ident = event.event_id.encode()
    index = (event.index or "").encode()
    kind = event.type.encode()
    payload = b"".join((_META.pack(len(ident), len(index), len(kind)), ident, index, kind, event.data))
    return _RECORD.pack(_MAGIC_U32, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes | memoryview) -> EncodedEvent:
    id_len, index_len, type_len = _META.unpack_from(payload)
    pos = _META.size
    ident = bytes(payload[pos:pos + id_len]).decode()
    pos += id_len
    index = bytes(payload[pos:pos + index_len]).decode()
    pos += index_len
    kind = bytes(payload[pos:pos + type_len]).decode()
    pos += type_len
    return EncodedEvent(bytes(payload[pos:]), ident, index or None, kind)


@dataclass
class Split:
    """What `split()` found in a window of bytes."""

    payloads: list[memoryview] = field(default_factory=list)
    consumed: int = 0  # bytes of whole, valid records
    damaged: bool = False  # stopped at a record that does not check (at `consumed`)


def split(data: bytes, limit: int, legacy: bool = False) -> Split:
    """Whole records at the start of `data` (at most `limit`); stops at damage or at an incomplete record."""
    out = Split()
    view = memoryview(data)
    offset = 0
    size = len(data)
    header = _LEGACY if legacy else _RECORD
    crc32 = zlib.crc32
    while len(out.payloads) < limit and offset + header.size <= size:
        if legacy:
            length, crc = _LEGACY.unpack_from(data, offset)
        else:
            magic, length, crc = _RECORD.unpack_from(data, offset)
            if magic != _MAGIC_U32:
                out.damaged = True
                break
        if length > MAX_RECORD:
            out.damaged = True
            break
        end = offset + header.size + length
        if end > size:
            break  # needs more data (or the segment ends with a cut record: the caller knows which)
        payload = view[offset + header.size:end]
        if crc32(payload) != crc:
            out.damaged = True
            break
        out.payloads.append(payload)
        offset = end
    out.consumed = offset
    return out


def record_at(source: Source, offset: int, end: int, legacy: bool = False) -> int | None:
    """The length of the valid record at `offset` (framing and CRC), or None."""
    header = _LEGACY if legacy else _RECORD
    head = source(offset, header.size)
    if len(head) < header.size:
        return None
    if legacy:
        length, crc = _LEGACY.unpack(head)
    else:
        magic, length, crc = _RECORD.unpack(head)
        if magic != _MAGIC_U32:
            return None
    if length > MAX_RECORD or offset + header.size + length > end:
        return None
    payload = source(offset + header.size, length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return header.size + length


def resync(source: Source, start: int, end: int) -> int:
    """The offset of the first valid record after `start` (damage begins at `start`); `end` when none."""
    pos = start + 1
    while pos < end:
        chunk = source(pos, min(WINDOW, end - pos))
        if not chunk:
            break
        at = chunk.find(RECORD_MAGIC)
        while at >= 0:
            if record_at(source, pos + at, end) is not None:
                return pos + at
            at = chunk.find(RECORD_MAGIC, at + 1)
        if len(chunk) < len(RECORD_MAGIC):
            break
        pos += len(chunk) - (len(RECORD_MAGIC) - 1)  # a magic across the chunk edge is found next time
    return end


def magics_between(source: Source, start: int, end: int) -> int:
    """How many record starts a damaged region held (its first record's magic may itself be damaged)."""
    count = 0
    pos = start
    while pos < end:
        chunk = source(pos, min(WINDOW, end - pos))
        if not chunk:
            break
        count += chunk.count(RECORD_MAGIC)
        pos += len(chunk)
    return max(1, count)


@dataclass
class Damage:
    start: int
    end: int
    records: int  # records lost in it (an estimate: record starts found in it, at least one)


@dataclass
class Scan:
    """A whole segment checked at start-up."""

    legacy: bool = False
    data_start: int = len(SEGMENT_HEADER)
    records: int = 0  # valid records
    damage: list[Damage] = field(default_factory=list)
    boundaries_hit: bool = False  # `probe` was the start of a record, of a damaged region, or the end

    @property
    def lost(self) -> int:
        return sum(d.records for d in self.damage)


def scan(source: Source, size: int, probe: int = -1) -> Scan:
    """Count the valid records of a segment of `size` bytes and locate its damage.

    `probe`, when given, is an offset (an acknowledged position); whether it is
    the start of a record, of a damaged region, or the end is `boundaries_hit`.
    """
    result = Scan()
    if source(0, len(SEGMENT_HEADER)) != SEGMENT_HEADER and _looks_legacy(source, size):
        result.legacy = True
        result.data_start = 0
    legacy = result.legacy
    overhead = _LEGACY.size if legacy else _RECORD.size
    offset = result.data_start
    hit = probe in (0, offset, size)
    while offset < size:
        window = source(offset, min(WINDOW, size - offset))
        found = split(window, 1 << 30, legacy)
        if not hit and offset <= probe <= offset + found.consumed:
            at = offset
            for payload in found.payloads:
                hit = hit or at == probe
                at += overhead + len(payload)
            hit = hit or at == probe
        result.records += len(found.payloads)
        offset += found.consumed
        if offset >= size:
            break
        if not found.damaged and found.consumed == 0:
            length = record_at(source, offset, size, legacy)  # one record longer than the window
            if length is not None:
                result.records += 1
                offset += length
                hit = hit or offset == probe
                continue
        elif not found.damaged:
            continue  # the window ended inside a record: the next window starts with it
        next_good = size if legacy else resync(source, offset, size)
        result.damage.append(Damage(offset, next_good, magics_between(source, offset, next_good)))
        hit = hit or probe in (offset, next_good)
        offset = next_good
    result.boundaries_hit = hit
    return result


def _looks_legacy(source: Source, size: int) -> bool:
    return size >= _LEGACY.size and record_at(source, 0, size, legacy=True) is not None
