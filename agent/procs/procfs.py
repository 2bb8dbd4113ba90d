"""What /proc says about a live process: executable, argv, working directory, container.

Every read is bounded and none raises: a process may exit between two reads,
and a pid may have been reused, so the details count only when the start
time in /proc/PID/stat is the one the kernel reported for the socket's owner.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from dataclasses import dataclass

from agent.capture.sockrecord import split_args

CMDLINE_LIMIT = 32 * 1024  # bytes of /proc/PID/cmdline read at most
FIB_TRIE_LIMIT = 4 * 1024 * 1024  # bytes of a namespace's fib_trie read at most (a router's can be huge)
CGROUP_LIMIT = 16 * 1024
USER_CACHE_LIMIT = 4096
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# A 64-hex container id as the runtimes name their cgroups: /docker/<id>, docker-<id>.scope,
# cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope, /kubepods/.../<id>.
_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?=/|$)")


@dataclass(frozen=True, slots=True)
class ProcDetails:
    executable: str
    args: tuple[str, ...]
    working_directory: str
    container_id: str


def start_ticks(pid: int, root: str = "/proc") -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when the process is gone."""
    try:
        with open(f"{root}/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    close = data.rfind(b")")  # the name may hold spaces and parentheses
    fields = data[close + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int, start_ns: int, root: str = "/proc") -> bool:
    """True when PID is still the process that started `start_ns` after boot (not a reused pid)."""
    ticks = start_ticks(pid, root)
    return ticks is not None and abs(ticks - start_ns * _CLK_TCK // 1_000_000_000) <= 1


def comm(pid: int, root: str = "/proc") -> str:
    """Field 2 of /proc/PID/stat (the name, cut at 15 bytes), or "" when the process is gone."""
    data = _read(f"{root}/{pid}/stat", 4096)
    return data[data.find(b"(") + 1:data.rfind(b")")].decode("utf-8", "replace") if b")" in data else ""


def _readlink(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        return ""
    return target.removesuffix(" (deleted)")


def _read(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def container_id(cgroup_text: str) -> str:
    """The container id a /proc/PID/cgroup names (the deepest), or ""."""
    found = ""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        for match in _CONTAINER_ID.finditer(path):
            found = match.group(1)
    return found


def read_details(pid: int, start_ns: int, root: str = "/proc") -> ProcDetails | None:
    """The details of `pid` if it is still the process that started at `start_ns`, else None."""
    if not same_process(pid, start_ns, root):
        return None
    base = f"{root}/{pid}"
    details = ProcDetails(
        executable=_readlink(f"{base}/exe"),
        args=split_args(_read(f"{base}/cmdline", CMDLINE_LIMIT)),
        working_directory=_readlink(f"{base}/cwd"),
        container_id=container_id(_read(f"{base}/cgroup", CGROUP_LIMIT).decode("utf-8", "replace")),
    )
    # Read again: had it exited and its pid been reused in between, the details are another's.
    return details if same_process(pid, start_ns, root) else None


def local_addresses(net_dir: str = "/proc/net") -> set[bytes]:
    """The addresses of a network namespace (packed), from its LOCAL routes and IPv6 address list.

    `net_dir` is /proc/net (this process's namespace) or /proc/PID/net (PID's).
    """
    found: set[bytes] = set()
    try:
        with open(f"{net_dir}/fib_trie", encoding="ascii") as handle:
            previous = ""
            read = 0
            for line in handle:
                read += len(line)
                if read > FIB_TRIE_LIMIT:
                    break
                stripped = line.strip()
                if stripped.startswith("/32 host LOCAL") and previous.startswith("|-- "):
                    found.add(socket.inet_aton(previous[4:]))
                previous = stripped
    except (OSError, ValueError):
        pass
    try:
        with open(f"{net_dir}/if_inet6", encoding="ascii") as handle:
            for line in handle:
                hexaddr = line.split(" ", 1)[0]
                if len(hexaddr) == 32:
                    found.add(bytes.fromhex(hexaddr))
    except (OSError, ValueError):
        pass
    return found


_users: dict[int, str] = {}


def user_name(uid: int) -> str:
    """The name of `uid` in this host's user database ("" when it has none); cached."""
    name = _users.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            name = ""
        if len(_users) >= USER_CACHE_LIMIT:
            _users.clear()
        _users[uid] = name
    return name
