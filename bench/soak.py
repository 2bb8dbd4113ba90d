"""Soak: mixed real traffic through the live agent for an hour, sampled every 10 s (a benchmark, not a test).

    sudo .venv/bin/python bench/soak.py [--minutes 60] [--load 70] [--rate TXN_PER_S] [--calibrate 40]
                                        [--flood-pps 5000] [--out bench/results/soak-<time>]

Namespace b runs nginx, dnsmasq, redis-server and PostgreSQL; namespace a runs the clients and the agent
(`pktbeat run -i <veth>`, file output with rotation, monitoring endpoint on).  The clients, each paced to
its share of the rate:

- HTTP to nginx: half on keep-alive connections, half on a new connection per request (40%);
- DNS to dnsmasq over UDP (20%);
- Redis SET/GET in pipelines of 10 (25%);
- pgbench -S -M simple (one SELECT per transaction, 15%);
- a UDP flood (bench/capture_flood.c) from b to an unconfigured port of a, which the kernel program
  must drop before user space.

"Sustainable rate": with no --rate, the clients first run unthrottled for --calibrate seconds; the rate
they reach is 100% when the agent kept up (no drop), else the agent's own event rate at that saturation
(the machine's two cores then run the clients, the servers and the agent); the soak runs at --load
percent of it.

Every --sample seconds (10) a CSV row: the agent's RSS and CPU (main process and workers), events/s per
protocol, kernel counters (seen, matched, drops), queue, spool and ring depth, output acked, and the
machine's load average (the machine may be shared: a load above its two cores starves the agent).  At the end:
a PNG plot (matplotlib), the CSV, and one summary line with the acceptance checks:
- publishing never stalls longer than one sample (acked grows in every sample after the first);
- RSS grows by less than 10% after minute 5;
- zero unexplained loss: per protocol, client transactions minus events published, less counted drops;
- no restart (the agent's and workers' pids unchanged, no worker failure);
- SIGTERM at the end exits in under 2 s and leaves no TC filter.
Traffic stays inside the two namespaces the script creates; every loop is bounded by --minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.live import LiveAgent, live_agent, tc_filters  # noqa: E402
from tests.helpers.netns import VethPair, veth_pair  # noqa: E402
from tests.helpers.nginx import nginx_conf  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORTS = {"http": 8080, "dns": 53, "redis": 6379, "pgsql": 5432}
SHARES = {"http": 0.40, "dns": 0.20, "redis": 0.25, "pgsql": 0.15}
FLOOD_PORT = 9999
MONITOR = "http://127.0.0.1:5066"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------------------------
# clients (run inside namespace a as `soak.py gen KIND ...`)
# ---------------------------------------------------------------------------------------------------------------


class Pacer:
    """Paces a closed loop to `rate` operations per second (0: as fast as possible)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def wait(self, count: int = 1) -> None:
        self.done += count
        if self.rate <= 0:
            return
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(min(ahead, 1.0))


class Status:
    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {"done": 0, "errors": 0}
        self._last = 0.0

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= 1.0:
            self._last = now
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.counts, f)
            os.replace(tmp, self.path)


