#!/usr/bin/env python3
"""Redis under redis-benchmark, captured live by pktbeat: the highest request rate at which every command pairs.

    sudo .venv/bin/python bench/db_redis.py [--rates 1000,2000,4000,8000,12000,16000] [--seconds 8]
                                             [--clients 4] [--pipeline 1] [--drain 30] [--ring-mb 24]

redis-server runs in namespace b, redis-benchmark (`-t set`) in namespace a;
pktbeat captures live (eBPF) on a's veth with redis on 6379.  redis-benchmark
has no rate option, so the rate is set by shaping: a token bucket (tc tbf) on
a's veth lets through about `rate` requests' worth of bytes per second
(REQUEST_WIRE_BYTES each, headers included), and the closed-loop clients
follow it; `-n` = rate x seconds.  The achieved rate (redis-benchmark's
requests per second) is what the table reports and judges.

For each rate it prints the SETs the server executed (INFO commandstats),
the redis events pktbeat published for them (status OK, paired), the
difference (lost or unpaired), the agent's unmatched and dropped counters,
the kernel capture's drops, and the CPU the agent used (its process and its
capture workers, user+system): seconds, share of one core from the start of
the load until the agent caught up, and microseconds per request.  After the
load it waits up to `--drain` seconds for the agent to catch up.  The last
line names the highest rate with zero loss.

Every run is bounded (redis-benchmark by -n and a timeout).  Traffic stays
inside the two namespaces this script creates.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.live import LiveAgent, live_agent  # noqa: E402
from tests.helpers.netns import VethPair  # noqa: E402
from tests.protocols.redis.test_live import PORT, redis_server, server_calls  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
# A `SET key:__rand_int__ xxx` request is 45 bytes of RESP; a packet adds 66 bytes of headers.
REQUEST_BYTES = 45
PACKET_OVERHEAD = 66


def tree_cpu_seconds(root: int, reaped: bool = False) -> float:
    """User+system CPU seconds of process `root` and its live descendants (the capture workers); with
    `reaped`, also of the descendants that ended and were waited for (a server's per-connection processes)."""
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    total = 0
    for pid, ticks in cpu.items():
        node = pid
        while node > 1 and node != root:
            node = parents.get(node, 0)
        if node == root:
            total += ticks
    return total / TICKS


def paired_sets(agent: LiveAgent) -> int:
    """SET events published OK with a duration (a request paired with its reply); a byte scan, no JSON decoding."""
    count = 0
    out = agent.directory / "out"
    for path in out.iterdir() if out.is_dir() else ():
        for line in path.read_bytes().splitlines():
            if b'"method":"SET"' in line and b'"status":"OK"' in line and b'"duration":' in line:
                count += 1
    return count


def wait_drained(agent: LiveAgent, expected: int, limit: float) -> None:
    """Until the agent published `expected` SETs, or its count stopped growing for a second, or `limit`."""
    deadline = time.monotonic() + limit
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = paired_sets(agent)
        if count >= expected:
            return
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since > 1.5:
            return
        time.sleep(0.3)


def shape(pair: VethPair, rate: int, pipeline: int) -> None:
    """Let about `rate` requests per second leave namespace a (its veth's root qdisc)."""
    per_request = REQUEST_BYTES + math.ceil(PACKET_OVERHEAD / pipeline)
    bits = rate * per_request * 8
    pair.a.run(["tc", "qdisc", "replace", "dev", pair.a_if, "root", "tbf", "rate", f"{bits}bit", "burst",
                f"{max(4096, per_request * pipeline * 4)}b", "latency", "50ms"])


def run_rate(pair: VethPair, rate: int, seconds: float, clients: int, pipeline: int, drain: float,
             ring_mb: int) -> dict[str, Any]:
    shape(pair, rate, pipeline)
    total = max(1000, int(rate * seconds))
    protocols = [{"type": "redis", "ports": [PORT]}]
    before = server_calls(pair).get("SET", 0)
    settings = {"packetbeat.interfaces.buffer_size_mb": ring_mb,
                # Keep every event: the default rotation (7 files of 10 MB) would delete the oldest.
                "output.file.rotate_every_kb": 1 << 20, "output.file.number_of_files": 1024}
    with live_agent(pair.a, [pair.a_if], protocols, settings) as agent:
        root = agent.proc.pid
        cpu0, wall0 = tree_cpu_seconds(root), time.monotonic()
        out = pair.a.run(["redis-benchmark", "-h", pair.b_ip, "-p", str(PORT), "-c", str(clients), "-P",
                          str(pipeline), "-n", str(total), "-t", "set", "-q"], timeout=seconds * 10 + 60).stdout
        load_s = time.monotonic() - wall0
        sets = server_calls(pair).get("SET", 0) - before
        wait_drained(agent, sets, drain)
        cpu1, wall1 = tree_cpu_seconds(root), time.monotonic()
        code = agent.stop()
        if code != 0:
            raise SystemExit(f"pktbeat exited {code}:\n{agent.log()[-2000:]}")
        paired = paired_sets(agent)
        log = agent.log()
    achieved = re.search(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    unmatched = sum(int(n) for n in re.findall(r"redis\.unmatched_\w+=(\d+)", log))
    dropped = sum(int(n) for n in re.findall(r"(?:queue_overflow|queue_full_drops|dropped\w*)=(\d+)", log))
    kernel = [line.split("dropped:", 1)[1].strip() for line in log.splitlines() if "dropped:" in line]
    return {"rate": rate, "clients": clients, "pipeline": pipeline, "achieved": float(achieved.group(1)) if achieved
            else sets / max(load_s, 1e-9), "sets": sets, "paired": paired, "lost": sets - paired,
            "unmatched": unmatched, "dropped": dropped, "kernel": "; ".join(k for k in kernel if k != "none") or "none",
            "cpu_s": cpu1 - cpu0, "cpu_pct": 100.0 * (cpu1 - cpu0) / max(wall1 - wall0, 1e-9),
            "us_per_req": 1e6 * (cpu1 - cpu0) / max(sets, 1), "drain_s": wall1 - wall0 - load_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,2000,4000,8000,12000,16000",
                        help="target requests/s, comma separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per rate (sets -n)")
    parser.add_argument("--clients", type=int, default=4, help="redis-benchmark -c")
    parser.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds allowed for the agent to catch up")
    parser.add_argument("--ring-mb", type=int, default=24,
                        help="packetbeat.interfaces.buffer_size_mb (Packetbeat's default: 24)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    best = 0.0
    with tempfile.TemporaryDirectory(prefix="pktbeat-bench-redis-") as tmp, redis_server(Path(tmp)) as pair:
        print(f"redis-benchmark -t set -c {args.clients} -P {args.pipeline}, shaped with tbf; "
              f"pktbeat live capture (1 worker, {args.ring_mb} MiB ring), redis; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'target':>7} {'-c':>3} {'-P':>3} {'req/s':>9} {'SETs':>7} {'paired':>7} {'lost':>6} "
              f"{'unmatched':>9} {'dropped':>7} {'cpu s':>6} {'cpu %':>6} {'cpu us/req':>10} {'drain s':>7}  "
              f"kernel drops")
        for rate in rates:
            row = run_rate(pair, rate, args.seconds, args.clients, args.pipeline, args.drain, args.ring_mb)
            print(f"{row['rate']:>7} {row['clients']:>3} {row['pipeline']:>3} {row['achieved']:>9.0f} "
                  f"{row['sets']:>7} {row['paired']:>7} {row['lost']:>6} {row['unmatched']:>9} {row['dropped']:>7} "
                  f"{row['cpu_s']:>6.2f} {row['cpu_pct']:>6.1f} {row['us_per_req']:>10.0f} {row['drain_s']:>7.1f}"
                  f"  {row['kernel']}", flush=True)
            if row["lost"] == 0 and row["unmatched"] == 0 and row["sets"] > 0:
                best = max(best, row["achieved"])
    print(f"highest rate with every command paired and no loss: {best:.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
