"""Running pktbeat's TC program on crafted frames with BPF_PROG_TEST_RUN: no namespace, no device.

    with ProgRunner(ports={(6, 80): 1}) as run:
        run.frame(ethernet_frame, gso_segs=3)
        run.records(), run.counters(), run.flows()

The kernel builds an skb from the bytes (as if received on loopback, with the
Ethernet header in front, as TC sees it), applies the given `__sk_buff`
fields (gso_segs, gso_size), and runs pb_ingress, its tail calls included;
records land in the ring as they would live.  `repeat` makes the kernel run
the program that many times and report the mean time per run (bench/).
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from agent.capture import record
from agent.capture.kernel import KernelProgram, KernelSettings
from agent.capture.kernel_flows import KernelFlowSource
from agent.capture.packet import Packet
from agent.capture.ring import RingReader
from agent.capture.tunnel import GENEVE_PORTS, VXLAN_PORTS
from agent.flows.types import FlowSnapshot

SYS_BPF = 321  # x86_64
BPF_PROG_TEST_RUN = 10
# struct __sk_buff (uapi/linux/bpf.h): its size and the fields a test run may set.
SK_BUFF_SIZE = 192
SK_BUFF_GSO_SEGS = 164
SK_BUFF_GSO_SIZE = 176
RING_BYTES = 1 << 22


class ProgRunError(OSError):
    pass


_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def test_run(prog_fd: int, data: bytes, repeat: int = 1, gso_segs: int = 0, gso_size: int = 0) -> tuple[int, int]:
    """(return value, mean ns per run) of the program on `data`."""
    data_in = ct.create_string_buffer(data, len(data))
    ctx = bytearray(SK_BUFF_SIZE)
    struct.pack_into("<I", ctx, SK_BUFF_GSO_SEGS, gso_segs)
    struct.pack_into("<I", ctx, SK_BUFF_GSO_SIZE, gso_size)
    ctx_in = ct.create_string_buffer(bytes(ctx), len(ctx))
    attr = ct.create_string_buffer(80)
    struct.pack_into("<IIIIQQIIIIQQIII", attr, 0, prog_fd, 0, len(data), 0, ct.addressof(data_in), 0, repeat, 0,
                     len(ctx), 0, ct.addressof(ctx_in), 0, 0, 0, 0)
    if _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, attr, ct.sizeof(attr)) != 0:
        err = ct.get_errno()
        raise ProgRunError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    retval, duration = struct.unpack_from("<I", attr, 4)[0], struct.unpack_from("<I", attr, 36)[0]
    return retval, duration


class ProgRunner:
    """The program loaded with the given ports (and tunnel settings), and what it produced."""

    def __init__(self, ports: Mapping[tuple[int, int], int] | None = None, *, flows: bool = True,
                 icmp: bool = False, decap: bool = True, vxlan_ports: tuple[int, ...] = VXLAN_PORTS,
                 geneve_ports: tuple[int, ...] = GENEVE_PORTS, **settings: Any) -> None:
        self.kernel = KernelProgram(KernelSettings(
            workers=1, ring_bytes=RING_BYTES, flows=flows, icmp=icmp, ports=dict(ports or {}), decap=decap,
            vxlan_ports=vxlan_ports, geneve_ports=geneve_ports, max_flows=4096, **settings))
        self.reader = RingReader(self.kernel.ring_fds[0], RING_BYTES)

    def __enter__(self) -> ProgRunner:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kernel.close()

    def frame(self, data: bytes, *, gso_segs: int = 0, gso_size: int = 0, egress: bool = False,
              repeat: int = 1) -> int:
        """Run the program on one Ethernet frame; returns the mean ns per run."""
        fd = self.kernel.egress_fd if egress else self.kernel.ingress_fd
        _, duration = test_run(fd, data, repeat, gso_segs, gso_size)
        return duration

    def records(self) -> list[Packet]:
        return [record.decode_record(raw) for raw in self.reader.raw(1_000_000)]

    def counters(self) -> dict[str, int]:
        """The counters of unregistered interfaces (slot 0), where test runs count."""
        return dict(zip(record.COUNTER_NAMES, self.kernel.counters()[0], strict=True))

    def flows(self) -> list[FlowSnapshot]:
        return KernelFlowSource(self.kernel.flow_map(), offset=lambda: 0).snapshot()