def _http_response(sock: socket.socket, buffer: bytes) -> bytes:
    """Read one response (Content-Length framed); returns what follows it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return rest[length:]


def gen_http(host: str, rate: float, deadline: float, status: Status) -> None:
    """Alternates a request on a keep-alive connection and one on a new connection."""
    pacer = Pacer(rate)
    keep: socket.socket | None = None
    pending = b""
    request = f"GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    closing = f"GET /two.html HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        try:
            if turn % 2:
                if keep is None:
                    keep = socket.create_connection((host, PORTS["http"]), timeout=5)
                    pending = b""
                keep.sendall(request)
                pending = _http_response(keep, pending)
            else:
                with socket.create_connection((host, PORTS["http"]), timeout=5) as sock:
                    sock.sendall(closing)
                    _http_response(sock, b"")
            status.counts["done"] += 1
        except OSError:
            status.counts["errors"] += 1
            if keep is not None:
                keep.close()
            keep = None
        status.save()
        pacer.wait()
    if keep is not None:
        keep.close()


def _dns_query(qid: int) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in b"host.example.test".split(b".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def gen_dns(host: str, rate: float, deadline: float, status: Status) -> None:
    pacer = Pacer(rate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, PORTS["dns"]))
    sock.settimeout(1.0)
    qid = 0
    while time.monotonic() < deadline:
        qid = (qid + 1) & 0xFFFF
        sock.send(_dns_query(qid))
        status.counts["done"] += 1  # one event per query, answered or not
        try:
            while struct.unpack("!H", sock.recv(4096)[:2])[0] != qid:
                pass
        except OSError:
            status.counts["errors"] += 1
        status.save()
        pacer.wait()


def gen_redis(host: str, rate: float, deadline: float, status: Status) -> None:
    import redis

    client = redis.Redis(host=host, port=PORTS["redis"], socket_timeout=5)
    pacer = Pacer(rate)
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        try:
            pipe = client.pipeline(transaction=False)
            for i in range(5):
                pipe.set(f"soak:{i}", round_)
                pipe.get(f"soak:{i}")
            pipe.execute()
            status.counts["done"] += 10
        except redis.RedisError:
            status.counts["errors"] += 1
            client = redis.Redis(host=host, port=PORTS["redis"], socket_timeout=5)
        status.save()
        pacer.wait(10)


def generator_main(args: argparse.Namespace) -> int:
    status = Status(args.status)
    deadline = time.monotonic() + args.seconds
    {"http": gen_http, "dns": gen_dns, "redis": gen_redis}[args.kind](args.host, args.rate, deadline, status)
    status.save(force=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the lab: servers in namespace b
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Lab:
    pair: VethPair
    work: Path
    flooder: Path
    flood_target: str  # an address a's veth receives (its MAC) but that no socket answers: no ICMP comes back


def _nginx_conf(root: Path, listen: str) -> str:
    return nginx_conf(root, textwrap.dedent(f"""
            keepalive_requests 1000000;
            server {{ listen {listen}:{PORTS["http"]}; root {root}/www; }}
        """), worker_connections=1024)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    for tool in ("nginx", "dnsmasq", "redis-server", "pgbench", "gcc"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh test")
    with tempfile.TemporaryDirectory(prefix="pktbeat-soak-") as tmp, veth_pair("pbs") as pair:
        work = Path(tmp)
        os.chmod(work, 0o755)
        b = pair.b
        (work / "www").mkdir()
        (work / "www" / "index.html").write_text("<html><body>soak</body></html>\n" * 8)
        (work / "www" / "two.html").write_text("<html><body>two</body></html>\n")
        (work / "nginx.conf").write_text(_nginx_conf(work, pair.b_ip))
        nginx = shutil.which("nginx", path="/usr/sbin:/sbin:/usr/bin") or "nginx"
        b.popen([nginx, "-e", str(work / "error.log"), "-p", str(work), "-c", str(work / "nginx.conf")])
        b.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=53",
                 f"--listen-address={pair.b_ip}", "--bind-interfaces", "--pid-file=", "--user=root", "--group=root",
                 "--local=/example.test/", f"--host-record=host.example.test,{pair.b_ip}", "--cache-size=1000",
                 "--dns-forward-max=1000"])
        b.popen(["redis-server", "--port", str(PORTS["redis"]), "--bind", pair.b_ip, "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", str(work)])
        data = work / "pg"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        b.popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                 "-c", f"listen_addresses={pair.b_ip}", "-c", f"port={PORTS['pgsql']}",
                 "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c", "ssl=off",
                 "-c", "max_connections=20"], log=work / "pg.log")
        for name, port in PORTS.items():
            b.wait_port(port, pair.b_ip, timeout=60, udp=name == "dns")
        pair.a.run(["pgbench", "-h", pair.b_ip, "-p", str(PORTS["pgsql"]), "-U", "postgres", "-i", "-s", "1",
                    "-q", "postgres"], timeout=120)
        flooder = work / "capture_flood"
        subprocess.run(["gcc", "-O2", "-o", str(flooder), str(ROOT / "bench" / "capture_flood.c")], check=True)
        # The flooder's connected socket would stop at the first ICMP port-unreachable from a real address.
        target = pair.a_ip.rsplit(".", 1)[0] + ".250"
        mac = pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
        b.run(["ip", "neigh", "replace", target, "lladdr", mac, "dev", pair.b_if, "nud", "permanent"])
        yield Lab(pair, work, flooder, target)


# ---------------------------------------------------------------------------------------------------------------
# traffic
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    lab: Lab
    rate: float  # transactions per second over all protocols; 0 = unthrottled
    seconds: float
    flood_pps: int
    tag: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def status_file(self, kind: str) -> Path:
        return self.lab.work / f"{self.tag}-{kind}.json"

    def start(self) -> None:
        pair = self.lab.pair
        for kind in ("http", "dns", "redis"):
            rate = self.rate * SHARES[kind]
            self.procs[kind] = pair.a.popen([sys.executable, __file__, "gen", kind, "--host", pair.b_ip,
                                             "--rate", str(rate), "--seconds", str(self.seconds),
                                             "--status", str(self.status_file(kind))],
                                            log=self.lab.work / f"{self.tag}-{kind}.log")
        pg_rate = max(1, int(self.rate * SHARES["pgsql"])) if self.rate else 0
        pg = ["pgbench", "-h", pair.b_ip, "-p", str(PORTS["pgsql"]), "-U", "postgres", "-n", "-S", "-M", "simple",
              "-c", "2", "-j", "1", "-T", str(int(self.seconds)), "-P", "5"]
        if pg_rate:
            pg += ["-R", str(pg_rate)]
        self.procs["pgsql"] = pair.a.popen([*pg, "postgres"], log=self.lab.work / f"{self.tag}-pgsql.log")
        if self.flood_pps:
            self.procs["flood"] = pair.b.popen([str(self.lab.flooder), self.lab.flood_target, str(FLOOD_PORT),
                                                str(self.flood_pps), str(int(self.seconds)), "64", pair.b_ip])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind in ("http", "dns", "redis"):
            try:
                out[kind] = json.loads(self.status_file(kind).read_text())["done"]
            except (OSError, ValueError, KeyError):
                out[kind] = 0
        out["pgsql"] = _pgbench_count(self.lab.work / f"{self.tag}-pgsql.log")
        return out

    def wait(self) -> None:
        for proc in self.procs.values():
            try:
                proc.wait(timeout=self.seconds + 120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _pgbench_count(log: Path) -> int:
    """Transactions pgbench completed: its final count, or the progress lines' sum while it runs."""
    try:
        text = log.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("number of transactions actually processed:"):
            return int(line.split(":")[1].split("/")[0])
    total, last_t = 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("progress:"):
            parts = line.replace(",", "").split()
            t, tps = float(parts[1]), float(parts[3])
            total += tps * (t - last_t)
            last_t = t
    return int(total)


