#!/usr/bin/env python3
"""Live capacity per protocol: real servers driven at rising rates through the live agent, one worker.

    sudo .venv/bin/python bench/capacity.py [--only http-keepalive,dns,...] [--seconds 5]
                                            [--rates-scale 1.0] [--markdown] [--keep-going]

Each scenario runs its server from Debian in namespace b and a load
generator in namespace a; pktbeat captures live (eBPF) on a's veth with one
worker and the default 24 MiB ring, and writes events to a file.  For each
target rate a fresh agent starts, the generator runs `--seconds`, and the
agent gets up to 30 s to catch up.  Then:

  server     transactions the server counted (its own statistics or log)
  events     the agent's events of the protocol for them
  lost       server - events: transactions the agent did not publish
  unmatched  the protocol's unmatched-request/response counters
  drops      kernel ring drops, worker channel drops, queue drops
  agent cpu  CPU of the agent and its worker, from the start of the load until it
             caught up: in microseconds per transaction, and as a share of one core
             over the load's duration
  gen/srv    CPU of the load generator and of the server (share of one core)
  behind     seconds after the load ended that the agent's output still grew
             (its backlog, plus up to a second of output flushing)

The summary adds "a core's worth": 1e6 / (agent CPU microseconds per
transaction), the rate the agent would sustain with a core to itself (the
measured rate shares the two cores with the server and the generator).

A rate passes with zero unexplained loss when lost, unmatched and drops are
all zero (for DNS, queries the generator itself counted as lost on the wire
are explained: the agent saw each of them and published it without a
response, so they count among the events and the unmatched requests).
The last column says what limited a rate that fell short of its target:
`agent` when it lost transactions or used a whole core, `generator` or
`server` when that process used a whole core, `machine` otherwise (the 2
cores are shared with the server, the generator and, on a shared host,
everyone else: note the load average).

Scenarios and generators (Debian packages, see scripts/setup.sh):

  http-keepalive  nginx, wrk -c 32 over keep-alive connections, a 612-byte page
  http-close      nginx, wrk with `Connection: close`: a TCP connection per request
  dns             dnsmasq answering example.test itself, dnsperf -Q (rate-limited)
  dns-replay      no server: 20,000 generated DNS exchanges (bench/gen_proto_pcap.py), each from its own
                  client address and port, sent by tcpreplay -T nano at the rate; the generator takes
                  about a quarter of a core (dnsperf and dnsmasq take one and a quarter at 50k/s), so
                  this shows what the agent holds when the machine is not shared with the load
  redis-p1        redis-server, redis-benchmark -t get,set -P 1
  redis-p16       redis-server, redis-benchmark -t get,set -P 16
  pgsql           PostgreSQL 15, pgbench -S -R (rate-limited), simple query protocol
  mysql           MariaDB, mysqlslap with a primary-key SELECT
  memcache        memcached, memaslap (memcaslap), 9:1 get:set, 100-byte values

wrk, redis-benchmark, mysqlslap and memaslap have no (working) rate option: their rate is set by
shaping (tc tbf) a's egress to the target rate times the bytes one request
takes on the wire, measured in an unshaped probe.  The probe's rate (no
agent running) is the ceiling of the generator and server on this machine,
printed before each scenario.  Every run is bounded in time; traffic stays
inside the namespaces this script creates.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.db_redis import tree_cpu_seconds  # noqa: E402
from bench.gen_proto_pcap import generate  # noqa: E402
from tests.helpers.live import LiveAgent, live_agent  # noqa: E402
from tests.helpers.netns import VethPair, veth_pair  # noqa: E402
from tests.helpers.nginx import nginx_conf  # noqa: E402
from tests.protocols.memcache.test_live import memcached  # noqa: E402
from tests.protocols.mysql import test_live as mysql_live  # noqa: E402
from tests.protocols.pgsql import test_live as pg_live  # noqa: E402
from tests.protocols.redis.test_live import redis_server  # noqa: E402

DRAIN_S = 30.0


@dataclass
class Load:
    """What one generator run did."""

    seconds: float
    requests: int  # the generator's own count of completed requests
    cpu_s: float  # the generator's CPU (user + system)
    explained: int = 0  # requests lost on the wire by the generator's own count


@dataclass
class Scenario:
    name: str
    protocol: dict[str, Any]
    event_type: str
    rates: list[int]
    server: Callable[[Path], AbstractContextManager[VethPair]]  # the server running in namespace b
    count: Callable[[VethPair, Path], int]  # the server's transaction counter
    load: Callable[[VethPair, Path, int | None, float], Load]  # rate None: unshaped
    shaped: bool = True  # the rate is set by tc tbf (the generator has no rate option)
    # Count only events holding one of these JSON snippets (not the generator's own set-up commands).
    match: tuple[str, ...] = ()


# -- generators and servers --------------------------------------------------------------------------

def timed_run(pair: VethPair, args: list[str], timeout: float) -> tuple[str, float, float]:
    """Run in namespace a; (stdout, wall seconds, CPU seconds of the process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = pair.a.run(args, timeout=timeout, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout + proc.stderr, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


NGINX_PORT = 8080


@contextlib.contextmanager
def nginx(tmp: Path) -> Iterator[VethPair]:
    """nginx tuned for load (the tests' configuration allows 64 connections): one worker, buffered log."""
    (tmp / "www").mkdir(exist_ok=True)
    (tmp / "www" / "index.html").write_bytes(b"<!DOCTYPE html>\n" + b"x" * 596)  # nginx's welcome page size
    with veth_pair("cap") as pair:
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_conf(tmp, textwrap.dedent(f"""
                keepalive_requests 1000000;
                server {{ listen {pair.b_ip}:{NGINX_PORT} reuseport backlog=4096; root {tmp}/www; }}
            """), main="master_process off;\nworker_rlimit_nofile 8192;", worker_connections=4096,
            error_level="crit", access_log=f"log_format counted '$status';\n    "
                                           f"access_log {tmp}/access.log counted buffer=256k flush=1s;"))
        pair.b.popen(["nginx", "-c", str(conf), "-p", str(tmp)], log=tmp / "nginx.out")
        pair.b.wait_port(NGINX_PORT, host=pair.b_ip)
        yield pair


def nginx_count(pair: VethPair, tmp: Path) -> int:
    time.sleep(1.2)  # the access log is flushed every second
    path = tmp / "access.log"
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def wrk(close: bool) -> Callable[[VethPair, Path, int | None, float], Load]:
    def run(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
        args = ["wrk", "-t", "1", "-c", "32", "-d", f"{seconds:g}s", f"http://{pair.b_ip}:{NGINX_PORT}/"]
        if close:
            args[1:1] = ["-H", "Connection: close"]
        out, wall, cpu = timed_run(pair, args, seconds + 60)
        found = re.search(r"(\d+) requests in", out)
        return Load(wall, int(found.group(1)) if found else 0, cpu)
    return run


@contextlib.contextmanager
def dnsmasq(tmp: Path) -> Iterator[VethPair]:
    """dnsmasq answering every name under example.test itself (no upstream)."""
    (tmp / "queries.txt").write_text("".join(f"host{i}.example.test {'AAAA' if i % 4 == 3 else 'A'}\n"
                                             for i in range(2000)))
    with veth_pair("cap") as pair:
        pair.b.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=53",
                      f"--listen-address={pair.b_ip}", "--bind-interfaces", "--pid-file=", "--user=root",
                      "--group=root", "--address=/example.test/10.9.8.7", "--local=/example.test/",
                      "--cache-size=10000", "--dns-forward-max=4096"], log=tmp / "dnsmasq.log")
        pair.b.wait_port(53, udp=True)
        yield pair


