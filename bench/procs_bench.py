"""What process attribution costs: short connections with no agent, the agent without and with packetbeat.procs.

    sudo .venv/bin/python bench/procs_bench.py [--connections 5000] [--rounds 5] [--blocks 2]
        [--workloads loop,fork]

nginx runs in namespace b; in namespace a a C client (tests/procs/short_lived.c)
makes `--connections` HTTP/1.1 requests with "Connection: close":

  loop  one process, one connection after the other (connect, request,
        response, close): the cost the kernel programs add to each socket;
  fork  one child per connection, four at a time, each exiting as soon as
        it has its response: the short-lived clients attribution is for.

Modes: `none` (no agent), `off` (the agent on a's veth, packetbeat.procs.enabled:
false) and `on` (the default).  Modes run in blocks (none, off, on) repeated
`--blocks` times, `--rounds` runs each; per connection, the table gives the
median wall time as the client measures it, the CPU time of the workload (the
client, its children and nginx: the kernel programs run in their context),
each relative to `off` (what enabling attribution costs the traced programs)
and to `none`, and the agent's own CPU time (parent and workers, from /proc).  The raw tracepoints are
global: nothing else on the machine should run an agent with attribution
while the bench runs, or `off` is not off.

Wall times on a shared machine vary by +-20%, and on a small one the agent's
own CPU competes with the workload: `--pin-agent 1 --pin-workload 0` keeps
them apart, so that `vs off` is what the kernel side adds.  `--bpf-stats` measures the
kernel side exactly instead: it turns on kernel.bpf_stats_enabled for the
`on` runs (and restores it) and reports the run time of each socket program
per connection, from the agent's program fds (/proc/PID/fdinfo); the least
of the runs is reported too (a program preempted on a busy machine counts the
time it waited).

`--userspace` measures (CPU time), in this process and without root, what a worker does
more per connection with attribution: learning the two sockets from their
records (a new client process each time, the same server) and building and
encoding an HTTP event with and without the process fields.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.live import live_agent  # noqa: E402
from tests.helpers.netns import VethPair, veth_pair  # noqa: E402
from tests.protocols.http.test_live import NGINX_PORT, _nginx_conf  # noqa: E402

MODES = ("none", "off", "on")
PARALLEL = {"loop": 0, "fork": 4}
_TICK = os.sysconf("SC_CLK_TCK")


def build_client(work: Path) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler is needed to build the client")
    binary = work / "short_lived"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(ROOT / "tests" / "procs" / "short_lived.c")],
                   check=True)
    return str(binary)


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every process in a process group (the agent and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / _TICK


def pin_group(pgid: int, cpus: set[int]) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_bytes()
                if int(data[data.rfind(b")") + 2:].split()[2]) == pgid:
                    os.sched_setaffinity(int(entry), cpus)
            except (OSError, ValueError):
                continue


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_client(pair: VethPair, client: str, connections: int, parallel: int, pin: str = "") -> tuple[float, float]:
    """(wall seconds as the client measured them, CPU seconds of the client, its children and nginx)."""
    prefix = ["taskset", "-c", pin] if pin else []
    servers = [p.pid for p in pair.b.processes]
    cpu0 = children_cpu_s() + sum(group_cpu_s(pid) for pid in servers)
    proc = pair.a.run([*prefix, client, pair.b_ip, str(NGINX_PORT), str(connections), str(parallel)], timeout=600)
    cpu = children_cpu_s() + sum(group_cpu_s(pid) for pid in servers) - cpu0
    for line in proc.stderr.splitlines():
        if line.startswith("elapsed "):
            return int(line.split()[1]) / 1e9, cpu
    raise RuntimeError(f"no elapsed time from the client: {proc.stderr!r}")


def raw_tracepoint_stats(pid: int) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) of each raw-tracepoint program `pid` holds, by program tag."""
    out: dict[str, tuple[int, int]] = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if info.get("prog_type", "").strip() == "17":  # BPF_PROG_TYPE_RAW_TRACEPOINT
            out[info["prog_tag"].strip()] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    return out


Results = dict[tuple[str, str], list[tuple[float, float, float]]]  # (workload, mode) -> (wall, work cpu, agent cpu)