# ---------------------------------------------------------------------------------------------------------------
# sampling the agent
# ---------------------------------------------------------------------------------------------------------------


def scrape(agent: LiveAgent) -> dict[str, float]:
    """The agent's /metrics as {name{labels}: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = agent.ns.run(["curl", "-s", "--max-time", "5", MONITOR + "/metrics"], check=False).stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def process_tree(root: int) -> dict[int, tuple[int, float]]:
    """pid -> (RSS bytes, CPU seconds) for `root` and its children."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid = int(entry.name)
            if pid != root and int(fields[1]) != root:
                continue
            rss = int((entry / "statm").read_text().split()[1]) * PAGE
            out[pid] = (rss, (int(fields[11]) + int(fields[12])) / TICKS)
        except (OSError, ValueError, IndexError):
            continue
    return out


def agent_pid(agent: LiveAgent) -> int:
    """The pktbeat process (the Popen is `ip netns exec`, which execs it: same pid)."""
    return agent.proc.pid


def total(metrics: dict[str, float], prefix: str, **labels: str) -> float:
    want = [f"{k}={v}" for k, v in labels.items()]
    return sum(v for k, v in metrics.items() if k.startswith(prefix + "{") or k == prefix
               if all(w in k for w in want))


@dataclass
class Sample:
    t: float
    rss: int
    cpu: float
    events: dict[str, float]
    seen: float
    drops: float
    acked: float
    queue: float
    spool: float
    ring: float
    clients: dict[str, int]


