"""Decoding of the socket records and maps of bpf/sockets.h (process attribution).

A socket record arrives in a worker's ring among the packet records; its
first u64 has bit 63 set (`is_socket_record`).  tests/capture/test_record_layout.py
checks every format here against the C header by compiling it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from agent.capture.record import BPF_DIR, Buffer, checked_addresses

SOCK_HEADER_FILE = BPF_DIR / "sockets.h"
SOCK_PROGRAM_FILE = BPF_DIR / "sockets.bpf.c"

SOCK_VERSION = 1
SOCK_MARKER = (1 << 63) | (SOCK_VERSION << 32) | 0x534F434B
COMM_LEN = 16
EXE_LEN = 256
ARGS_LEN = 512

HOW_CONNECT, HOW_IO, HOW_REFRESH, HOW_CLOSE = 1, 2, 3, 4
HOW_NAMES = {HOW_CONNECT: "connect", HOW_IO: "io", HOW_REFRESH: "refresh", HOW_CLOSE: "close"}
EXEC_OWN, EXEC_INHERITED, EXEC_ARGS_TRUNCATED = 0x01, 0x02, 0x04

TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("start_ns", "Q"),
    ("parent_start_ns", "Q"),
    ("tgid", "I"),
    ("tid", "I"),
    ("ppid", "I"),
    ("uid", "I"),
    ("gid", "I"),
    ("netns", "I"),
    ("comm", f"{COMM_LEN}s"),
)
TASK = struct.Struct("<" + "".join(code for _, code in TASK_FIELDS))

SOCK_RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("marker", "Q"),
    ("ts_ns", "Q"),
    ("task", f"{TASK.size}s"),
    ("lport", "H"),
    ("rport", "H"),
    ("family", "B"),
    ("l4proto", "B"),
    ("how", "B"),
    ("exec_flags", "B"),
    ("laddr", "16s"),
    ("raddr", "16s"),
)
# The task is unpacked in place (its fields spliced in), not as a nested bytes object.
_RECORD = struct.Struct("<QQ" + TASK.format[1:] + "HHBBBB16s16s")
SOCK_RECORD_SIZE = _RECORD.size

EXEC_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("exe", f"{EXE_LEN}s"),
    ("args", f"{ARGS_LEN}s"),
    ("args_len", "I"),
    ("truncated", "I"),
)
EXEC_TEXT = struct.Struct("<" + "".join(code for _, code in EXEC_TEXT_FIELDS))

# struct pb_exec (the `execs` map value): start_ns, exec_ns, then struct pb_exec_text.
EXEC = struct.Struct("<QQ" + EXEC_TEXT.format[1:])

OWNER_KEY_FIELDS: tuple[tuple[str, str], ...] = (
    ("family", "B"),
    ("l4proto", "B"),
    ("lport", "H"),
    ("rport", "H"),
    ("pad", "H"),
    ("laddr", "16s"),
    ("raddr", "16s"),
)
OWNER_KEY = struct.Struct("<" + "".join(code for _, code in OWNER_KEY_FIELDS))

# Names of enum pb_sock_counter, in order.
SOCK_COUNTER_NAMES: tuple[str, ...] = (
    "connects",
    "connected",
    "connect_unknown",
    "first_io",
    "closed_idle",
    "refreshed",
    "owner_changed",
    "throttled",
    "flows_only",
    "sent",
    "ring_full",
    "execs",
    "exec_truncated",
    "exec_known",
    "owners_failed",
)
SOCK_COUNTERS = struct.Struct("<" + "Q" * len(SOCK_COUNTER_NAMES))


class SockRecordError(ValueError):
    """A socket record that does not fit the layout."""


class TaskFacts(NamedTuple):
    """What the kernel knew about a process when it used a socket (a tuple: one is made per record)."""

    tgid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    start_ns: int  # boot-time ns
    parent_start_ns: int
    netns: int
    comm: str
    exe: str = ""  # from the execve the kernel saw ("" when it did not see one)
    args: tuple[str, ...] = ()
    args_truncated: bool = False
    exec_inherited: bool = False  # exe/args are the parent's (forked, not exec'd since)


class SocketOwner(NamedTuple):
    """One attribution: a local socket and its process."""

    ts_ns: int  # boot-time ns
    family: int
    l4proto: int
    laddr: bytes  # 4 or 16 bytes; all zero: any local address
    lport: int
    raddr: bytes  # all zero with rport 0: an unconnected UDP socket
    rport: int
    how: int
    task: TaskFacts
    exec_flags: int = 0  # EXEC_*: exe/args follow the record (decode_exec_text reads them)


def is_socket_record(buf: Buffer, offset: int) -> bool:
    """True when the ring record at `offset` is a socket record (bit 63 of its first u64)."""
    return bool(buf[offset + 7] & 0x80)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def split_args(raw: bytes) -> tuple[str, ...]:
    """argv from the NUL-separated bytes of a process's argument area."""
    if not raw:
        return ()
    parts = raw.decode("utf-8", "replace").split("\0")
    if parts[-1] == "":
        parts.pop()
    return tuple(parts)


