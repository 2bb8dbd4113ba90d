"""Attaching the program with TC clsact (pyroute2), and removing exactly what we attached.

Rules, so that other TC users keep working:

- a clsact qdisc is created only where there is none; pktbeat deletes a
  qdisc only if it created it (this run, or a killed run that recorded it in
  the state file) and no other filter remains on it;
- pktbeat's filters have a fixed priority and handle and a name
  ``pktbeat:<pid>:<in|eg>``; removal targets that (prio, handle) after
  checking the name, so foreign filters, even at other handles of the same
  priority, are never touched;
- the program returns TC_ACT_UNSPEC, so the filters after ours still run;
- at start, filters named ``pktbeat:<pid>:...`` whose process is gone (a run
  killed with -9) are swept; an interface another running pktbeat captures
  on is refused (the two would share one priority and handle).

The priority is low-numbered (it runs before tc's auto-assigned 49152 and
up) so pktbeat sees packets before a foreign filter can consume them; one
that returns a verdict earlier hides traffic, which the "interface sees
nothing" warning points at.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("pktbeat.capture")

FILTER_PRIO = 0x7062  # "pb"
FILTER_HANDLE = 0x7062
NAME_PREFIX = "pktbeat:"
TC_H_CLSACT = 0xFFFF0000  # handle of a clsact qdisc (ffff:)
PARENT_INGRESS = 0xFFFFFFF2  # ffff:fff2
PARENT_EGRESS = 0xFFFFFFF3  # ffff:fff3
TC_H_ROOT = 0xFFFFFFFF
HOOKS = (("in", PARENT_INGRESS), ("eg", PARENT_EGRESS))


class TcError(Exception):
    def __init__(self, ifname: str, reason: str) -> None:
        super().__init__(f"{ifname}: {reason}")
        self.ifname = ifname
        self.reason = reason


@dataclass(frozen=True)
class FilterInfo:
    ifindex: int
    parent: int
    prio: int
    handle: int
    kind: str
    name: str

    @property
    def ours(self) -> bool:
        return self.kind == "bpf" and self.name.startswith(NAME_PREFIX)

    @property
    def owner_pid(self) -> int | None:
        try:
            return int(self.name.split(":")[1])
        except (IndexError, ValueError):
            return None


def filter_name(pid: int, hook: str) -> str:
    return f"{NAME_PREFIX}{pid}:{hook}"


def _pid_is_pktbeat(pid: int) -> bool:
    """True when `pid` runs and looks like pktbeat (a recycled pid is not one of ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pktbeat" in cmdline or b"agent.cli" in cmdline


class TcManager:
    """clsact + bpf filters for one network namespace (the one this process is in)."""

    def __init__(self, ingress_fd: int, egress_fd: int, state_file: Path | None = None,
                 pid: int | None = None) -> None:
        self.ingress_fd = ingress_fd
        self.egress_fd = egress_fd
        self.pid = os.getpid() if pid is None else pid
        self.state_file = state_file
        self.ipr = IPRoute()
        self.attached: dict[int, tuple[str, bool]] = {}  # ifindex -> (name, ingress only)
        self.created_qdiscs: set[int] = set()
        self._recorded = self._read_state()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ipr.close()

    # -- listing ----------------------------------------------------------------

    def filters(self, ifindex: int) -> list[FilterInfo]:
        out: list[FilterInfo] = []
        for _, parent in HOOKS:
            try:
                msgs = list(self.ipr.get_filters(index=ifindex, parent=parent))
            except NetlinkError as exc:
                if exc.code in (errno.EINVAL, errno.ENODEV, errno.ENOENT):
                    continue  # no clsact here, or the interface went away
                raise
            for msg in msgs:
                kind = msg.get_attr("TCA_KIND") or ""
                options = msg.get_attr("TCA_OPTIONS")
                if options is None:
                    continue  # the chain/priority header message, not a filter
                name = ""
                if kind == "bpf":
                    name = options.get_attr("TCA_BPF_NAME") or ""
                out.append(FilterInfo(ifindex, parent, msg["info"] >> 16, msg["handle"], kind, name))
        return out

    def has_clsact(self, ifindex: int) -> bool:
        try:
            qdiscs = list(self.ipr.get_qdiscs(index=ifindex))
        except NetlinkError:
            return False
        return any(q.get_attr("TCA_KIND") == "clsact" and q["index"] == ifindex for q in qdiscs)

    def our_filters(self) -> list[FilterInfo]:
        """pktbeat filters on every interface of this namespace (any run)."""
        out: list[FilterInfo] = []
        for link in self.ipr.get_links():
            ifindex = link["index"]
            if self.has_clsact(ifindex):
                out.extend(f for f in self.filters(ifindex) if f.ours)
        return out

    # -- attach / detach ------------------------------------------------------------

    def attach(self, ifindex: int, ifname: str, ingress_only: bool = False) -> None:
        """Attach both hooks (ingress only on loopback); raises TcError, leaving nothing half-done."""
        try:
            if not self.has_clsact(ifindex):
                try:
                    self.ipr.tc("add", "clsact", ifindex)
                    self.created_qdiscs.add(ifindex)
                    self._write_state()
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            for f in self.filters(ifindex):
                pid = f.owner_pid
                if f.ours and pid is not None and pid != self.pid and _pid_is_pktbeat(pid):
                    # Same priority and handle: attaching would silently replace its filter.
                    raise TcError(ifname, f"pktbeat (pid {pid}) is already capturing on it")
            hooks = HOOKS[:1] if ingress_only else HOOKS
            for hook, parent in hooks:
                fd = self.ingress_fd if parent == PARENT_INGRESS else self.egress_fd
                self._remove_at(ifindex, parent, self._mine_or_orphaned)
                self.ipr.tc("add-filter", "bpf", ifindex, FILTER_HANDLE, fd=fd, name=filter_name(self.pid, hook),
                            parent=parent, classid=1, direct_action=True, prio=FILTER_PRIO)
        except NetlinkError as exc:
            self._cleanup_iface(ifindex)
            raise TcError(ifname, os.strerror(exc.code) if exc.code else str(exc)) from None
        except TcError:
            self._cleanup_iface(ifindex)
            raise
        self.attached[ifindex] = (ifname, ingress_only)

    def detach(self, ifindex: int) -> None:
        """Remove our filters from one interface (it may already be gone)."""
        self.attached.pop(ifindex, None)
        self._cleanup_iface(ifindex)

    def detach_all(self) -> None:
        for ifindex in list(self.attached):
            self.detach(ifindex)
        for ifindex in list(self.created_qdiscs):
            self._cleanup_iface(ifindex)
        self._write_state()

    def _cleanup_iface(self, ifindex: int) -> None:
        for _, parent in HOOKS:
            with contextlib.suppress(NetlinkError):
                self._remove_at(ifindex, parent, self._mine)
        if ifindex in self.created_qdiscs:
            self._delete_qdisc_if_empty(ifindex)

    def _mine(self, f: FilterInfo) -> bool:
        return f.ours and f.owner_pid == self.pid

    def _mine_or_orphaned(self, f: FilterInfo) -> bool:
        pid = f.owner_pid
        return f.ours and (pid == self.pid or pid is None or not _pid_is_pktbeat(pid))

    def _remove_at(self, ifindex: int, parent: int, which: Callable[[FilterInfo], bool]) -> int:
        """Delete the filters `which` selects at our (prio, handle) under `parent`; returns how many."""
        removed = 0
        try:
            found = [f for f in self.filters(ifindex) if f.parent == parent]
        except NetlinkError:
            return 0
        for f in found:
            if f.prio != FILTER_PRIO or f.handle != FILTER_HANDLE or not which(f):
                continue
            try:
                self.ipr.tc("del-filter", "bpf", ifindex, FILTER_HANDLE, parent=parent, prio=FILTER_PRIO)
                removed += 1
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                    raise
        return removed

    def _delete_qdisc_if_empty(self, ifindex: int) -> None:
        try:
            if not self.filters(ifindex):
                self.ipr.tc("del", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                log.warning("cannot remove the clsact qdisc pktbeat created on ifindex %d: %s", ifindex,
                            os.strerror(exc.code))
        self.created_qdiscs.discard(ifindex)

    # -- leftovers of killed runs --------------------------------------------------------

    def sweep(self) -> int:
        """Remove filters of pktbeat runs that are gone (and the empty qdiscs they recorded)."""
        removed = 0
        for f in self.our_filters():
            pid = f.owner_pid
            if pid == self.pid or (pid is not None and _pid_is_pktbeat(pid)):
                continue
            if f.prio != FILTER_PRIO or f.handle != FILTER_HANDLE:
                continue
            try:
                self.ipr.tc("del-filter", "bpf", f.ifindex, f.handle, parent=f.parent, prio=f.prio)
                removed += 1
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ENODEV):
                    log.warning("cannot remove a leftover pktbeat filter on ifindex %d: %s", f.ifindex,
                                os.strerror(exc.code))
        for ifindex, pid in list(self._recorded.items()):
            if pid != self.pid and not _pid_is_pktbeat(pid):
                self._delete_qdisc_if_empty(ifindex)
                del self._recorded[ifindex]
        if removed:
            log.info("removed %d TC filter(s) left behind by a pktbeat run that was killed", removed)
        self._write_state()
        return removed

    # -- the state file: clsact qdiscs we created, so a later run may remove them ----------

    def _read_state(self) -> dict[int, int]:
        if self.state_file is None:
            return {}
        try:
            data: Any = json.loads(self.state_file.read_text())
            return {int(k): int(v) for k, v in data.get("qdiscs", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        qdiscs = dict(self._recorded)
        for ifindex in self.created_qdiscs:
            qdiscs[ifindex] = self.pid
        try:
            if not qdiscs:
                self.state_file.unlink(missing_ok=True)
                return
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(json.dumps({"qdiscs": {str(k): v for k, v in qdiscs.items()}}))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.state_file, exc)