def take_sample(t: float, agent: LiveAgent, traffic: Traffic) -> Sample:
    metrics = scrape(agent)
    tree = process_tree(agent_pid(agent))
    return Sample(
        t=t, rss=sum(v[0] for v in tree.values()), cpu=sum(v[1] for v in tree.values()),
        events={p: total(metrics, "pktbeat_events_total", protocol=p) for p in PORTS},
        seen=total(metrics, "pktbeat_kernel_packets_total", counter="seen"),
        drops=total(metrics, "pktbeat_kernel_drops_total") + metrics.get("pktbeat_capture_events_dropped_total", 0)
        + total(metrics, "pktbeat_output_events_total", outcome="dropped"),
        acked=total(metrics, "pktbeat_output_events_total", outcome="acked"),
        queue=metrics.get("pktbeat_queue_events", 0), spool=metrics.get("pktbeat_spool_events", 0),
        ring=metrics.get("pktbeat_ring_pending_bytes", 0), clients=traffic.counts())


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------


def agent_settings(work: Path) -> dict[str, Any]:
    return {"packetbeat.interfaces.workers": 0, "packetbeat.interfaces.buffer_size_mb": 16,
            "http.enabled": True, "logging.metrics.period": "60s",
            "output.file": {"path": str(work / "out"), "filename": "packetbeat", "rotate_every_kb": 10240,
                            "number_of_files": 3}}


PROTOCOLS = [{"type": "http", "ports": [PORTS["http"]]}, {"type": "dns", "ports": [PORTS["dns"]]},
             {"type": "redis", "ports": [PORTS["redis"]]}, {"type": "pgsql", "ports": [PORTS["pgsql"]]}]


def calibrate(the_lab: Lab, seconds: float, flood_pps: int) -> float:
    """Unthrottled clients for `seconds`: the transaction rate they reach while the agent keeps up."""
    with live_agent(the_lab.pair.a, [the_lab.pair.a_if], PROTOCOLS, agent_settings(the_lab.work / "cal")) as agent:
        traffic = Traffic(the_lab, 0, seconds, flood_pps, "cal")
        traffic.start()
        time.sleep(2)
        first = take_sample(0, agent, traffic)
        time.sleep(seconds - 4)
        last = take_sample(seconds - 4, agent, traffic)
        traffic.wait()
        span = last.t - first.t
        achieved = sum(last.clients.values()) - sum(first.clients.values())
        decoded = sum(last.events.values()) - sum(first.events.values())
        rate = achieved / span
        dropped = last.drops - first.drops
        print(f"calibration: clients {rate:.0f} txn/s, agent {decoded / span:.0f} events/s, "
              f"drops {dropped:.0f}, cpu {(last.cpu - first.cpu) / span * 100:.0f}%", flush=True)
        agent.stop()
    if dropped > 0:  # the agent, not the clients, was the limit: its throughput is the sustainable rate
        rate = min(rate, decoded / span)
    return rate


