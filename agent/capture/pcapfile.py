"""Reading packet captures: classic pcap (any byte order, micro or nano) and pcapng.

Classic pcap is read here with a streaming reader that keeps nanosecond
timestamps and refuses hostile record lengths; pcapng goes through dpkt's
reader behind a guard that bounds every read.  Both yield
`(ts_ns, frame, wire_len)` and end on a truncated file with a typed error
carrying what was read so far, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dpkt

# A record longer than this is corrupt: no link type carries frames this big.
MAX_RECORD_BYTES = 256 * 1024

_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microsecond, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanosecond
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


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
                self._record = struct.Struct(endian + "IIII")
                self.info = CaptureInfo(self.path, "pcap", linktype & 0x0FFFFFFF, snaplen, self._size)
                self._ng: dpkt.pcapng.Reader | None = None
            elif magic == _PCAPNG_MAGIC:
                self._file.seek(0)
                try:
                    self._ng = dpkt.pcapng.Reader(_BoundedReads(self._file, self._size))
                except (ValueError, dpkt.Error, struct.error, _TooLarge) as exc:
                    raise CaptureFileError(self.path, 0, f"bad pcapng header: {exc}") from None
                self.info = CaptureInfo(self.path, "pcapng", self._ng.datalink(),
                                        getattr(self._ng, "snaplen", 65535) or 65535, self._size)
            else:
                raise CaptureFileError(self.path, 0, f"not a pcap or pcapng file (magic {magic.hex()})")
        except BaseException:
            self._file.close()
            raise
        self.offset = 0

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        if self._ng is not None:
            return self._iter_pcapng()
        return self._iter_pcap()

    def _iter_pcap(self) -> Iterator[tuple[int, bytes, int]]:
        read = self._file.read
        unpack = self._record.unpack
        scale = self._ns_per_unit
        offset = 24
        while True:
            head = read(16)
            if not head:
                return
            if len(head) < 16:
                raise CaptureFileError(self.path, offset, "truncated record header at end of file")
            sec, sub, caplen, wire_len = unpack(head)
            if caplen > MAX_RECORD_BYTES:
                raise CaptureFileError(self.path, offset, f"record length {caplen} exceeds {MAX_RECORD_BYTES}")
            frame = read(caplen)
            if len(frame) < caplen:
                raise CaptureFileError(self.path, offset,
                                       f"truncated record: {len(frame)} of {caplen} bytes present")
            offset += 16 + caplen
            self.offset = offset
            yield sec * 1_000_000_000 + sub * scale, frame, max(wire_len, caplen)

    def _iter_pcapng(self) -> Iterator[tuple[int, bytes, int]]:
        assert self._ng is not None
        iterator = iter(self._ng)
        while True:
            try:
                ts, frame = next(iterator)
            except StopIteration:
                return
            except (ValueError, dpkt.Error, struct.error, _TooLarge) as exc:
                raise CaptureFileError(self.path, self._file.tell(), f"bad pcapng block: {exc}") from None
            self.offset = self._file.tell()
            yield round(ts * 1e9), bytes(frame), len(frame)


class _TooLarge(Exception):
    pass


class _BoundedReads:
    """A file wrapper that refuses reads larger than what remains in the file."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self.name = getattr(file, "name", "<pcapng>")

    def read(self, n: int = -1) -> bytes:
        if n > MAX_RECORD_BYTES + 64 and n > self._size - self._file.tell():
            raise _TooLarge(f"block length {n} runs past the end of the file")
        return self._file.read(n)

    def seek(self, *args: int) -> int:
        return self._file.seek(*args)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()
