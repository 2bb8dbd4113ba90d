"""Replay speed of pktbeat against tshark on the same large HTTP + DNS capture, in one run.

    .venv/bin/python bench/replay_bench.py [--pcap FILE] [--packets 133000] [--body-mu 8.6]
                                           [--runs 5] [--output file|discard] [--skip-ek]

Without --pcap, bench/gen_traffic_pcap.py writes a deterministic capture to
/tmp/pktbeat-bench-<packets>-<body-mu>.pcap first.  The default body size
makes it the capture the replay issue describes: 133k packets, 99 MB
(`--body-mu 8.0` gives a denser 77 MB one with more, smaller transactions).

Each tool runs on the same file as a separate process, start-up included;
the best of --runs is kept.  Columns:

  seconds      wall time of the whole process
  packets/s    packets / seconds
  per CPU-s    packets / (user + system CPU seconds): the per-core rate
  after start  packets / (seconds - the same tool's time on an empty capture)
  txns/s       pktbeat's published events / seconds

pktbeat runs once untimed first, so Python's bytecode cache exists (as it does
after any first run; PYTHONDONTWRITEBYTECODE is cleared for the children).  It
runs with the native (mypyc) modules set-up builds; PKTBEAT_PURE_PYTHON=1 in
the environment measures the plain Python modules instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_traffic_pcap import generate  # noqa: E402

PKTBEAT = ROOT / ".venv" / "bin" / "pktbeat"
ISSUE_BODY_MU = 8.6  # lognormal mu of response bodies that gives the issue's 99 MB for 133k packets


def count_packets(pcap: Path) -> int:
    from agent.capture.pcapfile import CaptureReader

    with CaptureReader(pcap) as reader:
        return sum(1 for _ in reader)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def native_modules() -> str:
    code = "import importlib; from agent import accel; [importlib.import_module(m) for m in accel.MODULES]; " \
           "print(len(accel.active()), len(accel.MODULES))"
    out = subprocess.run([str(PKTBEAT.with_name("python")), "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=child_env())
    return out.stdout.strip().replace(" ", " of ") or "unknown"


def timed(args: list[str], runs: int, cwd: Path | None = None) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (user + system) of `runs` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=child_env())
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {proc.stderr.decode()[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best_wall = min(best_wall, elapsed)
        best_cpu = min(best_cpu, cpu)
    return best_wall, best_cpu


def pktbeat_config(directory: Path, output: str) -> Path:
    out = {"file": {"path": str(directory / "out"), "filename": "packetbeat", "rotate_every_kb": 1_000_000,
                    "number_of_files": 1024}} if output == "file" else {"discard": {}}
    config = {"packetbeat.protocols": [{"type": "http", "ports": [80]}, {"type": "dns", "ports": [53]}],
              "output": out, "logging.level": "warning"}
    path = directory / "bench.yml"
    path.write_text(json.dumps(config))
    return path


def empty_capture(directory: Path, like: Path) -> Path:
    """A capture with the same file header (link type) and no packets: the tools' start-up cost."""
    path = directory / "empty.pcap"
    with open(like, "rb") as handle:
        header = handle.read(24)
    if len(header) != 24 or struct.unpack("<I", header[:4])[0] not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{like}: --pcap must be a little-endian classic pcap file")
    path.write_bytes(header)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pcap", type=Path)
    parser.add_argument("--packets", type=int, default=133_000)
    parser.add_argument("--body-mu", type=float, default=ISSUE_BODY_MU,
                        help="response body size (lognormal mu) of the generated capture")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", choices=("file", "discard"), default="file")
    parser.add_argument("--skip-ek", action="store_true", help="skip the slow tshark -T ek run")
    args = parser.parse_args()

    pcap = args.pcap or Path(f"/tmp/pktbeat-bench-{args.packets}-{args.body_mu:g}.pcap")
    if not pcap.exists():
        generate(pcap, args.packets, seed=1, body_mu=args.body_mu)
    packets = count_packets(pcap)
    size_mb = pcap.stat().st_size / 1e6
    print(f"capture: {pcap} ({packets} packets, {size_mb:.1f} MB); pktbeat's native modules: {native_modules()}")

    rows: list[tuple[str, float, float, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = pktbeat_config(directory, args.output)
        empty = empty_capture(directory, pcap)
        pktbeat = [str(PKTBEAT), "run", "-t", "-c", str(config), "-I"]
        timed([*pktbeat, str(pcap)], 1, cwd=directory)  # untimed: bytecode cache, page cache
        start_up, _ = timed([*pktbeat, str(empty)], args.runs, cwd=directory)
        shutil.rmtree(directory / "out", ignore_errors=True)
        wall, cpu = timed([*pktbeat, str(pcap)], args.runs, cwd=directory)
        events = 0
        if args.output == "file":
            for path in (directory / "out").iterdir():
                with open(path, "rb") as handle:
                    events += sum(1 for _ in handle)
            events //= args.runs  # every run appends its own file
        rows.append(("pktbeat run -t -I", wall, cpu, start_up, events))
        tshark = shutil.which("tshark")
        if tshark:
            tshark_start, _ = timed([tshark, "-r", str(empty)], args.runs)
            wall, cpu = timed([tshark, "-r", str(pcap)], args.runs)
            rows.append(("tshark -r", wall, cpu, tshark_start, 0))
            if not args.skip_ek:
                wall, cpu = timed([tshark, "-r", str(pcap), "-T", "ek"], 1)
                rows.append(("tshark -r -T ek", wall, cpu, tshark_start, 0))
    print(f"{'tool':<20} {'seconds':>8} {'packets/s':>10} {'per CPU-s':>10} {'start-up':>9} {'after start':>12} "
          f"{'txns/s':>8}")
    for name, seconds, cpu, start, txns in rows:
        after = packets / (seconds - start) if seconds > start else float("nan")
        txn_rate = f"{txns / seconds:8.0f}" if txns else f"{'':>8}"
        print(f"{name:<20} {seconds:8.2f} {packets / seconds:10.0f} {packets / cpu:10.0f} {start:9.2f} "
              f"{after:12.0f} {txn_rate}")
    if args.output == "file":
        print(f"pktbeat published {events} events")


if __name__ == "__main__":
    main()
