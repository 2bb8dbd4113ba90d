"""The symmetric flow hash that spreads packets over workers, and the replay shard of a frame.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

`flow_hash` is the Python twin of `flow_hash()` in bpf/pktbeat.bpf.c, which
picks the ring (and so the worker) of every live packet: TCP by its 5-tuple;
UDP, ICMP and IP fragments by their address pair, so that the pieces of a
fragmented datagram and both directions of an exchange meet in one worker.
It is symmetric: swapping source and destination gives the same value.  A
live test checks it against the kernel's values.

`FrameSharder` applies it to the frames of a capture file, so that
multi-worker replay splits a file exactly as live capture splits traffic.
Every replay worker reads the whole file and keeps the frames whose shard
is its own; deciding must cost far less than decoding.  Plain
Ethernet/IPv4/TCP frames (nearly all of a typical capture) are keyed by their
raw address and port bytes and the answer cached; every other frame is decoded
(by a decoder of its own, so the replay's decode counters count each frame
once) and hashed from the decoded addresses.  Tunnels are not opened for
this: a tunnel's packets go by their outer address pair, so the underlay
flow and the connections inside it stay in one worker (frames that are not
IP at all, PPPoE sessions among them, all go to the first worker).  One
caveat, shared with live capture: the pieces of an IP-fragmented packet go
to the worker of their address pair, so a fragmented TCP segment may reach
another worker than its connection's.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from agent import metrics
from agent.capture.decode import (
    DECODE_COUNTERS,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    SUPPORTED_LINKTYPES,
    FrameDecoder,
)
from agent.capture.packet import F_FRAGMENT, IPPROTO_TCP
from agent.capture.pcapfile import CaptureFileError, CaptureReader
from agent.capture.tunnel import TunnelSettings

_SEED: Final = 0x2545F491
_GOLDEN: Final = 0x9E3779B1
_MASK: Final = 0xFFFFFFFF
_GOLDEN_LOW: Final = _GOLDEN & 0xFFFF
_GOLDEN_HIGH: Final = _GOLDEN >> 16
# The kernel reads the addresses as host-order 32-bit words.
_words: Final = struct.Struct(("<" if sys.byteorder == "little" else ">") + "4I").unpack
_IPV4_PAD: Final = bytes(12)

SHARD_CACHE: Final = 65536  # flows whose shard is remembered; the cache starts over when full
REPORT_EVERY: Final = 1024  # frames between two progress reports of a ShardedReader
_OUTER_ONLY: Final = TunnelSettings(enabled=False)

# Link types with a fixed-size header: (offset of the IP header, offset of the EtherType or -1).
_FIXED_LINK: Final = {
    LINKTYPE_ETHERNET: (14, 12),
    LINKTYPE_LINUX_SLL: (16, 14),
    LINKTYPE_LINUX_SLL2: (20, 0),
    LINKTYPE_RAW: (0, -1),
    LINKTYPE_IPV4: (0, -1),
}


def _mix(h: int, v: int) -> int:
    # (x * _GOLDEN) mod 2**32 from products of 16-bit halves: compiled (mypyc), a product is native only
    # while both factors are below 2**30; larger ones go through Python's long arithmetic.
    x = (h ^ v) & _MASK
    low = x & 0xFFFF
    high = x >> 16
    h = (low * _GOLDEN_LOW + (((high * _GOLDEN_LOW + low * _GOLDEN_HIGH) & 0xFFFF) << 16)) & _MASK
    return h ^ (h >> 15)


def flow_hash(src: bytes, dst: bytes, l4proto: int, sport: int, dport: int, fragment: bool) -> int:
    """The kernel's value for these addresses (4 or 16 bytes), protocol and ports."""
    if len(src) == 4:
        src += _IPV4_PAD
        dst += _IPV4_PAD
    s0: int
    s1: int
    s2: int
    s3: int
    d0: int
    d1: int
    d2: int
    d3: int
    s0, s1, s2, s3 = _words(src)
    d0, d1, d2, d3 = _words(dst)
    # Unrolled: a loop over pairs would box every word into a Python int.
    h = _mix(_mix(_SEED, s0 ^ d0), (s0 + d0) & _MASK)
    h = _mix(_mix(h, s1 ^ d1), (s1 + d1) & _MASK)
    h = _mix(_mix(h, s2 ^ d2), (s2 + d2) & _MASK)
    h = _mix(_mix(h, s3 ^ d3), (s3 + d3) & _MASK)
    if l4proto == IPPROTO_TCP and not fragment:
        h = _mix(h, ((sport ^ dport) | ((sport + dport) << 16)) & _MASK)
        h = _mix(h, IPPROTO_TCP)
    return h


