"""One direction's byte stream cut into MySQL packets, optionally through the compressed protocol.

`Framer` joins 16 MiB continuation packets into one logical packet and
keeps at most the prefix its caller asks for (the rest of a large packet is
skipped as it streams past, never buffered).  Its input buffer holds one
feed plus at most a partial header.

`Inflater` undoes the compressed protocol: 7-byte frame headers
(compressed length, sequence, uncompressed length; 0 = stored), zlib or
zstd payloads.  It hands out at most `INFLATE_CHUNK` bytes per call and
refuses a frame that inflates past its declared length, so a zip bomb costs
bounded memory and CPU.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any

from agent.protocols.mysql.wire import MAX_PACKET

INFLATE_CHUNK = 256 << 10
MAX_ZSTD_FRAME = 1 << 24  # zstd frames are buffered whole: a frame is at most 16 MiB by the protocol


class FrameError(Exception):
    """Malformed framing; the parser turns it into ParseError."""


class Packet:
    """One logical packet: first sequence number, kept payload prefix, full payload length, wire bytes."""

    __slots__ = ("length", "payload", "seq", "ts_ns", "wire")

    def __init__(self, seq: int, payload: bytes, length: int, wire: int, ts_ns: int) -> None:
        self.seq = seq
        self.payload = payload
        self.length = length
        self.wire = wire
        self.ts_ns = ts_ns

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.length


class _Partial:
    __slots__ = ("keep", "kept", "left", "length", "more", "seq", "ts_ns", "wire")

    def __init__(self, seq: int, keep: int, length: int, ts_ns: int) -> None:
        self.seq = seq
        self.keep = keep
        self.kept = bytearray()
        self.length = length
        self.left = length
        self.more = length == MAX_PACKET
        self.wire = 4 + length
        self.ts_ns = ts_ns


KeepFn = Callable[[int, int], int]


class Framer:
    """Logical packets out of a byte stream; `keep(first_byte, length)` says how much payload to hold."""

    __slots__ = ("_boundary", "_buf", "_cur", "_off", "_prev_ts", "_ts", "bytes_skipped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._off = 0
        self._cur: _Partial | None = None
        self._ts = 0
        self._prev_ts = 0
        self._boundary = 0
        self.bytes_skipped = 0

    def push(self, data: bytes | bytearray, ts_ns: int) -> None:
        buf = self._buf
        if self._off:
            if self._off >= self._boundary:
                self._prev_ts = self._ts  # what is left came with the last push
            del buf[:self._off]
            self._off = 0
        if not buf:
            self._prev_ts = ts_ns
        self._boundary = len(buf)
        buf += data
        self._ts = ts_ns

    def reset(self) -> None:
        self._buf.clear()
        self._off = 0
        self._cur = None
        self._boundary = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._off + (len(self._cur.kept) if self._cur is not None else 0)

    @property
    def idle(self) -> bool:
        """No partial packet and no buffered bytes."""
        return self._cur is None and self._off >= len(self._buf)

    @property
    def in_packet(self) -> bool:
        return self._cur is not None or self._off < len(self._buf)

    def peek(self) -> bytes:
        return bytes(self._buf[self._off:])

    def drop_buffered(self) -> None:
        """Discard what is buffered (resynchronising at the next feed)."""
        self.reset()

    def next(self, keep: KeepFn) -> Packet | None:
        buf = self._buf
        cur = self._cur
        while True:
            off = self._off
            if cur is None:
                avail = len(buf) - off
                if avail < 4:
                    return None
                length = buf[off] | buf[off + 1] << 8 | buf[off + 2] << 16
                if length and avail < 5:
                    return None
                ts = self._prev_ts if off < self._boundary else self._ts
                limit = keep(buf[off + 4] if length else -1, length)
                if length < MAX_PACKET and avail >= 4 + length and limit >= length:
                    self._off = off + 4 + length
                    return Packet(buf[off + 3], bytes(buf[off + 4:off + 4 + length]), length, 4 + length, ts)
                cur = self._cur = _Partial(buf[off + 3], limit, length, ts)
                off += 4
            take = min(cur.left, len(buf) - off)
            if take:
                room = cur.keep - len(cur.kept)
                if room > 0:
                    cur.kept += buf[off:off + min(take, room)]
                if take > room:
                    self.bytes_skipped += take - max(room, 0)
                off += take
                cur.left -= take
            self._off = off
            if cur.left:
                return None
            if cur.more:
                if len(buf) - off < 4:
                    return None
                length = buf[off] | buf[off + 1] << 8 | buf[off + 2] << 16
                self._off = off + 4
                cur.left = length
                cur.length += length
                cur.wire += 4 + length
                cur.more = length == MAX_PACKET
                continue
            self._cur = None
            return Packet(cur.seq, bytes(cur.kept), cur.length, cur.wire, cur.ts_ns)


class Inflater:
    """Compressed-protocol frames in, plain packet bytes out (bounded per call)."""

    __slots__ = ("_buf", "_declared", "_left", "_produced", "_stored", "_zbuf", "_zobj", "_zstd", "frames")

    def __init__(self, zstd: bool = False) -> None:
        self._buf = bytearray()
        self._zstd = zstd
        self._left = 0  # compressed bytes of the current frame still to read
        self._declared = 0
        self._produced = 0
        self._stored = False
        self._zobj: Any = None
        self._zbuf: bytearray | None = None
        self.frames = 0

    def push(self, data: bytes | bytearray) -> None:
        self._buf += data

    def reset(self) -> None:
        self._buf.clear()
        self._left = 0
        self._zobj = None
        self._zbuf = None

    @property
    def buffered(self) -> int:
        return len(self._buf) + (len(self._zbuf) if self._zbuf is not None else 0)

    @property
    def idle(self) -> bool:
        return not self._buf and not self._left

    def pull(self) -> bytes:
        """Up to INFLATE_CHUNK plain bytes; b"" when more input is needed."""
        buf = self._buf
        while True:
            if not self._left and self._zobj is None and self._zbuf is None:
                if len(buf) < 7:
                    return b""
                clen = buf[0] | buf[1] << 8 | buf[2] << 16
                ulen = buf[4] | buf[5] << 8 | buf[6] << 16
                del buf[:7]
                self.frames += 1
                self._left = clen
                self._declared = ulen
                self._produced = 0
                self._stored = ulen == 0
                if not clen:
                    continue
                if not self._stored:
                    if self._zstd:
                        self._zbuf = bytearray()
                    else:
                        self._zobj = zlib.decompressobj()
            if self._stored:
                take = min(self._left, len(buf), INFLATE_CHUNK)
                if not take:
                    return b""
                out = bytes(buf[:take])
                del buf[:take]
                self._left -= take
                return out
            if self._zbuf is not None:
                return self._pull_zstd()
            return self._pull_zlib()

    def _pull_zlib(self) -> bytes:
        buf = self._buf
        zobj = self._zobj
        take = min(self._left, len(buf))
        room = self._declared - self._produced + 1  # one byte more than declared reveals a lie
        try:
            if take:
                out = zobj.decompress(bytes(buf[:take]), min(INFLATE_CHUNK, room))
                consumed = take - len(zobj.unconsumed_tail)
                del buf[:consumed]
                self._left -= consumed
                # What zlib did not take stays in `buf`; the unconsumed tail is dropped from zobj.
            else:
                out = zobj.decompress(b"", min(INFLATE_CHUNK, room)) if not self._left else b""
        except zlib.error as exc:
            self._zobj = None
            self._left = 0
            raise FrameError(f"zlib: {exc}") from None
        self._produced += len(out)
        if self._produced > self._declared:
            self._zobj = None
            raise FrameError(f"frame inflates past its declared {self._declared} bytes")
        if not self._left and not out:
            if self._produced != self._declared:
                self._zobj = None
                raise FrameError(f"frame inflated to {self._produced} bytes, {self._declared} declared")
            self._zobj = None
            return self.pull() if self._buf else b""
        if not self._left and self._produced == self._declared:
            self._zobj = None
        return out

    def _pull_zstd(self) -> bytes:
        import zstandard

        zbuf = self._zbuf
        assert zbuf is not None
        take = min(self._left, len(self._buf))
        zbuf += self._buf[:take]
        del self._buf[:take]
        self._left -= take
        if self._left:
            return b""
        self._zbuf = None
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bytes(zbuf)))
            out = reader.read(self._declared + 1)
        except zstandard.ZstdError as exc:
            raise FrameError(f"zstd: {exc}") from None
        if len(out) != self._declared:
            raise FrameError(f"zstd frame inflated to {len(out)} bytes, {self._declared} declared")
        return out
