"""A process as events describe it, and its Packetbeat/ECS fields.

Packetbeat (packetbeat/procs, libbeat's ecs.Process) reports `pid`, `ppid`
(`parent.pid` in recent versions; both are written), `name`, `executable`,
`args`, `working_directory` and `start`.  pktbeat adds `args_count` and the
process's user as ECS puts it, `process.user.id`/`process.user.name` (the
top-level `user` belongs to the protocols: HTTP, AMQP, SIP and NFS fill it).  The fields are
rendered once per process; `process_fields` hands out copies, because
processors may edit an event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    ppid: int
    name: str
    executable: str
    args: tuple[str, ...]
    working_directory: str
    start_ns: int  # wall clock, ns since the epoch
    uid: int
    user_name: str
    container_id: str
    netns: int
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def make_process(pid: int, ppid: int, name: str, executable: str, args: tuple[str, ...], working_directory: str,
                 start_ns: int, uid: int, user_name: str, container_id: str, netns: int) -> ProcessInfo:
    fields: dict[str, Any] = {"pid": pid, "name": name}
    if ppid:
        fields["ppid"] = ppid
        fields["parent"] = {"pid": ppid}
    if executable:
        fields["executable"] = executable
    if args:
        fields["args"] = list(args)
        fields["args_count"] = len(args)
    if working_directory:
        fields["working_directory"] = working_directory
    if start_ns:
        fields["start"] = _timestamp(start_ns)
    user = {"id": str(uid)}
    if user_name:
        user["name"] = user_name
    fields["user"] = user
    return ProcessInfo(pid, ppid, name, executable, args, working_directory, start_ns, uid, user_name, container_id,
                       netns, fields)


def process_fields(info: ProcessInfo) -> dict[str, Any]:
    """A copy of the process's fields that an event may own (and a processor edit)."""
    out = dict(info.fields)
    if "parent" in out:
        out["parent"] = dict(out["parent"])
    if "args" in out:
        out["args"] = list(out["args"])
    out["user"] = dict(out["user"])
    return out


def _timestamp(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac // 1_000_000:03d}Z"
