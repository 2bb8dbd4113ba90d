"""The process table: describing processes from a fake /proc or from the kernel's facts, finding sockets,
bounds and counters, Packetbeat's monitored names, and the fields events get."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from agent import metrics
from agent.capture.sockrecord import EXEC_OWN, HOW_IO, SocketOwner, TaskFacts, encode_socket_record
from agent.events import fields
from agent.procs import procfs
from agent.procs.annotate import annotate
from agent.procs.process import process_fields
from agent.procs.table import PROCS_COUNTERS, Monitored, ProcessTable

TCK = os.sysconf("SC_CLK_TCK")
BOOT_OFFSET = 1_700_000_000 * 10**9  # wall = boot ns + this
NETNS = 4026531840
START = 7 * 10**9
CLIENT, SERVER = b"\x0a\0\0\x01", b"\x0a\0\0\x02"
TASK = TaskFacts(tgid=100, tid=100, ppid=1, uid=0, gid=0, start_ns=START, parent_start_ns=10**6, netns=NETNS,
                 comm="curl", exe="/usr/bin/curl", args=("curl", "http://x/"))


def fake_proc(root: Path, pid: int, start_ns: int, exe: str, args: list[str], cwd: str, cgroup: str = "0::/\n",
              comm: str = "x", addresses: tuple[str, ...] = ()) -> None:
    base = root / str(pid)
    (base / "net").mkdir(parents=True)
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    (base / "net" / "fib_trie").write_text("Main:\n  +-- 0.0.0.0/0 3 0 5\n" + "".join(
        f"     |-- {a}\n        /32 host LOCAL\n" for a in v4))
    (base / "net" / "if_inet6").write_text("".join(
        f"{ipaddress.ip_address(a).packed.hex()} 02 40 00 80     eth0\n" for a in v6))
    ticks = start_ns * TCK // 10**9
    rest = " ".join(["S", "1"] + ["0"] * 17 + [str(ticks), "0"])  # field 22 is starttime
    (base / "stat").write_text(f"{pid} ({comm}) {rest}\n")
    (base / "exe").symlink_to(exe)
    (base / "cwd").symlink_to(cwd)
    (base / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in args))
    (base / "cgroup").write_text(cgroup)


def table(root: Path, **kwargs: Any) -> ProcessTable:
    return ProcessTable(proc_root=str(root), netns=NETNS, clock=lambda: BOOT_OFFSET,
                        counters=metrics.Counters("procs.test", PROCS_COUNTERS), **kwargs)


def owner(task: TaskFacts = TASK, l4proto: int = 6, laddr: bytes = CLIENT, lport: int = 40000,
          raddr: bytes = SERVER, rport: int = 80) -> SocketOwner:
    return SocketOwner(START + 10**6, 4 if len(laddr) == 4 else 6, l4proto, laddr, lport, raddr, rport, HOW_IO, task)


def test_a_live_process_is_described_from_proc(tmp_path: Path) -> None:
    docker = "0::/system.slice/docker-" + "ab" * 32 + ".scope\n"
    fake_proc(tmp_path, 100, START, "/usr/bin/curl.real", ["curl", "-s", "http://x/"], "/srv", docker)
    t = table(tmp_path)
    info = t.add(owner())
    assert (info.pid, info.ppid, info.name, info.executable, info.args, info.working_directory) == (
        100, 1, "curl", "/usr/bin/curl.real", ("curl", "-s", "http://x/"), "/srv")
    assert info.container_id == "ab" * 32 and info.start_ns == START + BOOT_OFFSET
    assert t.counters["proc_details"] == 1
    fields = process_fields(info)
    assert fields == {"pid": 100, "ppid": 1, "parent": {"pid": 1}, "name": "curl", "executable": "/usr/bin/curl.real",
                      "args": ["curl", "-s", "http://x/"], "args_count": 3, "working_directory": "/srv",
                      "start": "2023-11-14T22:13:27.000Z", "user": {"id": "0", "name": "root"}}
    fields["args"].append("edited")  # what an event owns is a copy
    fields["user"]["name"] = "edited"
    assert process_fields(info)["args"] == ["curl", "-s", "http://x/"] and info.fields["user"]["name"] == "root"


def test_an_exited_or_reused_pid_falls_back_to_the_kernels_facts(tmp_path: Path) -> None:
    t = table(tmp_path)
    gone = t.add(owner())
    assert (gone.executable, gone.args, gone.working_directory) == ("/usr/bin/curl", ("curl", "http://x/"), "")
    assert t.counters["proc_gone"] == 1 and t.counters["exec_from_kernel"] == 1
    # pid 200 exists, but started at another time: another process now has it
    fake_proc(tmp_path, 200, START + 5 * 10**9, "/usr/bin/other", ["other"], "/")
    reused = t.add(owner(TASK._replace(tgid=200, exe="", args=()), lport=40001))
    assert (reused.pid, reused.name, reused.executable, reused.args) == (200, "curl", "", ())


def test_a_gone_child_forked_without_execve_gets_its_live_parents_program(tmp_path: Path) -> None:
    """A PostgreSQL backend that started before pktbeat (no execve record) and exited before its socket was read."""
    parent_start = 10**9
    fake_proc(tmp_path, 50, parent_start, "/usr/lib/postgresql/15/bin/postgres", ["postgres", "-D", "/db"], "/db",
              comm="postgres")
    t = table(tmp_path)
    backend = TASK._replace(tgid=51, ppid=50, parent_start_ns=parent_start, comm="postgres", exe="", args=())
    info = t.add(owner(backend, laddr=SERVER, lport=5432, raddr=CLIENT, rport=40000))
    assert (info.pid, info.ppid, info.executable, info.args, info.working_directory) == (
        51, 50, "/usr/lib/postgresql/15/bin/postgres", ("postgres", "-D", "/db"), "/db")
    assert t.counters["exec_from_parent"] == 1
    # exiting: its stat is still there (the same process), its exe and cmdline are not
    zombie = tmp_path / "54"
    zombie.mkdir()
    zombie_stat = (tmp_path / "50" / "stat").read_text().replace("50 (postgres)", "54 (postgres)")
    (zombie / "stat").write_text(zombie_stat.replace(str(parent_start * TCK // 10**9), str(START * TCK // 10**9)))
    exiting = t.add(owner(backend._replace(tgid=54), laddr=SERVER, lport=5435))
    assert (exiting.executable, exiting.args) == ("/usr/lib/postgresql/15/bin/postgres", ("postgres", "-D", "/db"))
    assert t.counters["exec_from_parent"] == 2 and t.counters["proc_details"] == 1
    # another name (it ran execve before pktbeat started), or a parent pid now another process's: nothing borrowed
    other = t.add(owner(backend._replace(tgid=52, comm="psql"), laddr=SERVER, lport=5433))
    reused = t.add(owner(backend._replace(tgid=53, parent_start_ns=parent_start + 10**9), laddr=SERVER, lport=5434))
    assert other.executable == "" and reused.executable == "" and t.counters["exec_from_parent"] == 2


def test_comm_cut_at_15_bytes_is_completed_from_argv(tmp_path: Path) -> None:
    t = table(tmp_path)
    long_name = TASK._replace(comm="a-long-program-", args=("/opt/bin/a-long-program-name", "--x"))
    assert t.add(owner(long_name)).name == "a-long-program-name"


def test_monitored_processes_get_their_configured_name(tmp_path: Path) -> None:
    monitored = (Monitored("web", "nginx: worker"), Monitored("curl-client"), Monitored("never", "zzz"))
    fake_proc(tmp_path, 300, START, "/usr/sbin/nginx", ["nginx: worker process"], "/")
    t = table(tmp_path, monitored=monitored)
    nginx = TASK._replace(tgid=300, comm="nginx", exe="", args=())
    assert t.add(owner(nginx, laddr=SERVER, lport=80, raddr=CLIENT, rport=40000)).name == "web"
    # no cmdline_grep: the process name is the pattern; without /proc the kernel's argv is searched
    assert t.add(owner(TASK._replace(args=("/usr/bin/curl-client", "-v")))).name == "curl-client"


def test_finding_sockets_tcp_exact_udp_wildcards(tmp_path: Path) -> None:
    t = table(tmp_path)
    t.add(owner())
    fake_proc(tmp_path, 53, START + 1, "/usr/sbin/named", ["named"], "/", addresses=("10.0.0.2", "fd00::2"))
    dns = TASK._replace(tgid=53, comm="named", start_ns=START + 1)
    t.add(owner(dns, l4proto=17, laddr=b"\0" * 16, lport=53, raddr=b"\0" * 16, rport=0))  # dual-stack, any address
    resolver = TASK._replace(tgid=54, comm="resolver", start_ns=START + 2)
    t.add(owner(resolver, l4proto=17, laddr=CLIENT, lport=5353, raddr=b"\0" * 4, rport=0))  # bound, unconnected
    assert t.find(6, CLIENT, 40000, SERVER, 80).pid == 100  # type: ignore[union-attr]
    assert t.find(6, CLIENT, 40000, SERVER, 81) is None  # TCP: the exact 4-tuple only
    assert t.find(6, SERVER, 80, CLIENT, 40000) is None
    assert t.find(17, SERVER, 53, CLIENT, 33333).name == "named"  # type: ignore[union-attr]
    assert t.find(17, b"\xfd" + b"\0" * 14 + b"\2", 53, b"\xfd" + b"\0" * 14 + b"\1", 33333) is not None
    assert t.find(17, b"\x7f\0\0\1", 53, b"\x7f\0\0\1", 33333) is not None  # loopback is every namespace's
    # Bound to any address, but the datagram was for an address of no local namespace: forwarded, or broadcast.
    assert t.find(17, b"\x0a\x09\x09\x09", 53, CLIENT, 33333) is None
    assert t.find(17, b"\xff\xff\xff\xff", 53, CLIENT, 68) is None
    assert t.counters["not_local"] == 2
    assert t.find(17, CLIENT, 5353, SERVER, 53).name == "resolver"  # type: ignore[union-attr]
    assert t.find(17, SERVER, 5353, CLIENT, 53) is None  # bound to CLIENT's address only
    assert t.counters["lookups"] == 10 and t.counters["found"] == 5


def test_one_tuple_in_several_namespaces(tmp_path: Path) -> None:
    t = table(tmp_path)
    other = TASK._replace(tgid=501, netns=111, comm="elsewhere", start_ns=START + 1)
    newer = TASK._replace(tgid=502, netns=222, comm="newer", start_ns=START + 2)
    t.add(owner(other))
    t.add(owner(newer))
    assert t.find(6, CLIENT, 40000, SERVER, 80).name == "newer"  # type: ignore[union-attr]
    assert t.counters["ambiguous"] == 1
    t.add(owner(TASK._replace(tgid=500, comm="mine", start_ns=START + 3)))  # the agent's own namespace wins
    t.add(owner(newer._replace(start_ns=START + 4)))
    assert t.find(6, CLIENT, 40000, SERVER, 80).name == "mine"  # type: ignore[union-attr]


def test_tables_are_bounded_and_count_what_they_drop(tmp_path: Path) -> None:
    t = table(tmp_path, max_sockets=3, max_processes=2)
    for i in range(5):
        t.add(owner(TASK._replace(tgid=1000 + i, start_ns=START + i), lport=41000 + i))
    assert len(t) == 3 and t.counters["sockets_evicted"] == 2 and t.counters["processes_evicted"] == 3
    assert t.find(6, CLIENT, 41000, SERVER, 80) is None
    assert t.find(6, CLIENT, 41004, SERVER, 80).pid == 1004  # type: ignore[union-attr]


def test_records_from_the_ring(tmp_path: Path) -> None:
    t = table(tmp_path)
    raw = encode_socket_record(owner(), EXEC_OWN)
    assert t.add_record(raw) is not None and t.find(6, CLIENT, 40000, SERVER, 80) is not None
    assert t.add_record(raw[:50]) is None and t.counters["bad_records"] == 1


def test_annotate_names_source_destination_and_the_serving_process(tmp_path: Path) -> None:
    fake_proc(tmp_path, 300, START, "/usr/sbin/nginx", ["nginx"], "/", "0::/kubepods/burstable/pod1/" + "cd" * 32)
    t = table(tmp_path)
    t.add(owner())
    t.add(owner(TASK._replace(tgid=300, comm="nginx", exe="", args=()), laddr=SERVER, lport=80, raddr=CLIENT,
                rport=40000))
    event: dict[str, Any] = {"source": {"ip": "10.0.0.1"}, "destination": {"ip": "10.0.0.2"}}
    annotate(event, t, 6, CLIENT, 40000, SERVER, 80)
    assert event["source"]["process"]["name"] == "curl" and event["destination"]["process"]["name"] == "nginx"
    assert event["process"] == event["destination"]["process"] and event["process"] is not \
        event["destination"]["process"]
    assert event["container"] == {"id": "cd" * 32}
    assert not fields.unmapped(fields.flatten_keys(event))  # the index template maps every new field
    t.add(owner(raddr=b"\x08\x08\x08\x08", lport=40001))
    only_client: dict[str, Any] = {"source": {}, "destination": {}}
    annotate(only_client, t, 6, CLIENT, 40001, b"\x08\x08\x08\x08", 80)
    assert only_client["process"]["name"] == "curl" and "process" not in only_client["destination"]
    nobody: dict[str, Any] = {"source": {}, "destination": {}}
    annotate(nobody, t, 6, b"\1\1\1\1", 1, b"\2\2\2\2", 2)
    assert nobody == {"source": {}, "destination": {}}


@pytest.mark.parametrize(("cgroup", "expected"), [
    ("0::/system.slice/docker-" + "a1" * 32 + ".scope\n", "a1" * 32),
    ("12:memory:/docker/" + "b2" * 32 + "\n0::/\n", "b2" * 32),
    ("0::/kubepods.slice/kubepods-pod9.slice/cri-containerd-" + "c3" * 32 + ".scope\n", "c3" * 32),
    ("0::/machine.slice/libpod-" + "d4" * 32 + ".scope/container\n", "d4" * 32),
    ("0::/user.slice/user-0.slice/session-1.scope\n", ""),
    ("0::/" + "e5" * 31 + "\n", ""),  # too short for an id
])
def test_container_ids_from_cgroup_paths(cgroup: str, expected: str) -> None:
    assert procfs.container_id(cgroup) == expected


def test_the_running_process_is_itself() -> None:
    ticks = procfs.start_ticks(os.getpid())
    assert ticks is not None
    details = procfs.read_details(os.getpid(), ticks * 10**9 // TCK)
    assert details is not None and Path(details.executable).exists() and details.working_directory == os.getcwd()
    assert procfs.read_details(os.getpid(), (ticks + 500) * 10**9 // TCK) is None
    assert procfs.user_name(0) == "root" and procfs.user_name(2**31 - 7) == ""
    assert b"\x7f\0\0\x01" in procfs.local_addresses() == procfs.local_addresses(f"/proc/{os.getpid()}/net")
