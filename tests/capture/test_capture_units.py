"""Pieces of live capture that need no kernel: ring parsing, channel, chunk joining, devices, preflight."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import pytest

from agent import metrics
from agent.capture import preflight
from agent.capture.chunks import CHUNK_COUNTERS, ChunkJoiner
from agent.capture.devices import ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE, Device, DeviceSpec, DeviceSpecError
from agent.capture.packet import F_LAST_CHUNK, IPPROTO_TCP, IPPROTO_UDP, Packet
from agent.capture.record import RECORD_SIZE, encode_record
from agent.capture.ring import BUSY_BIT, DISCARD_BIT, RingReader, ring_size_bytes
from agent.capture.tc import FilterInfo, filter_name
from agent.runtime import channel

PAGE = mmap.PAGESIZE
V4A, V4B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


# -- ring reader over a file laid out like the kernel's mapping ------------------------------------


class FakeRing:
    """consumer page | producer page | data | data again (the kernel maps the data area twice)."""

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, 2 * PAGE + 2 * size)
        self.prod = 0
        self.data = bytearray(size)

    def put(self, payload: bytes, flags: int = 0) -> None:
        at = self.prod & (self.size - 1)
        blob = struct.pack("<II", len(payload) | flags, 0) + payload
        blob += b"\0" * (-len(blob) % 8)
        for i, byte in enumerate(blob):
            self.data[(at + i) % self.size] = byte
        self.prod += len(blob)
        self._sync()

    def set_busy_header(self, length: int) -> None:
        at = self.prod & (self.size - 1)
        struct.pack_into("<II", self.data, at, length | BUSY_BIT, 0)
        self.prod += (length + 8 + 7) & ~7
        self._sync()

    def _sync(self) -> None:
        os.pwrite(self.fd, struct.pack("<Q", self.prod), PAGE)
        os.pwrite(self.fd, bytes(self.data) * 2, 2 * PAGE)

    def consumer(self) -> int:
        return int(struct.unpack("<Q", os.pread(self.fd, 8, 0))[0])


def _pkt(i: int, size: int = 10) -> Packet:
    return Packet(1000 + i, 4, IPPROTO_UDP, V4A, V4B, 5000 + i, 53, bytes([i % 256]) * size)


def test_ring_reader_decodes_records_and_moves_the_consumer(tmp_path: Path) -> None:
    ring = FakeRing(tmp_path / "ring", 4096)
    for i in range(5):
        ring.put(encode_record(_pkt(i)))
    reader = RingReader(ring.fd, 4096)
    got = reader.read(3, ts_offset=100)
    assert [p.sport for p in got] == [5000, 5001, 5002]
    assert got[0].ts_ns == 1100 and got[0].payload == b"\0" * 10
    assert ring.consumer() == 3 * ((RECORD_SIZE + 10 + 8 + 7) & ~7)
    assert [p.sport for p in reader.read(100)] == [5003, 5004]
    assert reader.pending_bytes() == 0 and reader.records == 5
    reader.close()


def test_ring_reader_wraps_around_and_skips_discarded_and_stops_at_busy(tmp_path: Path) -> None:
    ring = FakeRing(tmp_path / "ring", 4096)
    reader = RingReader(ring.fd, 4096)
    for round_ in range(12):  # > 4096 bytes in total: records wrap over the end of the data area
        ring.put(encode_record(_pkt(round_, 300)))
        if round_ == 5:
            ring.put(b"x" * 40, DISCARD_BIT)
        got = reader.read(10)
        assert len(got) == 1 and got[0].payload == bytes([round_]) * 300
    assert reader.discarded == 1
    ring.set_busy_header(100)
    assert reader.read(10) == []  # not committed yet


def test_ring_reader_counts_bad_records(tmp_path: Path) -> None:
    ring = FakeRing(tmp_path / "ring", 4096)
    ring.put(b"short")
    ring.put(encode_record(_pkt(1)))
    reader = RingReader(ring.fd, 4096)
    got = reader.read(10)
    assert len(got) == 1 and reader.bad_records == 1


def test_ring_size_is_a_power_of_two_of_at_least_1024_pages() -> None:
    assert ring_size_bytes(24) == 32 << 20
    assert ring_size_bytes(1) == max(1 << 20, 1024 * PAGE) == 1024 * PAGE
    assert ring_size_bytes(64) == 64 << 20
    with pytest.raises(ValueError):
        RingReader(0, 3000)


# -- channel -------------------------------------------------------------------------------------------


def test_channel_frames_round_trip_and_drop_when_full() -> None:
    r, w = os.pipe()
    writer = channel.ChannelWriter(w, max_pending=1000)
    reader = channel.ChannelReader(r)
    assert writer.send(channel.EVENTS, b"a" * 10)
    assert writer.send(channel.STATS, b"{}", droppable=False)
    assert reader.read() == [(channel.EVENTS, b"a" * 10), (channel.STATS, b"{}")]
    # fill the pipe, then the pending buffer: droppable messages are dropped and counted
    big = b"b" * 600
    sent = sum(writer.send(channel.EVENTS, big) for _ in range(1000))
    assert writer.dropped_messages == 1000 - sent and writer.dropped_messages > 0
    assert writer.pending <= 1000 + len(big) + 5
    assert writer.send(channel.DONE, b"", droppable=False)  # control messages always queue
    got: list[tuple[int, bytes]] = []
    for _ in range(10_000):
        got += reader.read()
        writer.flush()
        if got and got[-1][0] == channel.DONE:
            break
    assert len([m for m in got if m[0] == channel.EVENTS]) == sent
    os.close(w)
    reader.read()
    assert reader.eof
    os.close(r)


def test_channel_reader_refuses_a_corrupt_stream() -> None:
    r, w = os.pipe()
    os.write(w, struct.pack("<BI", 1, 1 << 30))
    with pytest.raises(ValueError):
        channel.ChannelReader(r, max_frame=1024).read()
    os.close(r)
    os.close(w)


# -- joining split records ---------------------------------------------------------------------------


def _piece(ts: int, data: bytes, last: bool, sport: int = 1) -> Packet:
    return Packet(ts, 4, IPPROTO_UDP, V4A, V4B, sport, 53, data, flags=F_LAST_CHUNK if last else 0)


def test_joiner_joins_pieces_and_passes_whole_packets() -> None:
    counters = metrics.Counters("t", CHUNK_COUNTERS)
    joiner = ChunkJoiner(counters)
    whole = _piece(5, b"whole", True)
    assert joiner.add(whole) is whole
    assert joiner.add(_piece(10, b"ab", False)) is None
    assert joiner.add(_piece(11, b"zz", True, sport=2)) is not None  # another packet, whole
    assert joiner.add(_piece(10, b"cd", False)) is None
    done = joiner.add(_piece(10, b"ef", True))
    assert done is not None and done.payload == b"abcdef" and done.flags & F_LAST_CHUNK
    assert counters["joined"] == 1 and len(joiner) == 0


def test_joiner_drops_incomplete_and_bounds_pending() -> None:
    counters = metrics.Counters("t", CHUNK_COUNTERS)
    joiner = ChunkJoiner(counters, max_pending=4, timeout_ns=100)
    for ts in range(6):
        joiner.add(_piece(ts, b"x", False))
    assert len(joiner) == 4 and counters["evicted"] == 2
    joiner.expire(1000)
    assert len(joiner) == 0 and counters["incomplete"] == 4


# -- devices -------------------------------------------------------------------------------------------

DEVICES = [
    Device(1, "lo", "loopback", True, True, ARPHRD_LOOPBACK),
    Device(2, "eth0", "ether", True, True, ARPHRD_ETHER),
    Device(3, "wg0", "wireguard", True, True, ARPHRD_NONE),
    Device(4, "veth9", "veth", False, False, ARPHRD_ETHER),
    Device(5, "can0", "can", True, True, 280),
    Device(6, "docker0", "bridge", True, False, ARPHRD_ETHER),
]


def test_device_properties() -> None:
    lo, eth, wg, down, can, _ = DEVICES
    assert (lo.link, lo.link_len, lo.ingress_only) == ("L2", 14, True)
    assert (eth.link, eth.link_len, eth.ingress_only) == ("L2", 14, False)
    assert (wg.link, wg.link_len) == ("L3", 0)
    assert down.state == "down" and DEVICES[5].state == "up,no-carrier"
    assert not can.attachable and "neither Ethernet nor raw IP" in can.reason


def test_device_spec_any_selects_up_attachable_not_ignored() -> None:
    spec = DeviceSpec.parse(["any"], ["docker*"], DEVICES)
    assert [d.name for d in spec.select(DEVICES)] == ["lo", "eth0", "wg0"]
    assert spec.any and "docker*" in spec.describe()


def test_device_spec_names_and_numbers() -> None:
    spec = DeviceSpec.parse(["eth0", "2", "veth9", "eth0"], [], DEVICES)
    assert spec.names == ("eth0", "wg0", "veth9")
    # a named interface is attached even when down, and ignore globs only apply to any
    assert [d.name for d in spec.select(DEVICES)] == ["eth0", "wg0", "veth9"]
    assert DeviceSpec.parse([], [], DEVICES).any


@pytest.mark.parametrize(("value", "reason"), [("9", "only 6 devices"), ("default_route", "not supported"),
                                               ("a" * 16, "not a valid interface name")])
def test_device_spec_errors(value: str, reason: str) -> None:
    with pytest.raises(DeviceSpecError, match=reason):
        DeviceSpec.parse([value], [], DEVICES)


def test_filter_names_identify_the_owner() -> None:
    name = filter_name(4242, "in")
    f = FilterInfo(2, 0xFFFFFFF2, 0x7062, 0x7062, "bpf", name)
    assert f.ours and f.owner_pid == 4242
    assert not FilterInfo(2, 0xFFFFFFF2, 1, 1, "bpf", "cilium").ours
    assert not FilterInfo(2, 0xFFFFFFF2, 1, 1, "u32", "").ours


# -- preflight -----------------------------------------------------------------------------------------

ALL_CAPS = (1 << 41) - 1


def test_privileges() -> None:
    preflight.check_privileges(0, ALL_CAPS)
    preflight.check_privileges(1000, (1 << preflight.CAP_BPF) | (1 << preflight.CAP_PERFMON)
                               | (1 << preflight.CAP_NET_ADMIN))
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_privileges(1000, 0)
    assert err.value.missing is preflight.Missing.PRIVILEGES and "sudo" in err.value.message
    with pytest.raises(preflight.PreflightError):
        preflight.check_privileges(0, 1 << preflight.CAP_NET_ADMIN)  # root without CAP_BPF/SYS_ADMIN
    preflight.check_privileges(1000, (1 << preflight.CAP_SYS_ADMIN) | (1 << preflight.CAP_NET_ADMIN))
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_privileges(998, (1 << preflight.CAP_BPF) | (1 << preflight.CAP_PERFMON))
    assert "needs CAP_NET_ADMIN," in err.value.message and "CAP_BPF" not in err.value.message.split(":")[0]


def test_headers(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    (modules / "6.1.0" / "build" / "include").mkdir(parents=True)
    nokh = tmp_path / "no-kheaders"
    preflight.check_headers("6.1.0", modules, {}, nokh)
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_headers("6.2.0", modules, {}, nokh)
    assert err.value.missing is preflight.Missing.HEADERS and "linux-headers-6.2.0" in err.value.message
    kheaders = tmp_path / "kheaders.tar.xz"
    kheaders.write_bytes(b"")
    preflight.check_headers("6.2.0", modules, {}, kheaders)  # the kernel carries its own headers
    with pytest.raises(preflight.PreflightError):
        preflight.check_headers("6.1.0", modules, {"BCC_KERNEL_SOURCE": str(tmp_path / "nothing")}, kheaders)
    preflight.check_headers("6.2.0", modules, {"BCC_KERNEL_SOURCE": str(modules / "6.1.0" / "build")}, nokh)


def test_bcc_missing() -> None:
    def importer(name: str) -> object:
        raise ImportError(name)

    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_bcc(importer)
    assert err.value.missing is preflight.Missing.BPF and "python3-bpfcc" in err.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_ringbuf_probe_succeeds_here() -> None:
    preflight.check_ringbuf()


def test_unrelated_packets_are_not_joined() -> None:
    joiner = ChunkJoiner(metrics.Counters("t", CHUNK_COUNTERS))
    tcp = Packet(1, 4, IPPROTO_TCP, V4A, V4B, 1, 2, b"x", flags=F_LAST_CHUNK)
    assert joiner.add(tcp) is tcp
