#!/usr/bin/env python3
"""PostgreSQL under pgbench, captured live by pktbeat: the highest rate at which every transaction pairs.

    sudo .venv/bin/python bench/db_pgbench.py [--rates 200,400,800,1600] [--seconds 10] [--clients 4]
                                              [--protocol simple|extended|prepared]

PostgreSQL 15 runs in namespace b, pgbench (select-only, `-S`, rate-limited
with `-R`) in namespace a; pktbeat captures live (eBPF) on a's veth with
the pgsql protocol on 5432.  For each rate it prints the transactions
pgbench completed, the pgsql events pktbeat published for pgbench's query,
the difference (lost or unpaired), the agent's unmatched counters, and the
CPU the agent used (user+system of the agent and its capture workers, as a
share of one core).  It also shows TCP gaps the agent saw and the kernel capture's own drop
counters (ring buffer full...).  The last line names the highest rate with
zero loss.

Every run is bounded: pgbench by -T, each command by a timeout.  Traffic
stays inside the two namespaces this script creates.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.live import live_agent  # noqa: E402
from tests.protocols.pgsql.test_live import PORT, postgres_server  # noqa: E402

PGBENCH_QUERY = "SELECT abalance FROM pgbench_accounts WHERE aid = "
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of process `root` and all its live descendants (the capture workers)."""
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    total = 0
    for pid, ticks in cpu.items():
        node = pid
        while node > 1 and node != root:
            node = parents.get(node, 0)
        if node == root:
            total += ticks
    return total / TICKS


def settle(agent: Any, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Wait until the agent has caught up: its published events stop growing (it may be behind on its ring)."""
    out = agent.directory / "out"
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count = sum(path.stat().st_size for path in out.iterdir()) if out.is_dir() else 0
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.25)


def run_rate(pair, rate: int, seconds: int, clients: int, protocol: str) -> dict[str, Any]:
    protocols = [{"type": "pgsql", "ports": [PORT]}]
    with live_agent(pair.a, [pair.a_if], protocols, {"packetbeat.interfaces.buffer_size_mb": 24,
                                                     "output.file.rotate_every_kb": 1_000_000}) as agent:
        root = agent.proc.pid
        cpu0, wall0 = tree_cpu_seconds(root), time.monotonic()
        proc = pair.a.run(["pgbench", "-h", pair.b_ip, "-p", str(PORT), "-U", "postgres", "-S", "-n",
                           "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "-R", str(rate),
                           "-M", protocol, "postgres"], timeout=seconds + 60)
        settle(agent)
        cpu1, wall1 = tree_cpu_seconds(root), time.monotonic()
        code = agent.stop()
        if code != 0:
            raise SystemExit(f"pktbeat exited {code}:\n{agent.log()[-2000:]}")
        events = agent.events("pgsql")
        log = agent.log()
    match = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    done = int(match.group(1)) if match else 0
    tps = re.search(r"tps = ([\d.]+)", proc.stdout)
    paired = sum(1 for e in events if str(e.get("query", "")).startswith(PGBENCH_QUERY) and e.get("event", {})
                 .get("duration") is not None and e.get("status") == "OK")
    unmatched = sum(int(n) for n in re.findall(r"pgsql\.unmatched_\w+=(\d+)", log))
    gaps = sum(int(n) for n in re.findall(r"tcp\.gaps=(\d+)", log))
    drops = [line.split("dropped:", 1)[1].strip() for line in log.splitlines() if "dropped:" in line]
    return {"rate": rate, "tps": float(tps.group(1)) if tps else 0.0, "txns": done, "events": paired,
            "lost": done - paired, "unmatched": unmatched, "gaps": gaps,
            "kernel_drops": "; ".join(d for d in drops if d != "none") or "none", "cpu_s": cpu1 - cpu0,
            "cpu_pct": 100.0 * (cpu1 - cpu0) / max(wall1 - wall0, 1e-9)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="200,400,800,1600,3200", help="pgbench -R values, comma separated")
    parser.add_argument("--seconds", type=int, default=10, help="pgbench -T per rate")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--protocol", default="simple", choices=("simple", "extended", "prepared"))
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    best = 0
    with postgres_server() as pair:
        pair.a.run(["pgbench", "-h", pair.b_ip, "-p", str(PORT), "-U", "postgres", "-i", "-s", "1", "-q",
                    "postgres"], timeout=300)
        print(f"pgbench -S -M {args.protocol} -c {args.clients} -T {args.seconds}; pktbeat live capture, pgsql")
        print(f"{'rate':>6} {'tps':>8} {'txns':>7} {'events':>7} {'lost':>5} {'unmatched':>9} {'tcp gaps':>8} "
              f"{'cpu s':>6} {'cpu %':>6}  kernel drops")
        for rate in rates:
            row = run_rate(pair, rate, args.seconds, args.clients, args.protocol)
            print(f"{row['rate']:>6} {row['tps']:>8.1f} {row['txns']:>7} {row['events']:>7} {row['lost']:>5} "
                  f"{row['unmatched']:>9} {row['gaps']:>8} {row['cpu_s']:>6.2f} {row['cpu_pct']:>6.1f}  "
                  f"{row['kernel_drops']}", flush=True)
            if row["lost"] == 0 and row["unmatched"] == 0 and row["txns"] > 0:
                best = max(best, int(row["tps"]))
    print(f"highest rate with every transaction paired: {best} transactions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
