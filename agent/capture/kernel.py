"""Compiling and loading bpf/pktbeat.bpf.c with BCC, and talking to its maps.

Only the parent process uses this module: it loads the program, fills the
port, interface and settings maps, reads counters and the flow table.
Worker processes only inherit the ring-buffer fds (see ring.py).
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.capture import record
from agent.capture.bpfmap import BPF_ANY, BpfMap, possible_cpus
from agent.capture.sockets import SocketSettings, SocketsUnavailable, SocketTracer, socket_cflags
from agent.capture.sockrecord import SOCK_PROGRAM_FILE
from agent.capture.tlsprobes import TlsProbes, TlsSettings, TlsUnavailable, tls_cflags
from agent.capture.tlsrecord import TLS_PROGRAM_FILE
from agent.capture.tunnel import GENEVE_PORTS, VXLAN_PORTS

log = logging.getLogger("pktbeat.capture")

MAX_WORKERS = 16  # PB_MAX_WORKERS in the C program
MAX_IFACES = 256  # interface slots (counters); slot 0 collects unregistered interfaces
MAX_PORTS = 4096  # PB_MAX_PORTS
DEFAULT_WAKE_EVERY = 64


class KernelLoadError(RuntimeError):
    """The program did not compile or the verifier refused it."""


@dataclass(frozen=True)
class KernelSettings:
    workers: int = 1
    ring_bytes: int = 4 * 1024 * 1024
    max_flows: int = 65536
    snaplen: int = 65535
    icmp: bool = False
    flows: bool = False
    ports: Mapping[tuple[int, int], int] = field(default_factory=dict)
    wake_every: int = DEFAULT_WAKE_EVERY
    chunk: int | None = None  # PB_CHUNK override (tests exercise record splitting with it)
    procs: SocketSettings | None = None  # process attribution (bpf/sockets.bpf.c), None: off
    tls: TlsSettings | None = None  # TLS plaintext (bpf/tls.bpf.c), None: off
    decap: bool = True  # look inside tunnels (packetbeat.tunnels)
    vxlan_ports: tuple[int, ...] = VXLAN_PORTS
    geneve_ports: tuple[int, ...] = GENEVE_PORTS


class KernelProgram:
    """The loaded program: its two entry points, its rings and its maps."""

    def __init__(self, settings: KernelSettings) -> None:
        from bcc import BPF

        if not 1 <= settings.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}")
        if len(settings.ports) > MAX_PORTS:
            raise ValueError(f"at most {MAX_PORTS} (protocol, port) pairs can be matched in the kernel")
        _check_tunnel_ports(settings.vxlan_ports, settings.geneve_ports)
        self.settings = settings
        page = os.sysconf("SC_PAGE_SIZE")
        self.ring_size = settings.ring_bytes
        self.ncpus = possible_cpus()
        cflags = [
            f"-I{record.BPF_DIR}",
            f"-DPB_WORKERS={settings.workers}",
            f"-DPB_RING_PAGES={settings.ring_bytes // page}",
            f"-DPB_MAX_FLOWS={settings.max_flows}",
            f"-DPB_NCPUS={self.ncpus}",
            f"-DPB_MAX_IFACES={MAX_IFACES}",
            "-w",
        ]
        if settings.chunk is not None:
            cflags.append(f"-DPB_CHUNK={settings.chunk}")
        # Process attribution: None when off or unavailable (`procs_unavailable` says why).
        self.sockets: SocketTracer | None = None
        self.procs_unavailable: str | None = None
        # TLS plaintext: None when off or unavailable (`tls_unavailable` says why).
        self.tls: TlsProbes | None = None
        self.tls_unavailable: str | None = None
        sock_flags, tls_flags = self._feature_flags(settings)
        try:
            self.bpf = _compile(cflags, sock_flags, tls_flags)
            self.ingress = self.bpf.load_func(b"pb_ingress", BPF.SCHED_CLS)
            self.egress = self.bpf.load_func(b"pb_egress", BPF.SCHED_CLS)
            self.emitter = self.bpf.load_func(b"pb_emit", BPF.SCHED_CLS)
            self.decapper = self.bpf.load_func(b"pb_decap", BPF.SCHED_CLS)
            self.bpf.get_table("emitters")[ct.c_int(0)] = ct.c_int(self.emitter.fd)
            self.bpf.get_table("decappers")[ct.c_int(0)] = ct.c_int(self.decapper.fd)
        except Exception as exc:  # BCC raises bare Exceptions
            raise KernelLoadError(str(exc)) from exc
        if settings.procs is not None and self.procs_unavailable is None:
            try:
                self.sockets = SocketTracer(self.bpf, settings.procs)
            except SocketsUnavailable as exc:
                self.procs_unavailable = str(exc)
        if settings.tls is not None and self.tls_unavailable is None:
            try:
                self.tls = TlsProbes(self.bpf, settings.tls)
            except TlsUnavailable as exc:
                self.tls_unavailable = str(exc)
        self.ring_fds = [self._fd(f"ring{i}") for i in range(settings.workers)]
        self.maps = {
            "settings": BpfMap("settings", self._fd("settings"), 4, record.SETTINGS.size, 1),
            "ports": BpfMap("ports", self._fd("ports"), record.PORT_KEY.size, 4, MAX_PORTS),
            "ifaces": BpfMap("ifaces", self._fd("ifaces"), 4, record.IFACE.size, MAX_IFACES),
            "counters": BpfMap("counters", self._fd("counters"), 4, record.COUNTERS.size, MAX_IFACES, percpu=True),
            "flows": BpfMap("flows", self._fd("flows"), record.FLOW_KEY.size, record.FLOW_VALUE.size,
                            settings.max_flows),
        }
        self._lock = threading.Lock()
        self._ports: dict[tuple[int, int], int] = {}
        self._slots: dict[int, int] = {}  # ifindex -> slot
        self._free_slots = list(range(MAX_IFACES - 1, 0, -1))
        self._icmp = settings.icmp
        self._snaplen = settings.snaplen
        self._flows = settings.flows
        self._decap, self._vxlan_ports, self._geneve_ports = settings.decap, settings.vxlan_ports, settings.geneve_ports
        self._write_settings()
        self.set_ports(settings.ports)

    def _feature_flags(self, settings: KernelSettings) -> tuple[list[str], list[str]]:
        """-D options of the socket programs (process attribution, and TLS plaintext, which reads sockets too)."""
        if settings.procs is None and settings.tls is None:
            return [], []
        try:
            sock_flags = socket_cflags(settings.procs or SocketSettings())
        except SocketsUnavailable as exc:
            if settings.procs is not None:
                self.procs_unavailable = str(exc)
            if settings.tls is not None:
                self.tls_unavailable = str(exc)
            return [], []
        tls_flags: list[str] = []
        if settings.tls is not None:
            try:
                tls_flags = tls_cflags(settings.tls)
            except TlsUnavailable as exc:
                self.tls_unavailable = str(exc)
        return sock_flags, tls_flags

    def _fd(self, name: str) -> int:
        return int(self.bpf.get_table(name).get_fd())

    @property
    def tracepoint_fds(self) -> tuple[int, ...]:
        """Raw tracepoint links a forked worker must close (a link lives while any process holds its fd)."""
        fds: list[int] = []
        if self.sockets is not None:
            fds += self.sockets.fds
        if self.tls is not None:
            fds += self.tls.tracepoint_fds
        return tuple(fds)

    @property
    def ingress_fd(self) -> int:
        return int(self.ingress.fd)

    @property
    def egress_fd(self) -> int:
        return int(self.egress.fd)

    # -- settings and ports (may change while running) ---------------------------

    def _write_settings(self) -> None:
        s = self.settings
        ports = record.MAX_TUNNEL_PORTS
        value = record.SETTINGS.pack(min(self._snaplen, record.MAX_SNAPLEN), max(1, s.wake_every),
                                     int(self._icmp), int(self._flows), int(self._decap), b"\0" * 5,
                                     *(tuple(self._vxlan_ports) + (0,) * ports)[:ports],
                                     *(tuple(self._geneve_ports) + (0,) * ports)[:ports])
        self.maps["settings"].update(b"\0\0\0\0", value)

    def set_tunnels(self, decap: bool, vxlan_ports: tuple[int, ...], geneve_ports: tuple[int, ...]) -> None:
        """Whether to look inside tunnels, and on which UDP ports VXLAN and GENEVE come."""
        _check_tunnel_ports(vxlan_ports, geneve_ports)
        with self._lock:
            self._decap, self._vxlan_ports, self._geneve_ports = decap, vxlan_ports, geneve_ports
            self._write_settings()

    def set_icmp(self, enabled: bool) -> None:
        with self._lock:
            self._icmp = enabled
            self._write_settings()

    def set_snaplen(self, snaplen: int) -> None:
        with self._lock:
            self._snaplen = snaplen
            self._write_settings()

    def set_ports(self, ports: Mapping[tuple[int, int], int]) -> None:
        """Make the kernel's port map equal `ports` ((ip proto, port) -> protocol index), in place."""
        with self._lock:
            table = self.maps["ports"]
            wanted = dict(ports)
            for key in [k for k in self._ports if k not in wanted]:
                table.delete(record.PORT_KEY.pack(key[0], 0, key[1]))
                del self._ports[key]
            for key, index in wanted.items():
                if self._ports.get(key) != index:
                    table.update(record.PORT_KEY.pack(key[0], 0, key[1]), index.to_bytes(4, "little"), BPF_ANY)
                    self._ports[key] = index

    @property
    def ports(self) -> dict[tuple[int, int], int]:
        return dict(self._ports)

    # -- interfaces and counters ---------------------------------------------------

    def register_iface(self, ifindex: int, link_len: int) -> int:
        """Give an interface its counters slot and link-header length; returns the slot (0 when full)."""
        with self._lock:
            slot = self._slots.get(ifindex)
            if slot is None:
                if not self._free_slots:
                    log.warning("more than %d interfaces: counters of ifindex %d are pooled in slot 0",
                                MAX_IFACES - 1, ifindex)
                    slot = 0
                else:
                    slot = self._free_slots.pop()
                    self._zero_slot(slot)
                self._slots[ifindex] = slot
            self.maps["ifaces"].update(ifindex.to_bytes(4, "little"), record.IFACE.pack(slot, link_len, 0))
            return slot

    def unregister_iface(self, ifindex: int) -> list[int]:
        """Forget an interface; returns its final counters."""
        with self._lock:
            slot = self._slots.pop(ifindex, None)
            self.maps["ifaces"].delete(ifindex.to_bytes(4, "little"))
            if slot is None:
                return [0] * len(record.COUNTER_NAMES)
            final = self._read_slot(slot)
            if slot:
                self._zero_slot(slot)
                self._free_slots.append(slot)
            return final

    def slot_of(self, ifindex: int) -> int | None:
        return self._slots.get(ifindex)

    def _zero_slot(self, slot: int) -> None:
        table = self.maps["counters"]
        table.update(slot.to_bytes(4, "little"), b"\0" * (table.stride * table.ncpus))

    def _read_slot(self, slot: int) -> list[int]:
        table = self.maps["counters"]
        raw = table.lookup(slot.to_bytes(4, "little"))
        totals = [0] * len(record.COUNTER_NAMES)
        if raw is None:
            return totals
        for part in table.per_cpu(raw):
            for i, value in enumerate(record.COUNTERS.unpack(part)):
                totals[i] += value
        return totals

    def counters(self) -> dict[int, list[int]]:
        """Counters summed over CPUs, by ifindex (0: packets of unregistered interfaces)."""
        with self._lock:
            out = {ifindex: self._read_slot(slot) for ifindex, slot in self._slots.items() if slot}
            out[0] = self._read_slot(0)
            return out

    def flow_map(self) -> BpfMap:
        return self.maps["flows"]

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()
        if self.sockets is not None:
            self.sockets.close()
        try:
            self.bpf.cleanup()
        except Exception:
            pass