def measure(pair: VethPair, client: str, mode: str, workloads: list[str], args: argparse.Namespace,
            results: Results, kernel_ns: dict[str, list[float]]) -> None:
    def rounds(pgid: int | None) -> None:
        for workload in workloads:
            run_client(pair, client, min(500, args.connections), PARALLEL[workload], args.pin_workload)  # warm-up
            for _ in range(args.rounds):
                cpu0 = group_cpu_s(pgid) if pgid else 0.0
                stats0 = raw_tracepoint_stats(pgid) if pgid and args.bpf_stats else {}
                elapsed, work_cpu = run_client(pair, client, args.connections, PARALLEL[workload], args.pin_workload)
                if stats0 and pgid:
                    stats = raw_tracepoint_stats(pgid)
                    spent = sum(stats[tag][0] - stats0.get(tag, (0, 0))[0] for tag in stats)
                    kernel_ns.setdefault(workload, []).append(spent / args.connections)
                time.sleep(0.3)  # the agent catches up: its CPU for this run counts here
                cpu = group_cpu_s(pgid) - cpu0 if pgid else 0.0
                results.setdefault((workload, mode), []).append((elapsed, work_cpu, cpu))

    if mode == "none":
        rounds(None)
        return
    settings = {"packetbeat.procs.enabled": mode == "on", "packetbeat.interfaces.buffer_size_mb": 16}
    with live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [NGINX_PORT]}], settings) as agent:
        if args.pin_agent:
            pin_group(agent.proc.pid, {int(c) for c in args.pin_agent.split(",")})
        rounds(agent.proc.pid)
        agent.stop()
        if "exception" in agent.log().lower() or "Traceback" in agent.log():
            raise RuntimeError(agent.log()[-3000:])


