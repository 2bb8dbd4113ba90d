"""Process attribution in the kernel: compile options for bpf/sockets.bpf.c, its tracepoints and maps.

`socket_cflags` reads the running kernel's struct offsets from BTF and
returns the -D options that compile bpf/sockets.bpf.c into the capture
module (or the one-line reason it cannot be).  Once BCC has compiled the
module, `SocketTracer` loads and attaches the four raw tracepoints and
exposes the maps the parent reads (`owners` for flows, `execs`, counters).

Raw tracepoints are closed here, not by BCC's clean-up (which touches
tracefs for other probe kinds): a tracepoint stays attached while any
process holds its fd, so forked workers must close `fds` too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.capture import sockrecord
from agent.capture.bpfmap import BpfMap
from agent.capture.btf import VMLINUX, Btf, BtfError
from agent.capture.sockrecord import TaskFacts

log = logging.getLogger("pktbeat.capture")

# -DPB_OFF_<NAME>=offset for each (struct, member path) the programs read.
OFFSETS: dict[str, tuple[str, str]] = {
    "TASK_TGID": ("task_struct", "tgid"),
    "TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "TASK_COMM": ("task_struct", "comm"),
    "TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "TASK_MM": ("task_struct", "mm"),
    "MM_ARG_START": ("mm_struct", "arg_start"),
    "MM_ARG_END": ("mm_struct", "arg_end"),
    "BPRM_INTERP": ("linux_binprm", "interp"),
    "SKC_FAMILY": ("sock_common", "skc_family"),
    "SKC_DADDR": ("sock_common", "skc_daddr"),
    "SKC_RCV_SADDR": ("sock_common", "skc_rcv_saddr"),
    "SKC_DPORT": ("sock_common", "skc_dport"),
    "SKC_NUM": ("sock_common", "skc_num"),
    "SKC_NET": ("sock_common", "skc_net"),
    "SKC_V6_DADDR": ("sock_common", "skc_v6_daddr"),
    "SKC_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr"),
    "SK_PROTOCOL": ("sock", "sk_protocol"),
    "NET_INUM": ("net", "ns.inum"),
}
# The members the programs read with a fixed width: a kernel whose layout differs is refused.
_WIDTHS = {"TASK_TGID": 4, "TASK_START_BOOTTIME": 8, "TASK_COMM": 16, "SKC_FAMILY": 2, "SKC_DPORT": 2,
           "SKC_NUM": 2, "SK_PROTOCOL": 2, "NET_INUM": 4, "SKC_DADDR": 4, "SKC_RCV_SADDR": 4,
           "SKC_V6_DADDR": 16, "SKC_V6_RCV_SADDR": 16, "MM_ARG_START": 8, "MM_ARG_END": 8}
# sock_common sits at offset 0 of struct sock: the programs read both from the same pointer.
_SOCK_COMMON_IN_SOCK = ("sock", "__sk_common")

# (tracepoint, program) pairs, attached in this order.
TRACEPOINTS: tuple[tuple[str, str], ...] = (
    ("sched_process_exec", "pb_exec"),
    ("inet_sock_set_state", "pb_sock_state"),
    ("sock_send_length", "pb_sock_send"),
    ("sock_recv_length", "pb_sock_recv"),
)

DEFAULT_MAX_SOCKETS = 65536
DEFAULT_MAX_EXECS = 4096
REFRESH_S = 60.0  # an attribution is sent again this long after the last one for a busy socket


class SocketsUnavailable(Exception):
    """Process attribution cannot run on this kernel; the message is one line for the operator."""


@dataclass(frozen=True)
class SocketSettings:
    max_sockets: int = DEFAULT_MAX_SOCKETS  # connecting, attributed and owners maps
    max_execs: int = DEFAULT_MAX_EXECS  # execve facts by process
    btf_file: str = str(VMLINUX)  # the running kernel's BTF


def socket_cflags(settings: SocketSettings, btf: Btf | None = None) -> list[str]:
    """The -D options of bpf/sockets.bpf.c for the running kernel; SocketsUnavailable when BTF lacks a fact."""
    try:
        btf = btf or Btf.load(Path(settings.btf_file))
        flags = []
        for name, (struct_name, path) in OFFSETS.items():
            member = btf.member(struct_name, path)
            if member.bit_size:
                raise SocketsUnavailable(f"{struct_name}.{path} is a bitfield in this kernel")
            width = _WIDTHS.get(name)
            if width is not None and member.size != width:
                raise SocketsUnavailable(f"{struct_name}.{path} is {member.size} bytes in this kernel, "
                                         f"expected {width}")
            flags.append(f"-DPB_OFF_{name}={member.offset}")
        if btf.offset(*_SOCK_COMMON_IN_SOCK) != 0:
            raise SocketsUnavailable("struct sock does not start with sock_common in this kernel")
    except BtfError as exc:
        raise SocketsUnavailable(f"no usable BTF ({exc})") from None
    return [
        *flags,
        "-DPB_PROCS=1",
        f"-I{sockrecord.SOCK_HEADER_FILE.parent}",
        f"-DPB_MAX_SOCKETS={settings.max_sockets}",
        f"-DPB_MAX_EXECS={settings.max_execs}",
        f"-DPB_REFRESH_NS={int(REFRESH_S * 1e9)}ULL",
    ]


class SocketTracer:
    """The attached socket programs of a compiled module, and their maps."""

    def __init__(self, bpf: Any, settings: SocketSettings) -> None:
        from bcc import BPF

        self.settings = settings
        self.fds: list[int] = []
        try:
            for tracepoint, program in TRACEPOINTS:
                fn = bpf.load_func(program.encode(), BPF.RAW_TRACEPOINT)
                fd = _attach(fn.fd, tracepoint)
                self.fds.append(fd)
        except Exception as exc:  # BCC raises bare Exceptions
            self.close()
            raise SocketsUnavailable(str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)) from None

        def fd_of(name: str) -> int:
            return int(bpf.get_table(name).get_fd())

        self.owners = BpfMap("owners", fd_of("owners"), sockrecord.OWNER_KEY.size, sockrecord.TASK.size,
                             settings.max_sockets)
        self.execs = BpfMap("execs", fd_of("execs"), 4, sockrecord.EXEC.size, settings.max_execs)
        self.counters_map = BpfMap("sock_counters", fd_of("sock_counters"), 4, sockrecord.SOCK_COUNTERS.size, 1,
                                   percpu=True)

    def owner(self, family: int, l4proto: int, laddr: bytes, lport: int, raddr: bytes, rport: int) -> TaskFacts | None:
        """The task `owners` holds for a local endpoint, with the execve facts `execs` still has for it."""
        raw = self.owners.lookup(sockrecord.owner_key(family, l4proto, laddr, lport, raddr, rport))
        if raw is None:
            return None
        task = sockrecord.decode_task(raw)
        found = self._exec_of(task.tgid, task.start_ns)
        inherited = False
        if found is None:
            found = self._exec_of(task.ppid, task.parent_start_ns)
            if found is not None and task.start_ns < found[0]:
                found = None  # forked before its parent's execve: another program
            inherited = found is not None
        if found is None:
            return task
        _exec_ns, exe, args, truncated = found
        return task._replace(exe=exe, args=args, args_truncated=truncated, exec_inherited=inherited)

    def _exec_of(self, tgid: int, start_ns: int) -> tuple[int, str, tuple[str, ...], bool] | None:
        raw = self.execs.lookup(tgid.to_bytes(4, "little"))
        if raw is None:
            return None
        return sockrecord.decode_exec(raw, start_ns)

    def counters(self) -> dict[str, int]:
        return self.counters_map.counter_totals(b"\0\0\0\0", sockrecord.SOCK_COUNTER_NAMES)

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _attach(prog_fd: int, tracepoint: str) -> int:
    from bcc.libbcc import lib

    fd = int(lib.bpf_attach_raw_tracepoint(prog_fd, tracepoint.encode()))
    if fd < 0:
        raise SocketsUnavailable(f"the raw tracepoint {tracepoint} cannot be attached: {os.strerror(-fd)}")
    return fd
