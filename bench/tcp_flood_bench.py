"""Peak memory of one worker under a SYN flood plus slow unfinished headers (issue 15, acceptance e).

    .venv/bin/python bench/tcp_flood_bench.py [--syns 200000] [--slow 200] [--header-bytes 1000000]
                                              [--set key=value]... [--live [--pps 60000]] [--costs]

Writes a capture to /tmp (once): `--syns` SYNs from distinct spoofed clients,
never answered, then `--slow` HTTP connections that each send
`--header-bytes` of header lines, round robin, never the blank line that ends
them; all of it inside one transaction_timeout.  Then replays it at full
speed (`-t`) with the default settings (plus any `--set`) in a fresh process
that runs exactly what `pktbeat run -I` runs, and prints that process's peak
RSS, its TCP state at the end and the tcp.* counters (what was dropped, and
why).  One process is one worker's worth: the same dispatcher, sessions and
limits; it also holds the output pipeline, which a live worker does not.

`--live` sends the same frames instead from one network namespace to a veth
that `pktbeat run` (one worker, default settings) captures on in another,
at `--pps` frames per second, and prints the worker process's peak RSS
(VmHWM) and its counters (the SIGUSR1 report), with what the kernel dropped.
Needs root.

`--costs` prints instead what one connection costs per protocol (tracemalloc):
a half-open one (after a SYN) and one that carried a few bytes, the numbers
behind agent.transport.dispatcher's HALF_OPEN_COST and CONNECTION_COST.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PORTS = {"http": 80, "mysql": 3306, "pgsql": 5432, "redis": 6379, "tls": 443, "mongodb": 27017,
         "memcache": 11211, "cassandra": 9042, "amqp": 5672, "thrift": 9090, "dns": 53, "nfs": 2049}


def write_capture(path: Path, syns: int, slow: int, header_bytes: int) -> None:
    from tests.helpers.floods import PcapWriter, slow_headers, syn_flood

    tmp = path.with_suffix(".tmp")
    with PcapWriter(tmp) as w:
        syn_flood(w, syns, step_us=2)
        slow_headers(w, slow, header_bytes, step_us=2)
    tmp.replace(path)


def child(pcap: str, settings: list[str]) -> None:
    """Run the replay as `pktbeat run -I PCAP -t` would; print what it kept and dropped, as JSON."""
    from agent import metrics
    from agent.config.load import load
    from agent.runtime.replay import ReplayOptions, ReplayRunner

    with tempfile.TemporaryDirectory(prefix="pktbeat-flood-") as home:
        config = Path(home) / "packetbeat.yml"
        config.write_text("packetbeat.protocols:\n- type: http\n  ports: [80]\n")
        config.chmod(0o600)
        cfg = load(str(config), [f"path.home={home}", "logging.to_files=false", *settings])
        runner = ReplayRunner(cfg, ReplayOptions([pcap], topspeed=True, loops=1, progress=False))
        started = time.monotonic()
        code = runner.run()
        seconds = time.monotonic() - started
        d = runner.dispatcher
        print(json.dumps({
            "exit": code, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "connections": d.connection_count, "half_open": d.half_open_count,
            "held_bytes": d.reassembler.held_total + d.reassembler.ooo_total,
            "counters": {k: v for k, v in sorted(metrics.snapshot().items()) if k.startswith(("tcp.", "http."))},
        }))


def send_frames(pcap: str, iface: str, dst_mac: str, pps: int) -> None:
    """Send every frame of `pcap` out of `iface` (raw), to `dst_mac`, paced at `pps`; print how many."""
    import socket

    from agent.capture.pcapfile import CaptureReader

    mac = bytes.fromhex(dst_mac.replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent = 0
    started = time.monotonic()
    with CaptureReader(pcap) as reader:
        for _ts, frame, _wire in reader:
            while True:
                try:
                    sock.send(mac + frame[6:])
                    break
                except BlockingIOError:  # the veth queue is full: wait for it
                    time.sleep(0.0005)
            sent += 1
            if sent % 500 == 0:
                ahead = sent / pps - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    print(f"sent {sent} in {time.monotonic() - started:.1f}s")


def _status_mb(pid: str, field: str) -> float:
    """A memory line of /proc/PID/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def live(pcap: Path, pps: int, settings: list[str]) -> None:
    import signal

    from tests.helpers.live import live_agent
    from tests.helpers.netns import veth_pair

    extra = dict(item.split("=", 1) for item in settings)
    with veth_pair("pbfl") as pair, live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [80]}],
                                               settings={"packetbeat.interfaces.buffer_size_mb": 24, **extra}
                                               ) as agent:
        mac = pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
        workers = pair.a.run(["pgrep", "-P", str(agent.proc.pid)], check=False).stdout.split()
        idle = {pid: _status_mb(pid, "VmRSS") for pid in workers}
        sender = pair.b.run([sys.executable, __file__, "--send", str(pcap), pair.b_if, mac, str(pps)],
                            timeout=3600).stdout.strip()
        time.sleep(3)  # the workers drain their rings
        peaks = {pid: _status_mb(pid, "VmHWM") for pid in workers}
        mark = len(agent.log())
        agent.signal(signal.SIGUSR1)
        agent.wait_for("agent counters on SIGUSR1", 10, after=mark)
        report = agent.log()[mark:]
        agent.stop()
    print(f"{sender}; worker RSS before the flood, then its peak (VmHWM): "
          + ", ".join(f"pid {pid} {idle[pid]:.0f} MB -> {mb:.0f} MB" for pid, mb in peaks.items()))
    for line in report.splitlines():
        if "counters on SIGUSR1" in line:
            print("  " + line.split("] ", 1)[-1][:2000])


