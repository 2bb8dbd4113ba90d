"""TLS plaintext in the kernel: compile options for bpf/tls.bpf.c, its raw tracepoints and its uprobes' lifecycle.

`TlsProbes` is created by KernelProgram once BCC has compiled the module
(packetbeat.tls_plaintext.enabled): it attaches the three raw tracepoints
and fills the plaintext port map.  The parent calls `start()` after forking
the workers (so no worker inherits a uprobe), `poll()` from its loop (new
programs, periodic rescans) and `close()` at exit.

Uprobes are attached with libbcc's bpf_attach_uprobe, which uses the
perf_event "uprobe" PMU: the probe lives exactly as long as its fd.  BCC's
own clean-up would also write to tracefs, which may not be mounted; here
the fds are closed and nothing else is needed.  A SIGKILLed agent's fds
are closed by the kernel, so no probe outlives the agent in any case.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent import metrics
from agent.capture import tlsrecord
from agent.capture.bpfmap import BPF_ANY, BpfMap
from agent.capture.ring import RingReader
from agent.capture.tlslibs import DEFAULT_NAMES, LibraryFile, LibraryFinder

log = logging.getLogger("pktbeat.capture")

# (symbol, program, return probe).  SSL_read/SSL_write are required; the others are probed when present.
PROBES: tuple[tuple[str, str, bool], ...] = (
    ("SSL_read", "pb_tls_read_enter", False),
    ("SSL_read", "pb_tls_return", True),
    ("SSL_write", "pb_tls_write_enter", False),
    ("SSL_write", "pb_tls_return", True),
    ("SSL_read_ex", "pb_tls_read_ex_enter", False),
    ("SSL_read_ex", "pb_tls_return", True),
    ("SSL_write_ex", "pb_tls_write_ex_enter", False),
    ("SSL_write_ex", "pb_tls_return", True),
    ("SSL_do_handshake", "pb_tls_handshake_enter", False),
    ("SSL_do_handshake", "pb_tls_return", True),
    ("SSL_free", "pb_tls_free", False),
)
REQUIRED_SYMBOLS = ("SSL_read", "SSL_write")
TRACEPOINTS: tuple[tuple[str, str], ...] = (
    ("sock_send_length", "pb_tls_sock_send"),
    ("sock_recv_length", "pb_tls_sock_recv"),
    ("sched_process_exec", "pb_tls_exec"),
)

DEFAULT_MAX_CONNECTIONS = 16384
MAX_LIBRARIES = 64  # distinct library files probed; more are counted and skipped
MAX_PORTS = 1024  # PB_TLS_MAX_PORTS
EXEC_RING_BYTES = 16 * 4096  # PB_TLS_EXEC_PAGES pages
EXEC_CHECKS_PER_POLL = 256  # programs looked at per poll; the rest of a burst is counted and skipped

PROBE_COUNTERS = ("libraries", "libraries_skipped", "not_openssl", "attach_failed", "probes", "execs_checked",
                  "execs_skipped", "rescans")


class TlsUnavailable(Exception):
    """TLS plaintext cannot run here; the message is one line for the operator."""


@dataclass(frozen=True)
class TlsSettings:
    ports: tuple[int, ...]  # server ports whose plaintext user space decodes (the kernel sends only these)
    libraries: tuple[str, ...] = ()  # configured library paths, besides every libssl.so.3
    names: tuple[str, ...] = DEFAULT_NAMES
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # SSL objects the kernel follows
    rescan_interval: float = 30.0  # seconds between /proc/*/maps scans (0: only at start)


def tls_cflags(settings: TlsSettings) -> list[str]:
    if len(settings.ports) > MAX_PORTS:
        raise TlsUnavailable(f"at most {MAX_PORTS} plaintext ports")
    return ["-DPB_TLS=1", f"-I{tlsrecord.TLS_HEADER_FILE.parent}",
            f"-DPB_TLS_MAX_CONNS={settings.max_connections}",
            f"-DPB_TLS_EXEC_PAGES={EXEC_RING_BYTES // os.sysconf('SC_PAGE_SIZE')}"]


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else repr(exc)


class TlsProbes:
    """The TLS programs of a compiled module: tracepoints now, uprobes from `start()` on."""

    def __init__(self, bpf: Any, settings: TlsSettings) -> None:
        from bcc import BPF

        self.bpf = bpf
        self.settings = settings
        self.tracepoint_fds: list[int] = []
        self.probe_fds: list[int] = []
        self.counters = metrics.register("tls_plaintext.probes", PROBE_COUNTERS)
        self.finder = LibraryFinder(settings.names, settings.libraries)
        self._probed: dict[tuple[int, int], str] = {}  # library identity -> the path it was probed through
        self._refused: set[tuple[int, int]] = set()  # not OpenSSL, or failed: not tried again
        self._programs: dict[str, int] = {}
        self._next_rescan = 0.0
        try:
            for name in {program for _, program, _ in PROBES}:
                self._programs[name] = int(bpf.load_func(name.encode(), BPF.KPROBE).fd)
            for tracepoint, program in TRACEPOINTS:
                fn = bpf.load_func(program.encode(), BPF.RAW_TRACEPOINT)
                self.tracepoint_fds.append(_attach_raw_tracepoint(int(fn.fd), tracepoint))
        except TlsUnavailable:
            self.close()
            raise
        except Exception as exc:  # BCC raises bare Exceptions
            self.close()
            raise TlsUnavailable(_last_line(exc)) from None

        def fd_of(name: str) -> int:
            return int(bpf.get_table(name).get_fd())

        self.counters_map = BpfMap("tls_counters", fd_of("tls_counters"), 4, tlsrecord.TLS_COUNTERS.size, 1,
                                   percpu=True)
        ports = BpfMap("tls_ports", fd_of("tls_ports"), 2, 1, MAX_PORTS)
        for port in settings.ports:
            ports.update(port.to_bytes(2, "little"), b"\1", BPF_ANY)
        self.execs = RingReader(fd_of("tls_execs"), EXEC_RING_BYTES)

    # -- the parent's calls ------------------------------------------------------------

    def start(self) -> None:
        """Probe the host's libraries and every library a running process maps."""
        self._probe_all(self.finder.under_root())
        self.rescan()
        self._next_rescan = time.monotonic() + self.settings.rescan_interval
        log.info("TLS plaintext: %d library file(s) probed (%s)", len(self._probed),
                 ", ".join(sorted(set(self._probed.values()))) or "none yet")

    def rescan(self) -> None:
        """Every process's maps: libraries at unusual paths, or in other mount namespaces."""
        self.counters["rescans"] += 1
        for pid in self.finder.all_pids():
            if pid != os.getpid():
                self._probe_all(self.finder.in_process(pid))

    def poll(self, now: float) -> None:
        """Programs started since the last poll, and the periodic rescan."""
        checked = 0
        for raw in self.execs.raw(4096):
            if len(raw) < tlsrecord.TLS_EXEC.size:
                continue
            if checked >= EXEC_CHECKS_PER_POLL:
                self.counters["execs_skipped"] += 1
                continue
            checked += 1
            tgid = tlsrecord.TLS_EXEC.unpack_from(raw)[0]
            self._probe_all(self.finder.of_new_program(tgid))
        self.counters["execs_checked"] += checked
        if self.settings.rescan_interval > 0 and now >= self._next_rescan:
            self._next_rescan = now + self.settings.rescan_interval
            self.rescan()

    def kernel_counters(self) -> dict[str, int]:
        return self.counters_map.counter_totals(b"\0\0\0\0", tlsrecord.TLS_COUNTER_NAMES)

    @property
    def libraries(self) -> dict[tuple[int, int], str]:
        return dict(self._probed)

    def close(self) -> None:
        """Detach everything: closing a perf event or raw tracepoint fd is what detaches it."""
        fds, self.probe_fds, self.tracepoint_fds = self.probe_fds + self.tracepoint_fds, [], []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._probed.clear()

    # -- attaching -----------------------------------------------------------------------

    def _probe_all(self, files: Iterable[LibraryFile]) -> None:
        for found in files:
            if found.identity in self._probed or found.identity in self._refused:
                continue
            if len(self._probed) >= MAX_LIBRARIES:
                self.counters["libraries_skipped"] += 1
                self._refused.add(found.identity)
                continue
            self._probe(found)

    def _probe(self, found: LibraryFile) -> None:
        offsets = _symbol_offsets(found.path, {symbol for symbol, _, _ in PROBES})
        missing = [s for s in REQUIRED_SYMBOLS if s not in offsets]
        if missing:
            self._refused.add(found.identity)
            self.counters["not_openssl"] += 1
            log.warning("TLS plaintext: %s has no %s: not OpenSSL's libssl, not probed", found.shown,
                        "/".join(missing))
            return
        fds: list[int] = []
        try:
            for symbol, program, is_return in PROBES:
                offset = offsets.get(symbol)
                if offset is None:
                    continue
                fds.append(_attach_uprobe(self._programs[program], is_return, found.path, offset))
        except TlsUnavailable as exc:
            for fd in fds:
                os.close(fd)
            self._refused.add(found.identity)
            self.counters["attach_failed"] += 1
            log.warning("TLS plaintext: %s cannot be probed: %s", found.shown, exc)
            return
        self.probe_fds += fds
        self.counters["probes"] += len(fds)
        self.counters["libraries"] += 1
        self._probed[found.identity] = found.shown
        log.debug("TLS plaintext: probed %s (%d probes)", found.shown, len(fds))