def userspace(connections: int) -> None:
    """Per-connection user-space cost of attribution in a worker (see the module doc)."""
    from agent.capture.sockrecord import EXEC_OWN, HOW_CONNECT, HOW_IO, SocketOwner, TaskFacts, encode_socket_record
    from agent.events.builder import AgentIdentity, EventBuilder
    from agent.events.direction import DirectionClassifier
    from agent.procs.table import ProcessTable
    from agent.protocols.base import Transaction
    from agent.transport.types import ConnectionInfo, Endpoint

    client_ip, server_ip = b"\x0a\0\0\x01", b"\x0a\0\0\x02"
    args = ("/usr/bin/curl", "-sS", "-o", "/dev/null", "http://10.0.0.2:8080/index.html")
    server = TaskFacts(1000, 1000, 1, 0, 0, 10**9, 1, 4026531840, "nginx")
    records = []
    for i in range(connections):
        client = TaskFacts(200000 + i, 200000 + i, 999, 0, 0, 2 * 10**9 + i, 1, 4026531840, "curl", args[0], args)
        port = 10000 + i % 50000
        records.append(encode_socket_record(SocketOwner(0, 4, 6, client_ip, port, server_ip, 8080, HOW_CONNECT,
                                                        client), EXEC_OWN))
        records.append(encode_socket_record(SocketOwner(0, 4, 6, server_ip, 8080, client_ip, port, HOW_IO, server)))
    table = ProcessTable(max_sockets=2 * connections, max_processes=2 * connections)
    from agent.runtime import wiring

    wiring.tune_gc()  # as a worker does
    started = time.process_time()
    for raw in records:
        table.add_record(raw)
    learn = (time.process_time() - started) / connections
    builder = EventBuilder(AgentIdentity.create("bench"), DirectionClassifier(frozenset(), []))
    fields = {"http": {"request": {"method": "GET", "bytes": 91}, "response": {"status_code": 200, "bytes": 240}},
              "url": {"path": "/index.html"}, "method": "GET"}
    cost = {}
    for mode in ("off", "on", "off", "on"):
        builder.processes = table if mode == "on" else None
        started = time.process_time()
        size = 0
        for i in range(connections):
            conn = ConnectionInfo(Endpoint(client_ip, 10000 + i % 50000), Endpoint(server_ip, 8080), 4, "tcp")
            event = builder.transaction_event(Transaction(type="http", conn=conn, ts_ns=10**18, fields={
                k: dict(v) if isinstance(v, dict) else v for k, v in fields.items()}))
            assert event is not None
            size += len(builder.encode(event).data)
        cost[mode] = ((time.process_time() - started) / connections, size / connections)
    print(f"user space, {connections} connections, per connection:")
    print(f"  learning two sockets (a new client process each):      {learn * 1e6:6.1f}us")
    print(f"  HTTP event built and encoded without process fields:   {cost['off'][0] * 1e6:6.1f}us, "
          f"{cost['off'][1]:.0f} bytes")
    print(f"  HTTP event built and encoded with them:                {cost['on'][0] * 1e6:6.1f}us, "
          f"{cost['on'][1]:.0f} bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--workloads", default="loop,fork")
    parser.add_argument("--bpf-stats", action="store_true", help="time the socket programs in the kernel")
    parser.add_argument("--pin-agent", default="", help="CPUs for the agent (e.g. 1), apart from the workload")
    parser.add_argument("--pin-workload", default="", help="CPUs for nginx and the client (e.g. 0)")
    parser.add_argument("--userspace", action="store_true", help="only the worker's user-space cost, in-process")
    args = parser.parse_args()
    if args.userspace:
        userspace(args.connections)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces and eBPF")
    workloads = [w for w in args.workloads.split(",") if w]
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        raise SystemExit("nginx is needed (nginx-light)")
    results: Results = {}
    kernel_ns: dict[str, list[float]] = {}
    stats_file = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_before = stats_file.read_text().strip() if args.bpf_stats else ""
    with tempfile.TemporaryDirectory(prefix="pktbeat-procs-bench-") as tmp, veth_pair("pbx") as pair:
        root = Path(tmp)
        (root / "www").mkdir()
        (root / "www" / "index.html").write_text("hello\n")
        (root / "nginx.conf").write_text(_nginx_conf(root, pair.b_ip))
        pair.b.popen([nginx, "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")])
        pair.b.wait_port(NGINX_PORT, pair.b_ip)
        if args.pin_workload:
            for proc in pair.b.processes:
                pin_group(proc.pid, {int(c) for c in args.pin_workload.split(",")})
        client = build_client(root)
        for _ in range(args.blocks):
            for mode in MODES:
                if args.bpf_stats:
                    stats_file.write_text("1" if mode == "on" else stats_before)
                try:
                    measure(pair, client, mode, workloads, args, results, kernel_ns)
                finally:
                    if args.bpf_stats:
                        stats_file.write_text(stats_before)
    print(f"{args.connections} connections per run, {args.rounds} runs x {args.blocks} blocks per mode (medians)")
    print(f"{'workload':8} {'mode':5} {'wall/conn':>10} {'vs off':>7} {'vs none':>8} "
          f"{'work cpu/conn':>14} {'vs off':>7} {'vs none':>8} {'agent cpu/conn':>15}")
    per = 1e6 / args.connections
    for workload in workloads:
        runs = {mode: results[(workload, mode)] for mode in MODES}
        wall = {mode: statistics.median(r[0] for r in runs[mode]) for mode in MODES}
        work = {mode: statistics.median(r[1] for r in runs[mode]) for mode in MODES}
        for mode in MODES:
            agent_cpu = statistics.median(r[2] for r in runs[mode])
            print(f"{workload:8} {mode:5} {wall[mode] * per:8.1f}us {(wall[mode] / wall['off'] - 1) * 100:+6.1f}% "
                  f"{(wall[mode] / wall['none'] - 1) * 100:+7.1f}% {work[mode] * per:12.1f}us "
                  f"{(work[mode] / work['off'] - 1) * 100:+6.1f}% {(work[mode] / work['none'] - 1) * 100:+7.1f}% "
                  f"{agent_cpu * per:13.1f}us")
    for workload, values in kernel_ns.items():
        print(f"{workload}: socket programs ran {statistics.median(values) / 1000:.2f}us per connection "
              f"(median of runs; least {min(values) / 1000:.2f}us) (bpf_stats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