def _compile(cflags: list[str], sock_flags: list[str], tls_flags: list[str]) -> Any:
    """One BCC module: the capture program, then the socket programs and the TLS programs when asked for.

    One text rather than #includes: BCC only rewrites and loads functions of the main file.
    """
    from bcc import BPF

    if not sock_flags:
        return BPF(src_file=str(record.PROGRAM_FILE).encode(), cflags=cflags)
    parts = [record.PROGRAM_FILE, SOCK_PROGRAM_FILE] + ([TLS_PROGRAM_FILE] if tls_flags else [])
    text = "\n".join(f'#line 1 "{part.name}"\n{part.read_text()}' for part in parts)
    return BPF(text=text.encode(), cflags=cflags + sock_flags + tls_flags)


def _check_tunnel_ports(vxlan_ports: tuple[int, ...], geneve_ports: tuple[int, ...]) -> None:
    for name, tunnel_ports in (("VXLAN", vxlan_ports), ("GENEVE", geneve_ports)):
        if len(tunnel_ports) > record.MAX_TUNNEL_PORTS or not all(0 < p < 65536 for p in tunnel_ports):
            raise ValueError(f"at most {record.MAX_TUNNEL_PORTS} {name} ports, each 1-65535")


def effective_workers(configured: int) -> int:
    """`packetbeat.interfaces.workers`: 0 means one per usable CPU (at most MAX_WORKERS)."""
    if configured <= 0:
        try:
            configured = len(os.sched_getaffinity(0))
        except OSError:
            configured = os.cpu_count() or 1
    return max(1, min(configured, MAX_WORKERS))
