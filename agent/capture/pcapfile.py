"""Reading packet captures: classic pcap (any byte order, micro or nano) and pcapng.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Both formats are read here with streaming readers that keep exact
nanosecond timestamps (dpkt's readers return float seconds and trust every
length field) and refuse hostile lengths.  Both yield
`(ts_ns, frame, wire_len)` and end on a truncated file with a typed error
carrying what was read so far, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

# A record longer than this is corrupt: no link type carries frames this big.
MAX_RECORD_BYTES: Final = 256 * 1024
READ_CHUNK: Final = 1 << 20
PCAPNG_BATCH: Final = 256  # pcapng records per batch (blocks are read one by one)

_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microsecond, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanosecond
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"


def _u32le(buf: bytes, at: int) -> int:
    return buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)


def _u32be(buf: bytes, at: int) -> int:
    return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]


def _ns(sec: int, sub: int, scale: int) -> int:
    """sec * 10**9 + sub * scale, computed from sec's 15-bit halves: compiled (mypyc), a product is a machine
    operation only while both factors are below 2**30, and today's seconds are not."""
    return (((sec >> 15) * 1_000_000_000) << 15) + (sec & 0x7FFF) * 1_000_000_000 + sub * scale


class CaptureFileError(Exception):
    """A capture file that cannot be read (any further); `path` and `offset` say where."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} (at byte {offset})")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    path: str
    format: str  # "pcap" or "pcapng"
    linktype: int
    snaplen: int
    size: int


class CaptureReader:
    """Iterate over the packets of one capture file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._size = Path(self.path).stat().st_size
            head = self._file.read(24)
            if len(head) < 4:
                raise CaptureFileError(self.path, 0, "file too short to be a capture")
            magic = head[:4]
            if magic in _MAGICS:
                if len(head) < 24:
                    raise CaptureFileError(self.path, 0, "pcap file header is truncated")
                endian, self._ns_per_unit = _MAGICS[magic]
                _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack(endian + "HHiIII", head[4:24])
                self._little = endian == "<"
                self.info = CaptureInfo(self.path, "pcap", linktype & 0x0FFFFFFF, snaplen, self._size)
                self._ng: _PcapngState | None = None
            elif magic == _PCAPNG_MAGIC:
                self._file.seek(0)
                self._ng = _PcapngState()
                linktype = self._pcapng_header()
                self.info = CaptureInfo(self.path, "pcapng", linktype, 65535, self._size)
            else:
                raise CaptureFileError(self.path, 0, f"not a pcap or pcapng file (magic {magic.hex()})")
        except BaseException:
            self._file.close()
            raise
        self.offset = 0
        # A filtering reader (agent/capture/flowhash.py) yields only the frames its `_keep` accepts.
        self.filtering = False
        self.stopped = False  # set by a filtering reader to end the iteration early
        self.skipped_ns = 0  # the newest timestamp of the frames a filtering reader did not yield

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[tuple[int, bytes, int]]]:
        """The records in lists, one per large read: what replay loops over.  Resuming a generator per
        record costs more than cutting the record out, so the records of a read are cut in one call."""
        if self._ng is not None:
            return self._pcapng_batches()
        return self._pcap_batches()

    def _keep(self, buf: bytes, start: int, stop: int, ts_ns: int) -> bool:
        """Whether the frame buf[start:stop] is yielded (asked only when `filtering`): before it is copied."""
        return True

    def _pcap_batches(self) -> Iterator[list[tuple[int, bytes, int]]]:
        # Records are cut out of large reads: two small reads per packet cost more than parsing it.
        read = self._file.read
        offset = 24  # file offset of buf[0]
        buf = b""
        pos = 0
        while True:
            more = read(READ_CHUNK)
            if more:
                buf = buf[pos:] + more
                offset += pos
                pos = 0
                self.offset = offset  # per read, not per record: it only feeds progress reports
            elif pos >= len(buf):
                return
            batch, pos, error = self._cut_records(buf, pos, offset, not more)
            if batch:
                yield batch
            if error is not None:
                raise error
            if self.stopped or not more:
                return

    def _cut_records(self, buf: bytes, pos: int, offset: int, at_end: bool
                     ) -> tuple[list[tuple[int, bytes, int]], int, CaptureFileError | None]:
        """The whole records in buf[pos:], where the first one left starts, and the error that ends the file
        (a record cut short is one only `at_end`: otherwise the next read completes it)."""
        out: list[tuple[int, bytes, int]] = []
        little = self._little
        scale = self._ns_per_unit
        filtering = self.filtering
        end = len(buf)
        while True:
            if end - pos < 16:
                if at_end and pos < end:
                    return out, pos, CaptureFileError(self.path, offset + pos, "truncated record header at end of file")
                return out, pos, None
            # Byte by byte: compiled, these are machine operations, where a struct call boxes four ints.
            if little:
                sec = _u32le(buf, pos)
                sub = _u32le(buf, pos + 4)
                caplen = _u32le(buf, pos + 8)
                wire_len = _u32le(buf, pos + 12)
            else:
                sec = _u32be(buf, pos)
                sub = _u32be(buf, pos + 4)
                caplen = _u32be(buf, pos + 8)
                wire_len = _u32be(buf, pos + 12)
            if caplen > MAX_RECORD_BYTES:
                return out, pos, CaptureFileError(self.path, offset + pos,
                                                  f"record length {caplen} exceeds {MAX_RECORD_BYTES}")
            start = pos + 16
            stop = start + caplen
            if stop > end:
                if at_end:
                    return out, pos, CaptureFileError(self.path, offset + pos,
                                                      f"truncated record: {end - start} of {caplen} bytes present")
                return out, pos, None
            pos = stop
            ts_ns = _ns(sec, sub, scale)
            if filtering and not self._keep(buf, start, stop, ts_ns):
                if self.stopped:
                    return out, pos, None
                continue
            out.append((ts_ns, buf[start:stop], wire_len if wire_len > caplen else caplen))

    def _pcapng_batches(self) -> Iterator[list[tuple[int, bytes, int]]]:
        batch: list[tuple[int, bytes, int]] = []
        try:
            for record in self._iter_pcapng():
                batch.append(record)
                if len(batch) >= PCAPNG_BATCH:
                    yield batch
                    batch = []
        except CaptureFileError:
            if batch:  # the records before the error are still the file's
                yield batch
            raise
        if batch:
            yield batch

    # -- pcapng: section header, interface descriptions, enhanced/simple packet blocks --

    def _read_block(self) -> tuple[int, bytes] | None:
        assert self._ng is not None
        offset = self._file.tell()
        head = self._file.read(8)
        if not head:
            return None
        if len(head) < 8:
            raise CaptureFileError(self.path, offset, "truncated pcapng block header")
        endian = self._ng.endian
        if head[:4] == _PCAPNG_MAGIC:  # a section header sets the byte order for what follows
            bom = self._file.read(4)
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise CaptureFileError(self.path, offset, "bad pcapng byte-order magic")
            self._ng.endian = endian
            self._ng.interfaces.clear()
            self._file.seek(offset + 8)
        block_type, length = struct.unpack(endian + "II", head)
        if length < 12 or length % 4 or length > MAX_RECORD_BYTES + 4096:
            raise CaptureFileError(self.path, offset, f"pcapng block length {length} is invalid")
        body = self._file.read(length - 8)
        if len(body) < length - 8:
            raise CaptureFileError(self.path, offset, "truncated pcapng block")
        self.offset = offset + length
        return block_type, body[:-4]

    def _pcapng_header(self) -> int:
        block = self._read_block()
        if block is None or block[0] != 0x0A0D0D0A:
            raise CaptureFileError(self.path, 0, "pcapng file without a section header")
        # The link type is the first interface's; read ahead until it is described.
        assert self._ng is not None
        start = self._file.tell()
        while not self._ng.interfaces:
            block = self._read_block()
            if block is None:
                break
            if block[0] == 1:
                self._interface(block[1])
        self._file.seek(start)
        self._ng.interfaces.clear()
        return self._ng.first_linktype if self._ng.first_linktype is not None else 1

    def _interface(self, body: bytes) -> None:
        assert self._ng is not None
        endian = self._ng.endian
        if len(body) < 8:
            raise CaptureFileError(self.path, self.offset, "short interface description block")
        linktype = struct.unpack_from(endian + "H", body, 0)[0]
        ns_per_tick = 1000  # default resolution: microseconds
        pos = 8
        while pos + 4 <= len(body):
            code, size = struct.unpack_from(endian + "HH", body, pos)
            if code == 0:
                break
            if code == 9 and size >= 1:  # if_tsresol
                value = body[pos + 4]
                exponent = value & 0x7F
                if value & 0x80:
                    ns_per_tick = max(1, round(1e9 / (2**exponent))) if exponent <= 30 else 1
                else:
                    ns_per_tick = 10 ** (9 - exponent) if exponent <= 9 else 1
            pos += 4 + (size + 3) // 4 * 4
        self._ng.interfaces.append((linktype, ns_per_tick))
        if self._ng.first_linktype is None:
            self._ng.first_linktype = linktype

    def _iter_pcapng(self) -> Iterator[tuple[int, bytes, int]]:
        state = self._ng
        assert state is not None
        while True:
            block = self._read_block()
            if block is None:
                return
            block_type, body = block
            endian = state.endian
            if block_type == 1:
                self._interface(body)
            elif block_type == 6:  # enhanced packet block
                if len(body) < 20:
                    raise CaptureFileError(self.path, self.offset, "short enhanced packet block")
                iface, high, low, caplen, wire_len = struct.unpack_from(endian + "IIIII", body)
                if iface >= len(state.interfaces):
                    raise CaptureFileError(self.path, self.offset, f"packet on undescribed interface {iface}")
                if caplen > len(body) - 20:
                    raise CaptureFileError(self.path, self.offset, "packet longer than its block")
                ts_ns = ((high << 32) | low) * state.interfaces[iface][1]
                if self.filtering and not self._keep(body, 20, 20 + caplen, ts_ns):
                    if self.stopped:
                        return
                    continue
                yield ts_ns, body[20:20 + caplen], max(wire_len, caplen)
            elif block_type == 3:  # simple packet block: no timestamp
                if len(body) < 4 or not state.interfaces:
                    raise CaptureFileError(self.path, self.offset, "bad simple packet block")
                wire_len = struct.unpack_from(endian + "I", body)[0]
                stop = min(4 + wire_len, len(body))
                if self.filtering and not self._keep(body, 4, stop, 0):
                    if self.stopped:
                        return
                    continue
                yield 0, body[4:stop], wire_len
            elif block_type == 0x0A0D0D0A:
                continue


@dataclass(slots=True)
class _PcapngState:
    endian: str = "<"
    interfaces: list[tuple[int, int]] = field(default_factory=list)  # (linktype, ns per tick)
    first_linktype: int | None = None