def dnsperf(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
    args = ["dnsperf", "-s", pair.b_ip, "-d", str(tmp / "queries.txt"), "-l", f"{seconds:g}", "-c", "16",
            "-q", "500", "-t", "2"]
    if rate is not None:
        args += ["-Q", str(rate)]
    out, wall, cpu = timed_run(pair, args, seconds + 60)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    return Load(wall, int(done.group(1)) if done else 0, cpu, int(lost.group(1)) if lost else 0)


REPLAY_PAIRS = 20_000  # distinct DNS exchanges in the replayed capture; tcpreplay loops over them
REPLAY_BURSTS_PER_S = 1000  # tcpreplay sends rate/1000 packets per wake-up: sleeping between, not spinning


@contextlib.contextmanager
def replayed_dns(tmp: Path) -> Iterator[VethPair]:
    """No server: bench/gen_proto_pcap.py's DNS exchanges (each from its own client address and port, as
    resolvers with port randomisation send them), replayed out of a's veth to a MAC address nobody has."""
    generate("dns", tmp / "dns.pcap", REPLAY_PAIRS)
    with veth_pair("cap") as pair:
        yield pair


def tcpreplay(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
    """Query and response packets at twice the target rate; -T nano sleeps between bursts, so tcpreplay takes
    about a quarter of a core at 100k packets/s instead of spinning on one."""
    target = rate or 100_000
    loops = max(1, round(target * seconds / REPLAY_PAIRS))
    pace = ["--topspeed"] if rate is None else \
        ["-T", "nano", f"--pps={2 * rate}", f"--pps-multi={max(1, 2 * rate // REPLAY_BURSTS_PER_S)}"]
    out, wall, cpu = timed_run(pair, ["tcpreplay", "-q", "-K", "-i", pair.a_if, *pace, f"--loop={loops}",
                                      str(tmp / "dns.pcap")], seconds * 4 + 60)
    sent = re.search(r"Successful packets:\s+(\d+)", out)
    took = re.search(r"sent in ([\d.]+) seconds", out)
    return Load(float(took.group(1)) if took else wall, int(sent.group(1)) // 2 if sent else 0, cpu)


REDIS_PORT = 6379  # the tests' redis_server, memcached and PostgreSQL listen on the standard ports


def redis_count(pair: VethPair, tmp: Path) -> int:
    out = pair.a.run(["redis-cli", "-h", pair.b_ip, "-p", str(REDIS_PORT), "INFO", "commandstats"]).stdout
    return sum(int(n) for name, n in re.findall(r"cmdstat_(\w+):calls=(\d+)", out) if name in ("get", "set"))


def redis_benchmark(pipeline: int) -> Callable[[VethPair, Path, int | None, float], Load]:
    def run(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
        total = int((rate or 200_000) * seconds)
        before = redis_count(pair, tmp)
        _out, wall, cpu = timed_run(pair, ["redis-benchmark", "-h", pair.b_ip, "-p", str(REDIS_PORT), "-c", "16",
                                          "-P", str(pipeline), "-n", str(max(1000, total // 2)), "-t", "get,set",
                                          "-q"], seconds * 10 + 60)
        return Load(wall, redis_count(pair, tmp) - before, cpu)
    return run


PG_PORT = 5432
PG_QUERY = "SELECT abalance FROM pgbench_accounts WHERE aid = "


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[VethPair]:
    """The tests' PostgreSQL, with pgbench's tables."""
    with pg_live.postgres_server() as pair:
        pair.a.run(["pgbench", "-h", pair.b_ip, "-p", str(PG_PORT), "-U", "postgres", "-i", "-s", "1", "-q",
                    "postgres"], timeout=300)
        yield pair


def pgbench(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
    args = ["pgbench", "-h", pair.b_ip, "-p", str(PG_PORT), "-U", "postgres", "-S", "-n", "-c", "8", "-j", "1",
            "-T", f"{max(1, round(seconds))}", "-M", "simple", "postgres"]
    if rate is not None:
        args[-1:-1] = ["-R", str(rate)]
    out, wall, cpu = timed_run(pair, args, seconds + 120)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    return Load(wall, int(done.group(1)) if done else 0, cpu)


def pgbench_count(pair: VethPair, tmp: Path) -> int:
    return 0  # pgbench's own count of completed transactions is the server's (one SELECT each)


MYSQL_PORT = 3306
MYSQL_QUERY = "SELECT id, balance FROM bench.accounts WHERE id = 4242"


@contextlib.contextmanager
def mariadb(tmp: Path) -> Iterator[VethPair]:
    """The tests' MariaDB, with a table of 10,000 accounts."""
    with mysql_live.mariadb_server() as pair:
        mysql(pair, "CREATE DATABASE bench; CREATE TABLE bench.accounts (id INT PRIMARY KEY, balance INT); "
                    "USE bench; INSERT INTO accounts SELECT seq, seq * 7 FROM seq_1_to_10000;")
        yield pair


def mysql(pair: VethPair, sql: str) -> str:
    return pair.a.run(["mariadb", "--no-defaults", "-h", pair.b_ip, "-P", str(MYSQL_PORT), "-u", "root",
                       "--skip-ssl", "-N", "-e", sql], timeout=60).stdout


def mysql_count(pair: VethPair, tmp: Path) -> int:
    return int(mysql(pair, "SHOW GLOBAL STATUS LIKE 'Com_select'").split()[-1])


def mysqlslap(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
    total = int((rate or 20_000) * seconds)
    before = mysql_count(pair, tmp)
    _out, wall, cpu = timed_run(pair, ["mysqlslap", "--no-defaults", "-h", pair.b_ip, "-P", str(MYSQL_PORT), "-u",
                                      "root", "--skip-ssl", "--concurrency=16", "--iterations=1",
                                      f"--number-of-queries={max(1000, total)}", "--create-schema=bench",
                                      "--no-drop", f"--query={MYSQL_QUERY}"], seconds * 10 + 60)
    return Load(wall, mysql_count(pair, tmp) - before, cpu)


MEMCACHE_PORT = 11211


def memcache_count(pair: VethPair, tmp: Path) -> int:
    out = pair.a.run(["sh", "-c", f"printf 'stats\\r\\nquit\\r\\n' | nc -q 2 {pair.b_ip} {MEMCACHE_PORT}"]).stdout
    stats = dict(re.findall(r"STAT (\w+) (\d+)", out))
    return int(stats.get("cmd_get", 0)) + int(stats.get("cmd_set", 0))


def memaslap(pair: VethPair, tmp: Path, rate: int | None, seconds: float) -> Load:
    before = memcache_count(pair, tmp)
    # Its --tps does not hold the rate (it ran at the same speed whatever the value): shaped instead.
    args = ["memcaslap", "-s", f"{pair.b_ip}:{MEMCACHE_PORT}", "-T", "1", "-c", "16", "-w", "1k",
            "-t", f"{max(1, round(seconds))}s", "-X", "100"]
    _out, wall, cpu = timed_run(pair, args, seconds + 60)
    return Load(wall, memcache_count(pair, tmp) - before, cpu)


SCENARIOS = [
    Scenario("http-keepalive", {"type": "http", "ports": [NGINX_PORT]}, "http",
             [5000, 10000, 20000, 30000, 40000], nginx, nginx_count, wrk(close=False)),
    Scenario("http-close", {"type": "http", "ports": [NGINX_PORT]}, "http",
             [2000, 5000, 10000, 15000, 20000], nginx, nginx_count, wrk(close=True)),
    Scenario("dns", {"type": "dns", "ports": [53]}, "dns", [10000, 20000, 35000, 50000, 65000],
             dnsmasq, lambda pair, tmp: 0, dnsperf, shaped=False),
    Scenario("dns-replay", {"type": "dns", "ports": [53]}, "dns", [20000, 35000, 50000, 65000, 80000],
             replayed_dns, lambda pair, tmp: 0, tcpreplay, shaped=False),
    Scenario("redis-p1", {"type": "redis", "ports": [REDIS_PORT]}, "redis", [5000, 10000, 20000, 30000, 40000],
             redis_server, redis_count, redis_benchmark(1), match=('"method":"GET"', '"method":"SET"')),
    Scenario("redis-p16", {"type": "redis", "ports": [REDIS_PORT]}, "redis", [10000, 25000, 50000, 75000, 100000],
             redis_server, redis_count, redis_benchmark(16), match=('"method":"GET"', '"method":"SET"')),
    Scenario("pgsql", {"type": "pgsql", "ports": [PG_PORT]}, "pgsql", [2000, 5000, 10000, 15000, 20000],
             postgres, pgbench_count, pgbench, shaped=False, match=('"method":"SELECT"',)),
    Scenario("mysql", {"type": "mysql", "ports": [MYSQL_PORT]}, "mysql", [2000, 5000, 10000, 15000, 20000],
             mariadb, mysql_count, mysqlslap, match=('"method":"SELECT"',)),
    Scenario("memcache", {"type": "memcache", "ports": [MEMCACHE_PORT]}, "memcache",
             [5000, 10000, 20000, 30000, 40000], memcached, memcache_count, memaslap,
             match=('"command":"get"', '"command":"set"')),
]


# -- measuring -----------------------------------------------------------------------------------------

def tx_bytes(pair: VethPair) -> int:
    return int(pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/statistics/tx_bytes"]).stdout)


def shape(pair: VethPair, bytes_per_s: float | None) -> None:
    if bytes_per_s is None:
        pair.a.run(["tc", "qdisc", "del", "dev", pair.a_if, "root"], check=False)
        return
    bits = int(bytes_per_s * 8)
    pair.a.run(["tc", "qdisc", "replace", "dev", pair.a_if, "root", "tbf", "rate", f"{bits}bit", "burst",
                f"{max(16384, int(bytes_per_s / 100))}b", "latency", "50ms"])


def count_events(agent: LiveAgent, scenario: Scenario) -> int:
    """Events of the scenario's type (and match) in the agent's output: a byte scan, no JSON decoding."""
    kind = f'"type":"{scenario.event_type}"'.encode()
    methods = [m.encode() for m in scenario.match]
    out = agent.directory / "out"
    total = 0
    for path in out.iterdir() if out.is_dir() else ():
        with open(path, "rb") as handle:
            for line in handle:
                if kind in line and (not methods or any(m in line for m in methods)):
                    total += 1
    return total


def wait_drained(agent: LiveAgent) -> float:
    """Until the agent's output stops growing (it may be behind on its ring); when it last grew."""
    out = agent.directory / "out"
    deadline = time.monotonic() + DRAIN_S
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = sum(path.stat().st_size for path in out.iterdir()) if out.is_dir() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since > 1.5:
            break
        time.sleep(0.1)
    return since


def counters(log: str) -> dict[str, int]:
    """The counters the agent logs at exit (kernel, worker and agent lines), summed by name."""
    found: dict[str, int] = {}
    for line in log.splitlines():
        if "counters at exit" not in line:
            continue
        for name, value in re.findall(r"([\w.]+)=(\d+)", line):
            found[name] = found.get(name, 0) + int(value)
    return found


def measure(scenario: Scenario, pair: VethPair, tmp: Path, rate: int, seconds: float,
            bytes_per_request: float) -> dict[str, Any]:
    shape(pair, rate * bytes_per_request if scenario.shaped else None)
    # The queue flushes within half a second (default: 10 s), so that "behind" shows the agent's own lag.
    settings = {"packetbeat.interfaces.buffer_size_mb": 24, "output.file.rotate_every_kb": 1 << 20,
                "output.file.number_of_files": 1024, "queue.mem.flush.timeout": "0.5s"}
    server_pid = scenario_server_pid(pair)
    with live_agent(pair.a, [pair.a_if], [scenario.protocol], settings) as agent:
        root = agent.proc.pid
        cpu0, srv0, wall0 = tree_cpu_seconds(root), server_cpu(server_pid), time.monotonic()
        before = scenario.count(pair, tmp)
        load = scenario.load(pair, tmp, rate, seconds)
        counted = scenario.count(pair, tmp) - before
        server = counted if counted > 0 else load.requests
        srv1 = server_cpu(server_pid)
        wall1 = max(wait_drained(agent), wall0 + load.seconds)
        cpu1 = tree_cpu_seconds(root)  # idle since wall1, but for its polling
        code = agent.stop()
        if code != 0:
            raise SystemExit(f"pktbeat exited {code}:\n{agent.log()[-2000:]}")
        events = count_events(agent, scenario)
        found = counters(agent.log())
    shape(pair, None)
    protocol = scenario.event_type
    unmatched = sum(v for k, v in found.items() if k.startswith(f"{protocol}.unmatched"))
    causes = {k: found.get(k, 0) for k in ("ring_full", "load_failed", "emit_failed", "capture.events_dropped",
                                          "pipeline.queue_full_drops") if found.get(k, 0)}
    drops = sum(causes.values())
    achieved = server / max(load.seconds, 1e-9)
    agent_pct = 100.0 * (cpu1 - cpu0) / max(load.seconds, 1e-9)  # the share of a core the load took
    row: dict[str, Any] = {"target": rate, "achieved": achieved, "server": server, "events": events,
           # A query the generator counted as lost on the wire was still seen by the agent: an event without a
           # response (and an unmatched count), so it is expected among the events and explains that count.
           "lost": server + load.explained - events, "wire_lost": load.explained,
           "unmatched": max(0, unmatched - load.explained),
           "drops": drops, "gaps": found.get("tcp.gaps", 0), "agent_pct": agent_pct,
           "us_per_txn": 1e6 * (cpu1 - cpu0) / max(server, 1),
           "gen_pct": 100.0 * load.cpu_s / max(load.seconds, 1e-9),
           "srv_pct": 100.0 * (srv1 - srv0) / max(load.seconds, 1e-9), "load": os.getloadavg()[0],
           "behind": wall1 - wall0 - load.seconds, "causes": causes}
    row["ok"] = row["lost"] <= 0 and row["unmatched"] == 0 and drops == 0 and server > 0
    row["limit"] = limit(row)
    return row


def scenario_server_pid(pair: VethPair) -> int:
    """The server's pid, 0 without one (dns-replay)."""
    return pair.b.processes[0].pid if pair.b.processes else 0


def server_cpu(pid: int) -> float:
    return tree_cpu_seconds(pid, reaped=True) if pid else 0.0


def limit(row: dict[str, Any]) -> str:
    if not row["ok"] or row["agent_pct"] >= 90:
        return "agent"
    if row["achieved"] >= 0.9 * row["target"]:
        return ""
    if row["gen_pct"] >= 90:
        return "generator"
    if row["srv_pct"] >= 90:
        return "server"
    return "machine"


def probe(scenario: Scenario, pair: VethPair, tmp: Path, seconds: float) -> tuple[float, float]:
    """An unshaped run without the agent: (requests/s the generator and server reach, wire bytes per request)."""
    sent = tx_bytes(pair)
    before = scenario.count(pair, tmp)
    load = scenario.load(pair, tmp, None, seconds)
    counted = scenario.count(pair, tmp) - before
    done = counted if counted > 0 else load.requests
    return done / max(load.seconds, 1e-9), (tx_bytes(pair) - sent) / max(done, 1)


@contextlib.contextmanager
def server(scenario: Scenario) -> Iterator[tuple[VethPair, Path]]:
    with tempfile.TemporaryDirectory(prefix=f"pktbeat-cap-{scenario.name}-") as tmpdir:
        tmp = Path(tmpdir)
        os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user
        with scenario.server(tmp) as pair:
            yield pair, tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="scenario names, comma separated (default: all)")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration per rate")
    parser.add_argument("--rates-scale", type=float, default=1.0, help="multiply every scenario's target rates")
    parser.add_argument("--rates", default="", help="explicit target rates for every chosen scenario")
    parser.add_argument("--keep-going", action="store_true", help="try higher rates after a rate with loss")
    parser.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]
    load = os.getloadavg()
    print(f"pktbeat live capture, 1 worker, 24 MiB ring; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    summary: list[tuple[str, dict[str, Any] | None, float, str]] = []
    for scenario in chosen:
        rates = [int(r) for r in args.rates.split(",") if r] or [int(r * args.rates_scale) for r in scenario.rates]
        with server(scenario) as (pair, tmp):
            ceiling, per_request = probe(scenario, pair, tmp, 2.0)
            print(f"\n== {scenario.name}: without the agent the generator and server reach {ceiling:,.0f}/s "
                  f"({per_request:.0f} wire bytes per request from the client)", flush=True)
            print(f"{'target':>7} {'achieved':>9} {'server':>8} {'events':>8} {'lost':>6} {'unmatch':>7} "
                  f"{'drops':>6} {'agent %':>7} {'us/txn':>7} {'gen %':>6} {'srv %':>6} {'behind':>6} "
                  f"{'load':>5}  limit")
            best: dict[str, Any] | None = None
            last_limit = ""
            for rate in rates:
                row = measure(scenario, pair, tmp, rate, args.seconds, per_request)
                print(f"{row['target']:>7} {row['achieved']:>9,.0f} {row['server']:>8} {row['events']:>8} "
                      f"{row['lost']:>6} {row['unmatched']:>7} {row['drops']:>6} {row['agent_pct']:>7.0f} "
                      f"{row['us_per_txn']:>7.1f} {row['gen_pct']:>6.0f} {row['srv_pct']:>6.0f} "
                      f"{row['behind']:>6.1f} {row['load']:>5.1f}  {row['limit']}"
                      + (f" ({', '.join(f'{k}={v}' for k, v in row['causes'].items())})" if row["causes"] else ""),
                      flush=True)
                last_limit = row["limit"]
                if row["ok"] and (best is None or row["achieved"] > best["achieved"]):
                    best = row
                if not row["ok"] and not args.keep_going:
                    break
            summary.append((scenario.name, best, ceiling, last_limit))
    print("\nhighest rate with zero unexplained loss (one worker)")
    lines = ["| scenario | transactions/s | agent CPU us/txn | agent CPU % | behind s | a core's worth | "
             "without agent | limit above | load |", "|---|---|---|---|---|---|---|---|---|"]
    for name, best, ceiling, last in summary:
        if best is None:
            lines.append(f"| {name} | none | | | | | {ceiling:,.0f}/s | {last} | |")
        else:
            lines.append(f"| {name} | {best['achieved']:,.0f} | {best['us_per_txn']:.1f} | {best['agent_pct']:.0f} | "
                         f"{best['behind']:.1f} | "
                         f"{1e6 / best['us_per_txn']:,.0f}/s | {ceiling:,.0f}/s | {last or 'not reached'} | "
                         f"{best['load']:.1f} |")
    for line in lines:
        print(line if args.markdown else line.replace("|", " ").strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
