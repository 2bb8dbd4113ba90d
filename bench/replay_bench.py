"""Replay speed of pktbeat against tshark on the same large HTTP + DNS capture, in one run.

    .venv/bin/python bench/replay_bench.py [--pcap FILE] [--packets 133000] [--body-mu 8.6]
                                           [--runs 5] [--output file|discard] [--skip-ek] [--workers 1,0]

Without --pcap, bench/gen_traffic_pcap.py writes a deterministic capture to
/tmp/pktbeat-bench-<packets>-<body-mu>.pcap first.  The default body size
makes it the capture the replay issue describes: 133k packets, 99 MB
(`--body-mu 8.0` gives a denser 77 MB one with more, smaller transactions).

Each tool runs on the same file as a separate process, start-up included;
the best of --runs is kept.  The runs are interleaved (one of each tool per
round), so that a change in the machine's load hits every tool alike.
pktbeat runs once per --workers value (`-E packetbeat.interfaces.workers=N`:
1 is the in-process replay, 0 one worker per CPU).  Columns:

  seconds      wall time of the whole process
  packets/s    packets / seconds
  per CPU-s    packets / (user + system CPU seconds): the per-core rate
  after start  packets / (seconds - the same tool's time on an empty capture)
  txns/s       pktbeat's published events / seconds
  x tshark     tshark -r's seconds / this tool's seconds (the acceptance ratio)

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


def run_once(args: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=child_env())
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stderr.decode()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(commands: dict[str, list[str]], runs: int, cwd: Path | None = None) -> dict[str, tuple[float, float]]:
    """Best wall seconds and best CPU seconds of each command over `runs` interleaved rounds."""
    best = {name: (float("inf"), float("inf")) for name in commands}
    for _ in range(runs):
        for name, args in commands.items():
            wall, cpu = run_once(args, cwd)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


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
    parser.add_argument("--workers", default="1,0", help="packetbeat.interfaces.workers values to run")
    args = parser.parse_args()

    pcap = args.pcap or Path(f"/tmp/pktbeat-bench-{args.packets}-{args.body_mu:g}.pcap")
    if not pcap.exists():
        generate(pcap, args.packets, seed=1, body_mu=args.body_mu)
    packets = count_packets(pcap)
    size_mb = pcap.stat().st_size / 1e6
    load = os.getloadavg()
    print(f"capture: {pcap} ({packets} packets, {size_mb:.1f} MB); pktbeat's native modules: {native_modules()}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    rows: list[tuple[str, float, float, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = pktbeat_config(directory, args.output)
        empty = empty_capture(directory, pcap)
        pktbeat = {f"pktbeat -t workers={w}": [str(PKTBEAT), "run", "-t", "-c", str(config), "-E",
                                               f"packetbeat.interfaces.workers={w}", "-I"]
                   for w in args.workers.split(",")}
        tshark = shutil.which("tshark")
        full = {name: [*command, str(pcap)] for name, command in pktbeat.items()}
        empties = {name: [*command, str(empty)] for name, command in pktbeat.items()}
        if tshark:
            full["tshark -r"] = [tshark, "-r", str(pcap)]
            empties["tshark -r"] = [tshark, "-r", str(empty)]
        for command in pktbeat.values():
            run_once([*command, str(pcap)], cwd=directory)  # untimed: bytecode cache, page cache
        start_up = timed(empties, args.runs, cwd=directory)
        shutil.rmtree(directory / "out", ignore_errors=True)
        best = timed(full, args.runs, cwd=directory)
        events = 0
        if args.output == "file":
            for path in (directory / "out").iterdir():
                with open(path, "rb") as handle:
                    events += sum(1 for _ in handle)
            events //= args.runs * len(pktbeat)  # every run appends its own file
        for name in full:
            wall, cpu = best[name]
            rows.append((name, wall, cpu, start_up[name][0], events if name in pktbeat else 0))
        if tshark and not args.skip_ek:
            wall, cpu = run_once([tshark, "-r", str(pcap), "-T", "ek"])
            rows.append(("tshark -r -T ek", wall, cpu, start_up["tshark -r"][0], 0))
    reference = best.get("tshark -r", (float("nan"), 0.0))[0]
    print(f"{'tool':<24} {'seconds':>8} {'packets/s':>10} {'per CPU-s':>10} {'start-up':>9} {'after start':>12} "
          f"{'txns/s':>8} {'x tshark':>9}")
    for name, seconds, cpu, start, txns in rows:
        after = packets / (seconds - start) if seconds > start else float("nan")
        txn_rate = f"{txns / seconds:8.0f}" if txns else f"{'':>8}"
        print(f"{name:<24} {seconds:8.2f} {packets / seconds:10.0f} {packets / cpu:10.0f} {start:9.2f} "
              f"{after:12.0f} {txn_rate} {reference / seconds:9.2f}")
    if args.output == "file":
        print(f"pktbeat published {events} events per run")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
