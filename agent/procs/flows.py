"""Processes of flows: the parent looks the kernel's `owners` map up when it reports a flow.

Transactions are built in the workers, which learn sockets from their ring;
flows are reported by the parent from the kernel's flow table, so it asks
the kernel's own table of socket owners instead (a few map lookups per
flow side, remembered for `CACHE_TTL_NS`).  The process behind a task is
described by the same `ProcessTable` code as in the workers.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Protocol

from agent.capture.sockrecord import TaskFacts
from agent.procs.annotate import TRANSPORT_NUMBERS, annotate
from agent.procs.process import ProcessInfo
from agent.procs.table import IPPROTO_UDP, ProcessTable

CACHE_TTL_NS = 5 * 1_000_000_000
CACHE_LIMIT = 65536
_ZERO = {4: b"\0" * 4, 6: b"\0" * 16}


class OwnerSource(Protocol):
    def owner(self, family: int, l4proto: int, laddr: bytes, lport: int, raddr: bytes, rport: int
              ) -> TaskFacts | None: ...


class FlowProcesses:
    """A `Finder` (agent/procs/annotate.py) over the kernel's socket owners."""

    def __init__(self, source: OwnerSource, table: ProcessTable) -> None:
        self.source = source
        self.table = table
        self._cache: dict[tuple[int, bytes, int, bytes, int], tuple[ProcessInfo | None, int]] = {}

    def find(self, l4proto: int, local: bytes, lport: int, remote: bytes, rport: int) -> ProcessInfo | None:
        key = (l4proto, local, lport, remote, rport)
        now = time.monotonic_ns()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        info = self._lookup(l4proto, local, lport, remote, rport)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (info, now + CACHE_TTL_NS)
        return info

    def _lookup(self, l4proto: int, local: bytes, lport: int, remote: bytes, rport: int) -> ProcessInfo | None:
        family = 4 if len(local) == 4 else 6
        tries = [(family, local, remote, rport)]
        if l4proto == IPPROTO_UDP:  # unconnected, then bound to any address (IPv4, or dual-stack IPv6)
            tries += [(family, local, _ZERO[family], 0), (family, _ZERO[family], _ZERO[family], 0)]
            if family == 4:
                tries.append((6, _ZERO[6], _ZERO[6], 0))
        for fam, laddr, raddr, port in tries:
            task = self.source.owner(fam, l4proto, laddr, lport, raddr, port)
            if task is None:
                continue
            if laddr == _ZERO[fam]:  # bound to any address: only if `local` is one of its namespace's
                self.table.addresses.learn(task.netns, task.tgid)
                if not self.table.addresses.holds(task.netns, local):
                    continue
            return self.table.describe(task, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        return None

    def annotate_flow(self, event: dict[str, Any]) -> None:
        """Add the processes of a flow event's local endpoints (TCP and UDP flows)."""
        l4proto = TRANSPORT_NUMBERS.get(event.get("network", {}).get("transport", ""))
        source, destination = event.get("source"), event.get("destination")
        if l4proto is None or not isinstance(source, dict) or not isinstance(destination, dict):
            return
        src_ip, dst_ip = _inner_ip(source.get("ip")), _inner_ip(destination.get("ip"))
        if src_ip is None or dst_ip is None:
            return
        annotate(event, self, l4proto, src_ip, int(source.get("port", 0)), dst_ip, int(destination.get("port", 0)))


def _inner_ip(value: Any) -> bytes | None:
    """The address sockets see: the only one, or the innermost of a tunnel's list."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value).packed
    except ValueError:
        return None
