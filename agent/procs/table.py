"""The sockets of local processes, and the processes behind them: bounded tables fed by the kernel.

Each socket record (agent/capture/sockrecord.py) says which process used a
local endpoint.  `ProcessTable.add` describes that process at once, from
/proc while it is still there and from the kernel's facts otherwise, and
files it under the socket's addresses; `find` answers, for one endpoint of
a connection seen on the wire, which process it belongs to.

Keys are the socket's own view: (protocol, local address, local port,
remote address, remote port), with b"" for an unspecified address.  A TCP
socket is found by its exact 4-tuple; a UDP socket also by its local
address and port alone (unconnected), then by its port alone (bound to any
address), as Packetbeat matches UDP.  That last match needs the address to
be one of the socket's network namespace (read from /proc/PID/net, cached):
a datagram forwarded past this host, or broadcast, was not for a local
socket bound to "any" (Packetbeat, too, attributes local addresses only).
Several network namespaces may hold
the same 4-tuple (containers reuse addresses): the entry of the agent's own
namespace wins, otherwise the most recent one (counted as `ambiguous`).

Both tables are bounded (`max_sockets`, `max_processes`); the oldest entries
go first, counted.  The kernel sends a busy socket's owner again every
minute, so an evicted entry that is still in use comes back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import metrics
from agent.capture.clock import boot_offset_ns
from agent.capture.sockrecord import (
    SocketOwner,
    SockRecordError,
    TaskFacts,
    decode_socket_record,
    with_exec_text,
)
from agent.procs import procfs
from agent.procs.process import ProcessInfo, make_process

IPPROTO_TCP = 6
IPPROTO_UDP = 17
DEFAULT_MAX_SOCKETS = 65536
DEFAULT_MAX_PROCESSES = 8192
MAX_NAMESPACES_PER_TUPLE = 8
MAX_NAMESPACES = 256  # namespaces whose addresses are remembered
NETNS_REFRESH_NS = 30 * 1_000_000_000
PROCESS_REFRESH_NS = 30 * 1_000_000_000  # a live process's /proc details are read again after this (Packetbeat: 30 s)
COMM_LEN = 15  # TASK_COMM_LEN - 1: a name this long may have been cut

PROCS_COUNTERS = (
    "records", "bad_records", "sockets_evicted", "processes_evicted", "proc_details", "proc_gone",
    "exec_from_kernel", "exec_from_parent", "lookups", "found", "ambiguous", "not_local",
)

SocketKey = tuple[int, bytes, int, bytes, int]


@dataclass(frozen=True, slots=True)
class Monitored:
    """packetbeat.procs.monitored: processes whose command line contains `cmdline_grep` are named `process`."""

    process: str
    cmdline_grep: str = ""

    def matches(self, command_line: str) -> bool:
        return (self.cmdline_grep or self.process) in command_line


_UNSPECIFIED = frozenset((b"\0" * 4, b"\0" * 16))


def _addr(raw: bytes) -> bytes:
    return b"" if raw in _UNSPECIFIED else raw


def _loopback(addr: bytes) -> bool:
    return addr[0] == 127 if len(addr) == 4 else addr == b"\0" * 15 + b"\1"


class NetnsAddresses:
    """The local addresses of network namespaces, read through a process inside each (bounded, refreshed)."""

    def __init__(self, proc_root: str = "/proc", limit: int = MAX_NAMESPACES) -> None:
        self.proc_root = proc_root
        self.limit = limit
        # netns -> (addresses, a pid inside, monotonic ns of the next refresh)
        self._known: dict[int, tuple[frozenset[bytes], int, int]] = {}

    def learn(self, netns: int, pid: int) -> None:
        known = self._known.get(netns)
        now = time.monotonic_ns()
        if known is not None and now < known[2]:
            return
        addresses = procfs.local_addresses(f"{self.proc_root}/{pid}/net")
        if not addresses and known is not None:
            addresses = set(known[0])  # that process is gone: keep what was read through it
        self._known.pop(netns, None)
        if len(self._known) >= self.limit:
            del self._known[next(iter(self._known))]
        self._known[netns] = (frozenset(addresses), pid, now + NETNS_REFRESH_NS)

    def holds(self, netns: int, addr: bytes) -> bool:
        if _loopback(addr):
            return True
        known = self._known.get(netns)
        if known is None:
            return False
        if time.monotonic_ns() >= known[2]:
            self.learn(netns, known[1])
            known = self._known[netns]
        return addr in known[0]


def own_netns() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


class ProcessTable:
    def __init__(self, max_sockets: int = DEFAULT_MAX_SOCKETS, max_processes: int = DEFAULT_MAX_PROCESSES,
                 monitored: tuple[Monitored, ...] = (), netns: int | None = None, proc_root: str = "/proc",
                 clock: Callable[[], int] = boot_offset_ns, counters: metrics.Counters | None = None) -> None:
        self.max_sockets = max_sockets
        self.max_processes = max_processes
        self.monitored = monitored
        self.netns = own_netns() if netns is None else netns
        self.proc_root = proc_root
        self._clock = clock
        self._offset = clock()
        self._offset_at = time.monotonic()
        self.counters = counters if counters is not None else metrics.register("procs", PROCS_COUNTERS)
        self._sockets: dict[SocketKey, dict[int, ProcessInfo]] = {}
        self.addresses = NetnsAddresses(proc_root)
        # (tgid, start boot ns) -> (process, boot ns when described from /proc, 0 when it could not be)
        self._processes: dict[tuple[int, int], tuple[ProcessInfo, int]] = {}

    def __len__(self) -> int:
        return len(self._sockets)

    # -- filling -----------------------------------------------------------------------

    def add_record(self, raw: bytes) -> SocketOwner | None:
        """Decode one socket record from a ring and file it; a malformed one is counted and dropped."""
        try:
            owner = decode_socket_record(raw, with_exec=False)
            if owner.exec_flags and not self._known(owner.task, owner.ts_ns):
                owner = owner._replace(task=with_exec_text(owner.task, raw, 0, owner.exec_flags))
        except SockRecordError:
            self.counters["bad_records"] += 1
            return None
        self.add(owner)
        return owner

    def add(self, owner: SocketOwner) -> ProcessInfo:
        self.counters["records"] += 1
        info = self.describe(owner.task, owner.ts_ns)
        key = (owner.l4proto, _addr(owner.laddr), owner.lport, _addr(owner.raddr), owner.rport)
        if not key[1] and not key[3]:  # bound to any address: which ones are its namespace's?
            self.addresses.learn(owner.task.netns, owner.task.tgid)
        sockets = self._sockets
        by_netns = sockets.pop(key, None)
        if by_netns is None:
            by_netns = {}
            if len(sockets) >= self.max_sockets:
                del sockets[next(iter(sockets))]
                self.counters["sockets_evicted"] += 1
        else:
            by_netns.pop(owner.task.netns, None)
            if len(by_netns) >= MAX_NAMESPACES_PER_TUPLE:
                del by_netns[next(iter(by_netns))]
        by_netns[owner.task.netns] = info
        sockets[key] = by_netns  # re-inserted: the most recently attributed sockets are evicted last
        return info

    def _known(self, task: TaskFacts, now_boot_ns: int) -> bool:
        """True when `describe` would answer from the cache (so exe and args need not be decoded)."""
        cached = self._processes.get((task.tgid, task.start_ns))
        if cached is None:
            return False
        read_at = cached[1]
        return not read_at or not now_boot_ns or now_boot_ns - read_at < PROCESS_REFRESH_NS

    def describe(self, task: TaskFacts, now_boot_ns: int = 0) -> ProcessInfo:
        """The process behind `task`, from the cache, /proc or the kernel's facts."""
        ident = (task.tgid, task.start_ns)
        if self._known(task, now_boot_ns):
            return self._processes[ident][0]
        details = procfs.read_details(task.tgid, task.start_ns, self.proc_root)
        if details is not None:
            self.counters["proc_details"] += 1
            executable, args = details.executable or task.exe, details.args or task.args
            cwd, container = details.working_directory, details.container_id
        else:
            self.counters["proc_gone"] += 1
            executable, args, cwd, container = task.exe, task.args, "", ""
            if task.exe:
                self.counters["exec_from_kernel"] += 1
        if not executable:  # gone, or exiting (a zombie's stat stays, its exe and cmdline do not)
            parent = self._forked_from(task)
            if parent is not None:
                self.counters["exec_from_parent"] += 1
                executable, args = parent.executable, args or parent.args
                cwd, container = cwd or parent.working_directory, container or parent.container_id
        name = task.comm
        if len(name) >= COMM_LEN and args:
            name = os.path.basename(args[0]) or name  # comm is cut at 15 bytes: argv[0] says more
        if self.monitored:
            command_line = " ".join(args) if args else (executable or name)
            for entry in self.monitored:
                if entry.matches(command_line):
                    name = entry.process
                    break
        info = make_process(task.tgid, task.ppid, name, executable, args, cwd, self._wall(task.start_ns), task.uid,
                            procfs.user_name(task.uid), container, task.netns)
        processes = self._processes
        processes.pop(ident, None)
        if len(processes) >= self.max_processes:
            del processes[next(iter(processes))]
            self.counters["processes_evicted"] += 1
        processes[ident] = (info, now_boot_ns if details is not None else 0)
        return info

    def _forked_from(self, task: TaskFacts) -> procfs.ProcDetails | None:
        """The details of a gone process's parent, when it was forked from it without execve.

        A server's per-connection child (a PostgreSQL backend) that started before
        pktbeat has no execve record and may exit before its socket is read: it runs
        its parent's program, which is still there.  Same name, and the parent still
        the process that started at `parent_start_ns` (not a reused pid).
        """
        if not task.ppid or not task.parent_start_ns or procfs.comm(task.ppid, self.proc_root) != task.comm:
            return None
        return procfs.read_details(task.ppid, task.parent_start_ns, self.proc_root)

    def _wall(self, boot_ns: int) -> int:
        now = time.monotonic()
        if now - self._offset_at > 1.0:
            self._offset = self._clock()
            self._offset_at = now
        return boot_ns + self._offset if boot_ns else 0

    # -- looking up ----------------------------------------------------------------------

    def find(self, l4proto: int, local: bytes, lport: int, remote: bytes, rport: int) -> ProcessInfo | None:
        """The process owning the local endpoint (local, lport) of a conversation with (remote, rport)."""
        counters = self.counters
        counters["lookups"] += 1
        sockets = self._sockets
        by_netns = sockets.get((l4proto, local, lport, remote, rport))
        if by_netns is None and l4proto == IPPROTO_UDP:
            by_netns = sockets.get((l4proto, local, lport, b"", 0))
            if by_netns is None:
                anywhere = sockets.get((l4proto, b"", lport, b"", 0))
                if anywhere is not None:
                    holds = self.addresses.holds
                    by_netns = {ns: info for ns, info in anywhere.items() if holds(ns, local)}
                    if not by_netns:
                        counters["not_local"] += 1
        if not by_netns:
            return None
        counters["found"] += 1
        if len(by_netns) == 1:
            return next(iter(by_netns.values()))
        own = by_netns.get(self.netns)
        if own is not None:
            return own
        counters["ambiguous"] += 1
        return next(reversed(by_netns.values()))
