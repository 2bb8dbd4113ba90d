"""Live capture throughput: a veth driven at rising UDP rates, with 1 and 2 workers (not a test).

    sudo .venv/bin/python bench/capture_bench.py [--rates 25000,50000,100000,200000,300000]
        [--workers 1,2] [--seconds 5] [--payload 32] [--sources 16] [--protocol dns --port 53]

A C flooder (bench/capture_flood.c, compiled with gcc at run time) sends
UDP datagrams from namespace b to namespace a, from `--sources` addresses
(one flow each: UDP is steered to workers by address pair), to an address
that a's veth receives but nothing answers (no ICMP comes back).  The agent
(`pktbeat run -i <veth>`) runs in namespace a with the port configured for
`--protocol`; the payload is 0xff bytes, which that protocol's parser
rejects at once, so the numbers measure capture: ring, record decoding,
chunk joining and the transport dispatcher.

Per rate the table shows what the flooder offered, what the kernel program
saw, handed to the workers (records written to the rings) or dropped by
cause, and what the workers decoded, plus the unexplained loss:
  kernel: skbs - (sum of outcomes)            (every run of the program has one outcome;
                                              "seen" counts wire packets, GSO segments included)
  rings:  handed - read by workers            (after the backlog drained)
Both must be 0.  "worker pps" is decoded / (flood time + drain time): what
the workers sustained.  Counters come from the agent's SIGUSR1 report.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.capture.record import DROP_COUNTERS, OUTCOME_COUNTERS  # noqa: E402
from tests.helpers.live import LiveAgent, live_agent  # noqa: E402
from tests.helpers.netns import VethPair, veth_pair  # noqa: E402

DRAIN_TIMEOUT = 30.0


def build_flooder(work: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the flooder")
    binary = work / "capture_flood"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(ROOT / "bench" / "capture_flood.c")], check=True)
    return binary


def prepare(pair: VethPair, sources: int) -> tuple[str, list[str]]:
    """Source addresses in b; a destination a's veth accepts (its MAC) but that no socket answers."""
    prefix = pair.a_ip.rsplit(".", 1)[0]
    addrs = [f"{prefix}.{10 + i}" for i in range(sources)]
    for addr in addrs:
        pair.b.run(f"ip addr add {addr}/24 dev {pair.b_if}")
    mac = pair.a.run(["cat", f"/sys/class/net/{pair.a_if}/address"]).stdout.strip()
    target = f"{prefix}.250"
    pair.b.run(f"ip neigh replace {target} lladdr {mac} dev {pair.b_if} nud permanent")
    return target, addrs


def report(agent: LiveAgent, iface: str) -> tuple[dict[str, int], dict[str, int], dict[int, int]]:
    """(kernel counters of iface, worker totals, records per worker) from a fresh SIGUSR1 report."""
    mark = len(agent.log())
    agent.signal(signal.SIGUSR1)
    if not agent.wait_for("agent counters on SIGUSR1", 10, after=mark):
        raise RuntimeError("the agent did not report:\n" + agent.log()[-2000:])
    text = agent.log()[mark:]
    kernel: dict[str, int] = {}
    workers: dict[str, int] = {}
    per_worker: dict[int, int] = {}
    for line in text.splitlines():
        if f"capture counters on SIGUSR1, {iface}:" in line:
            kernel = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split(f"{iface}:", 1)[1])}
        elif "worker counters on SIGUSR1:" in line:
            workers = {k: int(v) for k, v in re.findall(r"([\w.]+)=(\d+)", line.split("SIGUSR1:", 1)[1])}
        elif "records per worker on SIGUSR1:" in line:
            per_worker = {int(k): int(v) for k, v in re.findall(r"(\d+)=(\d+)", line.split("SIGUSR1:", 1)[1])}
    return kernel, workers, per_worker


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


def run_rate(agent: LiveAgent, pair: VethPair, flooder: Path, target: str, port: int, sources: list[str],
             rate: int, seconds: float, payload: int) -> dict[str, Any]:
    time.sleep(1.2)  # worker stats are sent every second
    k0, w0, p0 = report(agent, pair.a_if)
    started = time.monotonic()
    out = pair.b.run([str(flooder), target, str(port), str(rate), str(seconds), str(payload), *sources],
                     timeout=seconds + 60).stdout
    match = re.search(r"sent (\d+) elapsed_ns (\d+)", out)
    assert match is not None, out
    sent, elapsed_ns = int(match.group(1)), int(match.group(2))
    flood_done = time.monotonic()
    drained_at = flood_done
    while True:  # until the workers have read everything the kernel handed them
        time.sleep(1.2)
        k1, w1, p1 = report(agent, pair.a_if)
        kd, wd = delta(k1, k0), delta(w1, w0)
        drained_at = time.monotonic() - 1.2
        if wd.get("capture.records", 0) >= kd.get("emitted", 0) or time.monotonic() - flood_done > DRAIN_TIMEOUT:
            break
    outcomes = sum(kd.get(name, 0) for name in OUTCOME_COUNTERS)
    busy = max(drained_at - started, elapsed_ns / 1e9)
    return {
        "offered_pps": sent / (elapsed_ns / 1e9),
        "sent": sent,
        "seen": kd.get("seen", 0),
        "matched": kd.get("matched", 0),
        "handed": kd.get("emitted", 0),
        **{f"drop_{name}": kd.get(name, 0) for name in DROP_COUNTERS},
        "read": wd.get("capture.records", 0),
        "decoded": wd.get("capture.packets", 0),
        "unexplained_kernel": kd.get("skbs", 0) - outcomes,
        "unexplained_rings": kd.get("emitted", 0) - wd.get("capture.records", 0),
        "worker_pps": wd.get("capture.packets", 0) / busy if busy > 0 else 0.0,
        "per_worker": (" ".join(str(p1.get(i, 0) - p0.get(i, 0)) for i in sorted(p1))
                       or str(wd.get("capture.records", 0))),
    }