def soak(the_lab: Lab, rate: float, minutes: float, sample_s: float, flood_pps: int, out: Path) -> dict[str, Any]:
    seconds = minutes * 60
    rows: list[Sample] = []
    with live_agent(the_lab.pair.a, [the_lab.pair.a_if], PROTOCOLS, agent_settings(the_lab.work / "soak")) as agent:
        pid = agent_pid(agent)
        workers = set(process_tree(pid)) - {pid}
        traffic = Traffic(the_lab, rate, seconds, flood_pps, "soak")
        started = time.monotonic()
        traffic.start()
        with open(out / "soak.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t_s", "rss_mb", "cpu_pct", *(f"{p}_events_per_s" for p in PORTS), "kernel_seen_per_s",
                             "drops", "acked_per_s", "queue", "spool", "ring_pending_bytes",
                             *(f"{p}_client_txn" for p in PORTS), "loadavg_1m"])
            while time.monotonic() - started < seconds:
                time.sleep(max(0.0, sample_s - (time.monotonic() - started) % sample_s))
                sample = take_sample(time.monotonic() - started, agent, traffic)
                prev = rows[-1] if rows else None
                rows.append(sample)
                span = sample.t - prev.t if prev else sample.t

                def rate_of(now: float, before: float, span: float = span) -> float:
                    return (now - before) / span

                writer.writerow([f"{sample.t:.0f}", f"{sample.rss / 2**20:.1f}",
                                 f"{rate_of(sample.cpu, prev.cpu if prev else 0) * 100:.1f}",
                                 *(f"{rate_of(sample.events[p], prev.events[p] if prev else 0):.0f}" for p in PORTS),
                                 f"{rate_of(sample.seen, prev.seen if prev else 0):.0f}", f"{sample.drops:.0f}",
                                 f"{rate_of(sample.acked, prev.acked if prev else 0):.0f}", f"{sample.queue:.0f}",
                                 f"{sample.spool:.0f}", f"{sample.ring:.0f}",
                                 *(sample.clients[p] for p in PORTS), f"{os.getloadavg()[0]:.2f}"])
                f.flush()
        traffic.wait()
        time.sleep(12)  # transaction_timeout: the last requests' events (DNS without answer) come out
        final = take_sample(time.monotonic() - started, agent, traffic)
        alive = agent.proc.poll() is None
        restarted = not alive or set(process_tree(pid)) - {pid} != workers
        stats = json.loads(agent.ns.run(["curl", "-s", MONITOR + "/stats"]).stdout)
        stop_started = time.monotonic()
        code = agent.stop(timeout=30)
        stop_s = time.monotonic() - stop_started
        filters = tc_filters(agent.ns, the_lab.pair.a_if)
    return analyse(rows, final, stats, restarted, code, stop_s, filters, sample_s)


def analyse(rows: list[Sample], final: Sample, stats: dict[str, Any], restarted: bool, code: int, stop_s: float,
            filters: list[str], sample_s: float) -> dict[str, Any]:
    stall, longest = 0, 0
    for prev, cur in itertools.pairwise(rows):
        stall = stall + 1 if cur.acked <= prev.acked else 0
        longest = max(longest, stall)
    after5 = [r for r in rows if r.t >= 300]
    base = after5[0].rss if after5 else rows[-1].rss
    peak = max(r.rss for r in after5) if after5 else base
    growth = (peak - base) / base * 100 if base else 0.0
    missing = {p: final.clients[p] - final.events[p] for p in PORTS}
    counted = final.drops + sum(v for k, v in _flat(stats).items()
                                if k.endswith(("unmatched_requests", "unmatched_responses")))
    unexplained = max(0.0, sum(max(0, m) for m in missing.values()) - counted)
    return {"samples": len(rows), "longest_stall_samples": longest, "stall_s": longest * sample_s,
            "rss_mb_at_5min": base / 2**20, "rss_mb_peak_after_5min": peak / 2**20, "rss_growth_pct": growth,
            "clients": final.clients, "events": {p: int(v) for p, v in final.events.items()}, "missing": missing,
            "counted_drops": counted, "unexplained_loss": unexplained, "restart": restarted, "exit_code": code,
            "sigterm_s": stop_s, "filters_left": len(filters), "kernel_drops": final.drops}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out