def costs() -> None:
    from agent.config.load import from_tree
    from agent.config.yamlload import normalize
    from agent.protocols import registry
    from agent.runtime import wiring

    n = 5000
    server = bytes([10, 9, 0, 1])
    print(f"{'protocol':<10} {'half-open B':>12} {'with payload B':>15}")
    for name, port in PORTS.items():
        try:
            spec = registry.spec(name)
        except (KeyError, ModuleNotFoundError):
            continue
        if spec.tcp is None:
            continue
        config = from_tree(normalize({"packetbeat.protocols": [{"type": name, "ports": [port]}],
                                      "output.discard": {}}))
        d = wiring.dispatcher(config, lambda _txn: None)
        # Fresh address objects per packet, as live capture makes them.
        clients = [bytes([11, i >> 16 & 255, i >> 8 & 255, i & 255]) for i in range(n)]
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i, client in enumerate(clients):
            d.tcp(10**9 + i, bytes(bytearray(client)), bytes(bytearray(server)), 1024 + i, port, 7, 0, 0x02, b"")
        half = (tracemalloc.get_traced_memory()[0] - base) / n
        for i, client in enumerate(clients):
            d.tcp(10**9 + n + i, bytes(client), bytes(server), 1024 + i, port, 8, 0, 0x18, b"\x00\x00")
        full = (tracemalloc.get_traced_memory()[0] - base) / n
        tracemalloc.stop()
        print(f"{name:<10} {half:>12.0f} {full:>15.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--syns", type=int, default=200_000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--header-bytes", type=int, default=1_000_000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting, as -E")
    parser.add_argument("--costs", action="store_true", help="per-connection costs by protocol instead")
    parser.add_argument("--live", action="store_true", help="through live capture on a veth (root)")
    parser.add_argument("--pps", type=int, default=60_000, help="with --live: frames per second sent")
    parser.add_argument("--child", metavar="PCAP", help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs=4, metavar=("PCAP", "IFACE", "MAC", "PPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send_frames(args.send[0], args.send[1], args.send[2], int(args.send[3]))
        return
    if args.child:
        child(args.child, args.set)
        return
    if args.costs:
        costs()
        return
    pcap = Path(tempfile.gettempdir()) / f"pktbeat-flood-{args.syns}-{args.slow}-{args.header_bytes}.pcap"
    if not pcap.exists():
        write_capture(pcap, args.syns, args.slow, args.header_bytes)
    size = pcap.stat().st_size
    print(f"capture: {pcap} ({size / 1e6:.0f} MB): {args.syns} SYNs, then {args.slow} connections x "
          f"{args.header_bytes} bytes of unfinished headers")
    if args.live:
        live(pcap, args.pps, args.set)
        return
    proc = subprocess.run([sys.executable, __file__, "--child", str(pcap), *(f"--set={s}" for s in args.set)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"replay failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"peak RSS {result['peak_rss_mb']} MB in {result['seconds']} s (exit {result['exit']}); at the end: "
          f"{result['connections']} connections, {result['half_open']} half-open, "
          f"{result['held_bytes'] / 1e6:.1f} MB held for unfinished messages")
    for key, value in result["counters"].items():
        print(f"  {key:<28} {value:>12,}")


if __name__ == "__main__":
    main()