class FrameSharder:
    """Which of `shards` workers owns each frame of one link type (the kernel's choice: hash % workers)."""

    def __init__(self, linktype: int, shards: int) -> None:
        self.shards = shards
        self._ip_at, self._ethertype_at = _FIXED_LINK.get(linktype, (-1, -1))
        # Tunnels are not opened: their packets go by the outer address pair.  Its own counters:
        # the worker that owns a frame counts it when it decodes it for real.
        self._decoder: FrameDecoder | None = None
        if linktype in SUPPORTED_LINKTYPES:
            self._decoder = FrameDecoder(linktype, tunnels=_OUTER_ONLY,
                                         counters=metrics.Counters("shard.decode", DECODE_COUNTERS))
        self._cache: dict[bytes, int] = {}

    def shard(self, frame: bytes) -> int:
        return self.shard_at(frame, 0, len(frame))

    def shard_at(self, buf: bytes, start: int, stop: int) -> int:
        """The shard of the frame buf[start:stop] (read in place: most frames are never copied)."""
        ip = start + self._ip_at
        et = start + self._ethertype_at
        # IPv4 right after a fixed link header: keyed by its raw bytes, the answer cached.  An unfragmented
        # TCP segment (no IP options) goes by addresses and ports; anything else, fragments and tunnels
        # included, by its address pair alone, as the kernel hashes them.
        if ip >= start and stop - ip >= 20 and (et < start or (buf[et] == 8 and buf[et + 1] == 0)) \
                and buf[ip] >> 4 == 4:
            if buf[ip + 9] == IPPROTO_TCP and not (buf[ip + 6] & 0x3F or buf[ip + 7]):
                if buf[ip] != 0x45 or stop - ip < 24:
                    return self._decoded_shard(buf, start, stop)  # IP options: the ports are elsewhere
                key = buf[ip + 12:ip + 24]  # addresses and ports
                tcp = True
            else:
                key = buf[ip + 12:ip + 20]  # addresses
                tcp = False
            cache = self._cache
            found = cache.get(key)
            if found is not None:
                return found
            ports = ((key[8] << 8) | key[9], (key[10] << 8) | key[11]) if tcp else (0, 0)
            value = flow_hash(key[0:4], key[4:8], IPPROTO_TCP if tcp else 0, ports[0], ports[1], False) \
                % self.shards
            if len(cache) >= SHARD_CACHE:
                cache.clear()
            cache[key] = value
            return value
        return self._decoded_shard(buf, start, stop)

    def _decoded_shard(self, buf: bytes, start: int, stop: int) -> int:
        pkt = self._decoder.decode(buf[start:stop], 0) if self._decoder is not None else None
        if pkt is None:
            return 0  # undecodable: one worker counts it
        return flow_hash(pkt.src, pkt.dst, pkt.l4proto, pkt.sport, pkt.dport, bool(pkt.flags & F_FRAGMENT)) \
            % self.shards


class ShardedReader(CaptureReader):
    """A capture reader that yields only the frames of shard `index` of `shards`, without copying the others.

    Every REPORT_EVERY frames it calls `report(offset, frames read)` (progress),
    and stops reading when that returns False.  A file that breaks off is reported by
    shard 0 only: every shard meets the same error at the same place.
    """

    def __init__(self, path: str | Path, index: int, shards: int, report: Callable[[int, int], bool]) -> None:
        super().__init__(path)
        self.index = index
        self.filtering = True
        self._sharder = FrameSharder(self.info.linktype, shards)
        self._report = report
        self._seen = 0

    def _keep(self, buf: bytes, start: int, stop: int, ts_ns: int) -> bool:
        self._seen += 1
        if not self._seen % REPORT_EVERY and not self._report(self.offset, self._seen):
            self.stopped = True
            return False
        if self._sharder.shard_at(buf, start, stop) == self.index:
            return True
        self.skipped_ns = max(self.skipped_ns, ts_ns)
        return False

    def batches(self) -> Iterator[list[tuple[int, bytes, int]]]:
        frames = super().batches()
        return frames if self.index == 0 else self._quiet(frames)

    def _quiet(self, frames: Iterator[list[tuple[int, bytes, int]]]) -> Iterator[list[tuple[int, bytes, int]]]:
        try:
            yield from frames
        except CaptureFileError:
            return