def decode_socket_record(buf: Buffer, offset: int = 0, length: int | None = None, with_exec: bool = True
                         ) -> SocketOwner:
    """The record at `offset`; exe and args only `with_exec` (a reader that knows the process skips them)."""
    end = len(buf) if length is None else offset + length
    if end - offset < SOCK_RECORD_SIZE:
        raise SockRecordError(f"socket record of {end - offset} bytes, expected at least {SOCK_RECORD_SIZE}")
    (marker, ts_ns, start_ns, parent_start_ns, tgid, tid, ppid, uid, gid, netns, comm, lport, rport, family,
     l4proto, how, exec_flags, laddr, raddr) = _RECORD.unpack_from(buf, offset)
    laddr, raddr = checked_addresses("socket", marker, SOCK_MARKER, family, laddr, raddr, SockRecordError)
    if exec_flags & (EXEC_OWN | EXEC_INHERITED) and end - offset < SOCK_RECORD_SIZE + EXEC_TEXT.size:
        raise SockRecordError("socket record announces exec text it does not carry")
    task = TaskFacts(tgid, tid, ppid, uid, gid, start_ns, parent_start_ns, netns, _text(comm))
    if with_exec and exec_flags & (EXEC_OWN | EXEC_INHERITED):
        task = with_exec_text(task, buf, offset, exec_flags)
    return SocketOwner(ts_ns, family, l4proto, laddr, lport, raddr, rport, how, task, exec_flags)


def with_exec_text(task: TaskFacts, buf: Buffer, offset: int, exec_flags: int) -> TaskFacts:
    """`task` with the exe and args that follow the socket record at `offset` (checked to be there)."""
    exe_raw, args_raw, args_len, _truncated = EXEC_TEXT.unpack_from(buf, offset + SOCK_RECORD_SIZE)
    return task._replace(exe=_text(exe_raw), args=split_args(args_raw[:min(args_len, ARGS_LEN)]),
                         args_truncated=bool(exec_flags & EXEC_ARGS_TRUNCATED),
                         exec_inherited=bool(exec_flags & EXEC_INHERITED))


def decode_task(raw: bytes) -> TaskFacts:
    """An `owners` map value (struct pb_task)."""
    start_ns, parent_start_ns, tgid, tid, ppid, uid, gid, netns, comm = TASK.unpack(raw)
    return TaskFacts(tgid, tid, ppid, uid, gid, start_ns, parent_start_ns, netns, _text(comm))


def decode_exec(raw: bytes, start_ns: int) -> tuple[int, str, tuple[str, ...], bool] | None:
    """(exec_ns, exe, args, args truncated) of an `execs` value, if it belongs to the process started at start_ns."""
    exec_start, exec_ns, exe_raw, args_raw, args_len, truncated = EXEC.unpack(raw)
    if exec_start != start_ns:
        return None  # the pid now belongs to another process
    return exec_ns, _text(exe_raw), split_args(args_raw[:min(args_len, ARGS_LEN)]), bool(truncated)


def owner_key(family: int, l4proto: int, laddr: bytes, lport: int, raddr: bytes, rport: int) -> bytes:
    return OWNER_KEY.pack(family, l4proto, lport, rport, 0, laddr.ljust(16, b"\0"), raddr.ljust(16, b"\0"))


def encode_socket_record(owner: SocketOwner, exec_flags: int = 0) -> bytes:
    """The record the kernel would write (tests)."""
    t = owner.task
    out = _RECORD.pack(SOCK_MARKER, owner.ts_ns, t.start_ns, t.parent_start_ns, t.tgid, t.tid, t.ppid, t.uid, t.gid,
                       t.netns, t.comm.encode()[:COMM_LEN], owner.lport, owner.rport, owner.family, owner.l4proto,
                       owner.how, exec_flags, owner.laddr.ljust(16, b"\0"), owner.raddr.ljust(16, b"\0"))
    if exec_flags & (EXEC_OWN | EXEC_INHERITED):
        args = b"".join(a.encode() + b"\0" for a in t.args)[:ARGS_LEN]
        out += EXEC_TEXT.pack(t.exe.encode()[:EXE_LEN - 1], args, len(args), int(t.args_truncated))
    return out

