"""Replay speed of pktbeat against tshark on the same large HTTP + DNS capture, in one run.

    .venv/bin/python bench/replay_bench.py [--pcap FILE] [--packets 133000] [--runs 3] [--output file|discard]

Without --pcap, bench/gen_traffic_pcap.py writes a deterministic capture to
/tmp/pktbeat-bench-<packets>.pcap first.  Each tool is timed end to end
(process start included) on the same file; the best of --runs is reported,
with packets/s and, for pktbeat, transactions/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_traffic_pcap import generate  # noqa: E402

PKTBEAT = ROOT / ".venv" / "bin" / "pktbeat"


def count_packets(pcap: Path) -> int:
    from agent.capture.pcapfile import CaptureReader

    with CaptureReader(pcap) as reader:
        return sum(1 for _ in reader)


def timed(args: list[str], runs: int, cwd: Path | None = None) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {proc.stderr.decode()[-2000:]}")
        best = min(best, elapsed)
    return best


def pktbeat_config(directory: Path, output: str) -> Path:
    out = {"file": {"path": str(directory / "out"), "filename": "packetbeat", "rotate_every_kb": 1_000_000,
                    "number_of_files": 1024}} if output == "file" else {"discard": {}}
    config = {"packetbeat.protocols": [{"type": "http", "ports": [80]}, {"type": "dns", "ports": [53]}],
              "output": out, "logging.level": "warning"}
    path = directory / "bench.yml"
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pcap", type=Path)
    parser.add_argument("--packets", type=int, default=133_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", choices=("file", "discard"), default="file")
    parser.add_argument("--skip-ek", action="store_true", help="skip the slow tshark -T ek run")
    args = parser.parse_args()

    pcap = args.pcap or Path(f"/tmp/pktbeat-bench-{args.packets}.pcap")
    if not pcap.exists():
        generate(pcap, args.packets, seed=1)
    packets = count_packets(pcap)
    size_mb = pcap.stat().st_size / 1e6
    print(f"capture: {pcap} ({packets} packets, {size_mb:.1f} MB)")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = pktbeat_config(directory, args.output)
        elapsed = timed([str(PKTBEAT), "run", "-t", "-I", str(pcap), "-c", str(config)], args.runs, cwd=directory)
        events = 0
        if args.output == "file":
            for path in (directory / "out").iterdir():
                with open(path, "rb") as handle:
                    events += sum(1 for _ in handle)
            events //= args.runs  # every run appends its own file
        rows = [("pktbeat run -t -I", elapsed, events)]
    tshark = shutil.which("tshark")
    if tshark:
        rows.append(("tshark -r", timed([tshark, "-r", str(pcap)], args.runs), 0))
        if not args.skip_ek:
            rows.append(("tshark -r -T ek", timed([tshark, "-r", str(pcap), "-T", "ek"], 1), 0))
    print(f"{'tool':<20} {'seconds':>8} {'packets/s':>10} {'transactions/s':>15}")
    for name, seconds, txns in rows:
        txn_rate = f"{txns / seconds:15.0f}" if txns else f"{'':>15}"
        print(f"{name:<20} {seconds:8.2f} {packets / seconds:10.0f} {txn_rate}")
    if args.output == "file":
        print(f"pktbeat published {events} events")


if __name__ == "__main__":
    main()
