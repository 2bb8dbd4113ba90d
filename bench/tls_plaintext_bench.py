"""What TLS plaintext costs: an HTTPS keep-alive loop against nginx with no agent, the agent without and with it.

    sudo .venv/bin/python bench/tls_plaintext_bench.py [--requests 2000] [--rounds 3] [--blocks 2]

nginx (TLS, HTTP/1.1) runs in namespace b; in namespace a, curl fetches a
small file `--requests` times over one kept-alive TLS connection (a tight
loop: each request is one SSL_write and one or two SSL_read calls at each
end, and nginx is traced as well as curl).  Modes: `none` (no agent), `off`
(the agent on a's veth, packetbeat.tls_plaintext off: no uprobe anywhere) and
`on` (uprobes on libssl.so.3, plaintext decoded into HTTP events).  Modes run
in blocks (none, off, on) repeated `--blocks` times, `--rounds` runs each;
the table gives the median requests per second, the change against `off`
and `none`, and the agent's CPU time (parent and workers, from /proc) per
1000 requests.  Uprobes are global: nothing else on the machine should run
an agent with tls_plaintext while the bench runs.

Wall times on a shared machine vary by +-20%: compare the modes of one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.procs_bench import group_cpu_s  # noqa: E402
from tests.capture.test_live_tls_plaintext import HTTPS_PORT, PROTOCOLS, _certificate, _nginx_conf  # noqa: E402
from tests.helpers.live import live_agent  # noqa: E402
from tests.helpers.netns import VethPair, veth_pair  # noqa: E402

MODES = ("none", "off", "on")


def run_loop(pair: VethPair, requests: int) -> float:
    """Seconds for `requests` HTTPS requests on one connection."""
    url = f"https://{pair.b_ip}:{HTTPS_PORT}/small.txt?[1-{requests}]"
    started = time.monotonic()
    proc = subprocess.run(pair.a.exec_args(["curl", "-sk", "--http1.1", url]), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=600)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed: {proc.stderr.decode(errors='replace')}")
    return elapsed


def measure(pair: VethPair, mode: str, args: argparse.Namespace) -> tuple[list[float], float, int]:
    """(seconds per round, agent CPU seconds, HTTP events over TLS) of one block in `mode`."""
    if mode == "none":
        return [run_loop(pair, args.requests) for _ in range(args.rounds)], 0.0, 0
    settings = {"packetbeat.tls_plaintext": {"enabled": mode == "on", "ports": {"http": [HTTPS_PORT]}},
                "packetbeat.interfaces.buffer_size_mb": 16}
    with live_agent(pair.a, [pair.a_if], PROTOCOLS, settings) as agent:
        if mode == "on" and not agent.wait_for("library file(s) probed", timeout=20):
            raise RuntimeError(agent.log()[-2000:])
        time.sleep(0.5)
        cpu0 = group_cpu_s(agent.proc.pid)
        times = [run_loop(pair, args.requests) for _ in range(args.rounds)]
        time.sleep(0.5)  # the workers' last events
        cpu = group_cpu_s(agent.proc.pid) - cpu0
        if agent.stop() != 0:
            raise RuntimeError(agent.log()[-2000:])
    events = sum(1 for e in agent.events("http") if e["destination"].get("port") == HTTPS_PORT)
    return times, cpu, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
    events: dict[str, int] = dict.fromkeys(MODES, 0)
    with tempfile.TemporaryDirectory(prefix="pktbeat-tlsbench-") as tmp, veth_pair("pbk") as pair:
        root = Path(tmp)
        root.chmod(0o755)
        cert, key = _certificate(root)
        key.chmod(0o644)
        (root / "www").mkdir()
        (root / "www" / "small.txt").write_text("hello\n")
        (root / "nginx.conf").write_text(_nginx_conf(root, pair.b_ip, cert, key).replace(
            "server {", "keepalive_requests 1000000;\n            server {"))
        pair.b.popen(["nginx", "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")])
        pair.b.wait_port(HTTPS_PORT, pair.b_ip)
        run_loop(pair, 100)  # warm up
        for _ in range(args.blocks):
            for mode in MODES:
                times, used, seen = measure(pair, mode, args)
                results[mode] += times
                cpu[mode] += used
                events[mode] += seen
    total = args.requests * args.rounds * args.blocks
    rate = {m: args.requests / statistics.median(results[m]) for m in MODES}
    print(f"{args.requests} HTTPS requests per round on one keep-alive connection, "
          f"{args.rounds} rounds x {args.blocks} blocks per mode")
    print(f"{'mode':6} {'req/s':>8} {'vs off':>8} {'vs none':>8} {'agent CPU s/1000 req':>21} {'TLS events':>11}")
    for mode in MODES:
        print(f"{mode:6} {rate[mode]:8.0f} {rate[mode] / rate['off'] - 1:+8.1%} {rate[mode] / rate['none'] - 1:+8.1%} "
              f"{cpu[mode] * 1000 / total:21.3f} {events[mode]:11d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