def _symbol_offsets(path: str, symbols: Iterable[str]) -> dict[str, int]:
    """File offsets of the `symbols` a library defines (BCC's ELF reader)."""
    import ctypes as ct

    from bcc.libbcc import bcc_symbol, bcc_symbol_option, lib

    out: dict[str, int] = {}
    for name in symbols:
        sym = bcc_symbol()
        if lib.bcc_resolve_symname(path.encode(), name.encode(), 0, 0, ct.POINTER(bcc_symbol_option)(),
                                   ct.byref(sym)) < 0:
            continue
        if sym.module:
            lib.bcc_procutils_free(sym.module)
        if sym.offset:
            out[name] = int(sym.offset)
    return out


def _attach_uprobe(prog_fd: int, is_return: bool, path: str, offset: int) -> int:
    from bcc.libbcc import lib

    kind = b"r" if is_return else b"p"
    event = b"pktbeat_%s_%d_%x" % (kind, os.getpid(), offset)
    fd = int(lib.bpf_attach_uprobe(prog_fd, int(is_return), event, path.encode(), offset, -1))
    if fd < 0:
        raise TlsUnavailable(f"uprobe at {offset:#x} cannot be attached")
    return fd


def _attach_raw_tracepoint(prog_fd: int, tracepoint: str) -> int:
    from bcc.libbcc import lib

    fd = int(lib.bpf_attach_raw_tracepoint(prog_fd, tracepoint.encode()))
    if fd < 0:
        raise TlsUnavailable(f"the raw tracepoint {tracepoint} cannot be attached: {os.strerror(-fd)}")
    return fd