def plot(csv_path: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t_s"]) / 60 for r in rows]
    loaded = "loadavg_1m" in rows[0] if rows else False
    fig, axes = plt.subplots(5 if loaded else 4, 1, figsize=(11, 15 if loaded else 12), sharex=True)
    axes[0].plot(t, [float(r["rss_mb"]) for r in rows], label="RSS (MB, agent + workers)")
    axes[0].axvline(5, color="grey", linestyle=":")
    axes[0].set_ylabel("MB")
    twin = axes[0].twinx()
    twin.plot(t, [float(r["cpu_pct"]) for r in rows], color="tab:red", alpha=0.6, label="CPU %")
    twin.set_ylabel("CPU % (of one core)")
    axes[0].legend(loc="upper left")
    for p in PORTS:
        axes[1].plot(t, [float(r[f"{p}_events_per_s"]) for r in rows], label=p)
    axes[1].plot(t, [float(r["acked_per_s"]) for r in rows], label="acked", color="black", linewidth=0.8)
    axes[1].set_ylabel("events/s")
    axes[1].legend(loc="upper left", ncol=5)
    axes[2].plot(t, [float(r["kernel_seen_per_s"]) for r in rows], label="kernel seen pkt/s")
    axes[2].set_ylabel("packets/s")
    twin2 = axes[2].twinx()
    twin2.plot(t, [float(r["drops"]) for r in rows], color="tab:red", label="drops (cumulative)")
    twin2.set_ylabel("drops")
    axes[2].legend(loc="upper left")
    axes[3].plot(t, [float(r["queue"]) for r in rows], label="queue events")
    axes[3].plot(t, [float(r["spool"]) for r in rows], label="spool events")
    axes[3].plot(t, [float(r["ring_pending_bytes"]) / 1024 for r in rows], label="ring pending KiB")
    axes[3].set_ylabel("depth")
    axes[3].legend(loc="upper left")
    if loaded:
        axes[4].plot(t, [float(r["loadavg_1m"]) for r in rows], label="machine load average (1 min)")
        axes[4].axhline(os.cpu_count() or 2, color="grey", linestyle=":", label="cores")
        axes[4].legend(loc="upper left")
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("gen")
    gen.add_argument("kind", choices=("http", "dns", "redis"))
    gen.add_argument("--host", required=True)
    gen.add_argument("--rate", type=float, default=0)
    gen.add_argument("--seconds", type=float, required=True)
    gen.add_argument("--status", required=True)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--load", type=float, default=70, help="percent of the sustainable rate")
    parser.add_argument("--rate", type=float, default=0, help="the sustainable rate (txn/s), instead of calibrating")
    parser.add_argument("--calibrate", type=float, default=40, help="seconds of unthrottled calibration")
    parser.add_argument("--sample", type=float, default=10)
    parser.add_argument("--flood-pps", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "gen":
        return generator_main(args)
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, BPF)")
    out = args.out or ROOT / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with lab() as the_lab:
        sustainable = args.rate or calibrate(the_lab, args.calibrate, args.flood_pps)
        rate = sustainable * args.load / 100
        print(f"soak: {args.minutes:g} min at {args.load:g}% of {sustainable:.0f} txn/s = {rate:.0f} txn/s, "
              f"flood {args.flood_pps} pkt/s; results in {out}", flush=True)
        result = soak(the_lab, rate, args.minutes, args.sample, args.flood_pps, out)
    result.update({"sustainable_txn_per_s": sustainable, "rate_txn_per_s": rate, "load_pct": args.load,
                   "minutes": args.minutes, "load_average": os.getloadavg()})
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    plot(out / "soak.csv", out / "soak.png", f"pktbeat soak: {args.minutes:g} min at {rate:.0f} txn/s "
                                              f"({args.load:g}% of {sustainable:.0f})")
    ok = (result["stall_s"] <= args.sample and result["rss_growth_pct"] < 10 and result["unexplained_loss"] == 0
          and not result["restart"] and result["exit_code"] == 0 and result["sigterm_s"] < 2
          and result["filters_left"] == 0)
    print(f"soak {'PASS' if ok else 'FAIL'}: {args.minutes:g} min, {rate:.0f} txn/s; longest stall "
          f"{result['stall_s']:.0f}s; RSS {result['rss_mb_at_5min']:.0f}->{result['rss_mb_peak_after_5min']:.0f} MB "
          f"({result['rss_growth_pct']:+.1f}%); events {sum(result['events'].values())} for "
          f"{sum(result['clients'].values())} client txns, unexplained loss {result['unexplained_loss']:.0f}, "
          f"counted drops {result['counted_drops']:.0f}; restart {result['restart']}; SIGTERM "
          f"{result['sigterm_s']:.2f}s exit {result['exit_code']}, filters left {result['filters_left']}; "
          f"plot {out / 'soak.png'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