def ring_ceiling(payload: int, records: int = 200_000) -> float:
    """Records/s one process reads and decodes from a ring (a file laid out like the kernel's mapping).

    The ceiling of the capture path alone, before the transport and the
    protocol parsers: what a worker could do if decoding cost nothing.
    """
    import mmap
    import os
    import struct

    from agent.capture.packet import IPPROTO_UDP, Packet
    from agent.capture.record import encode_record
    from agent.capture.ring import RingReader

    page = mmap.PAGESIZE
    rec = encode_record(Packet(0, 4, IPPROTO_UDP, b"\n\0\0\1", b"\n\0\0\2", 40000, 53, b"\xff" * payload))
    blob = struct.pack("<II", len(rec), 0) + rec
    blob += b"\0" * (-len(blob) % 8)
    size = 1
    while size < len(blob) * records:
        size <<= 1
    data = blob * records
    with tempfile.TemporaryFile() as f:
        f.truncate(2 * page + 2 * size)
        os.pwrite(f.fileno(), struct.pack("<Q", len(data)), page)
        os.pwrite(f.fileno(), data, 2 * page)
        reader = RingReader(f.fileno(), size)
        started = time.perf_counter()
        got = 0
        while got < records:
            got += len(reader.read(2048))
        elapsed = time.perf_counter() - started
        reader.close()
    return records / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="25000,50000,100000,150000,200000,300000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--payload", type=int, default=32)
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--protocol", default="dns")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--buffer-mb", type=int, default=32)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    rows: list[tuple[int, int, dict[str, Any]]] = []
    print(f"capture path ceiling (ring read + record decode, one process): {ring_ceiling(args.payload):,.0f} "
          "records/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="pktbeat-bench-") as tmp:
        flooder = build_flooder(Path(tmp))
        with veth_pair("pbbench", offload=False) as pair:
            target, sources = prepare(pair, args.sources)
            for workers in worker_counts:
                settings = {"packetbeat.interfaces.workers": workers,
                            "packetbeat.interfaces.buffer_size_mb": args.buffer_mb,
                            "logging.metrics.enabled": False}
                protocols = [{"type": args.protocol, "ports": [args.port]}]
                with live_agent(pair.a, [pair.a_if], protocols, settings) as agent:
                    for rate in rates:
                        result = run_rate(agent, pair, flooder, target, args.port, sources, rate, args.seconds,
                                          args.payload)
                        rows.append((workers, rate, result))
                        print_row(workers, rate, result, header=len(rows) == 1)
                    agent.stop()
    print()
    print(f"command: {' '.join(sys.argv)}")
    print(f"payload {args.payload} B UDP, {args.sources} flows, {args.seconds:g}s per rate, "
          f"ring {args.buffer_mb} MiB per worker, protocol {args.protocol} on port {args.port}")
    bad = [r for r in rows if r[2]["unexplained_kernel"] or r[2]["unexplained_rings"]]
    print("unexplained loss: " + ("none" if not bad else f"{len(bad)} step(s) - see the table"))
    return 0


COLUMNS = (("workers", 7), ("target", 8), ("offered", 9), ("seen", 9), ("handed", 9), ("ring_full", 9),
           ("other drop", 10), ("decoded", 9), ("worker pps", 10), ("unexpl k/r", 11), ("per worker", 16))


def print_row(workers: int, rate: int, r: dict[str, Any], header: bool) -> None:
    if header:
        print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
    other = r["drop_load_failed"] + r["drop_emit_failed"]
    values = (workers, rate, f"{r['offered_pps']:.0f}", int(r["seen"]), int(r["handed"]), int(r["drop_ring_full"]),
              int(other), int(r["decoded"]), f"{r['worker_pps']:.0f}",
              f"{int(r['unexplained_kernel'])}/{int(r['unexplained_rings'])}", r["per_worker"])
    print(" ".join(f"{v!s:>{w}}" for v, (_, w) in zip(values, COLUMNS, strict=True)), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
