"""Instructions per transaction, per protocol and per stage, counted by callgrind on fixed captures.

    .venv/bin/python bench/txn_cost.py [--protocols http,dns,redis,pgsql,mysql] [--small 200] [--large 1200]
                                       [--stages pair,fields,encode,replay] [--json FILE] [--compare FILE]

Callgrind's instruction counts are stable to a fraction of a percent on this
machine, where wall times vary by +-20%.  For each protocol,
bench/gen_proto_pcap.py writes two deterministic captures, with `--small` and
`--large` transactions; each stage runs under callgrind on both, and the
difference of the two counts divided by the difference in transactions is the
cost of one transaction, with start-up and imports cancelled out.  Stages
are cumulative:

  pair     link/IP/TCP decoding, connection table, reassembly, the protocol's
           framing and request/response pairing (transactions are counted)
  fields   + the published event built from each transaction (field building)
  encode   + the event encoded to JSON with its id (event encoding)
  replay   the whole `pktbeat run -t -I` process with the file output

so "fields - pair" is the cost of field building and "encode - fields" that
of encoding.  The first three run in one process (this script, `--child`);
`replay` runs the CLI itself.  The native (mypyc) modules are used when
set-up built them for the current sources (the line "native modules: N of M"
says); PKTBEAT_PURE_PYTHON=1 measures plain Python.  `--compare` prints each
number beside one saved earlier with `--json` and their ratio:
bench/txn_cost_before.json holds the counts of main at 9bcbec8, before issue
14's work (measured with this script, native modules, on this machine), and
bench/txn_cost_after.json those after the speed work (main at stop 19).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_proto_pcap import PORTS, generate  # noqa: E402

PROTOCOLS = ("http", "dns", "redis", "pgsql", "mysql")
STAGES = ("pair", "fields", "encode", "replay")
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PKTBEAT = ROOT / ".venv" / "bin" / "pktbeat"
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def config_tree(protocol: str, out_dir: Path) -> dict[str, Any]:
    return {"packetbeat.protocols": [{"type": protocol, "ports": [PORTS[protocol]]}],
            "output": {"file": {"path": str(out_dir), "filename": "events", "rotate_every_kb": 1_000_000}},
            "logging.level": "warning"}


def child(stage: str, protocol: str, pcap: str) -> None:
    """One stage in this process: packets of `pcap` through the layers the stage names."""
    from agent.capture.decode import FrameDecoder
    from agent.capture.pcapfile import CaptureReader
    from agent.config.load import load
    from agent.runtime import wiring

    with tempfile.TemporaryDirectory() as tmp:
        config = load(None, extra=config_tree(protocol, Path(tmp)))
    builder = wiring.event_builder(config, wiring.AgentIdentity.create("bench", "bench-agent-id"))
    count = 0

    def emit(txn: Any) -> None:
        nonlocal count
        count += 1
        if stage == "fields":
            builder.transaction_event(txn)
        elif stage == "encode":
            builder.encode_transaction(txn)  # what the agent runs: the event, its bytes and its id

    dispatcher = wiring.dispatcher(config, emit)
    wiring.tune_gc()
    last = 0
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        tcp_fields, tcp, decode, handle = decoder.tcp_fields, dispatcher.tcp, decoder.decode, dispatcher.handle
        for ts_ns, frame, wire_len in reader:
            fields = tcp_fields(frame)
            if fields is not None:
                tcp(ts_ns, *fields)
            else:
                pkt = decode(frame, ts_ns, wire_len)
                if pkt is not None:
                    handle(pkt)
            last = ts_ns
    dispatcher.flush_reordering(last)
    print(f"transactions {count}")


def callgrind(args: list[str], cwd: Path) -> int:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every run
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args],
                          capture_output=True, text=True, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    found = _IREFS.search(proc.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in callgrind's output:\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def measure(protocol: str, stage: str, pcap: Path, work: Path) -> int:
    if stage == "replay":
        config = work / f"{protocol}.yml"
        config.write_text(json.dumps(config_tree(protocol, work / "out")))
        return callgrind([str(PKTBEAT), "run", "-t", "-c", str(config), "-I", str(pcap)], work)
    return callgrind([str(VENV_PYTHON), str(Path(__file__).resolve()), "--child", stage, protocol, str(pcap)], work)


def warm_up(protocol: str, pcap: Path, work: Path) -> None:
    """Both processes once, without callgrind: a first run writes the bytecode caches of the modules it
    imports, and that work would count in whichever measurement came first."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    config = work / f"{protocol}.yml"
    config.write_text(json.dumps(config_tree(protocol, work / "out")))
    for args in ([str(PKTBEAT), "run", "-t", "-c", str(config), "-I", str(pcap)],
                 [str(VENV_PYTHON), str(Path(__file__).resolve()), "--child", "encode", protocol, str(pcap)]):
        subprocess.run(args, capture_output=True, cwd=work, env=env, check=True)


def native_modules() -> str:
    code = "import importlib; from agent import accel; [importlib.import_module(m) for m in accel.MODULES]; " \
           "print(len(accel.active()), 'of', len(accel.MODULES))"
    out = subprocess.run([str(VENV_PYTHON), "-c", code], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--compare", type=Path, help="results saved with --json to compare with")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "PROTOCOL", "PCAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    protocols = [p for p in args.protocols.split(",") if p]
    stages = [s for s in args.stages.split(",") if s]
    print(f"native modules: {native_modules()}; {args.small} and {args.large} transactions per capture")
    results: dict[str, dict[str, float]] = {}
    header = f"{'protocol':<9}" + "".join(f"{s:>10}" for s in stages)
    print("instructions per transaction")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for protocol in protocols:
            small, large = work / f"{protocol}-small.pcap", work / f"{protocol}-large.pcap"
            generate(protocol, small, args.small)
            generate(protocol, large, args.large)
            warm_up(protocol, small, work)
            row: dict[str, float] = {}
            for stage in stages:
                low = measure(protocol, stage, small, work)
                high = measure(protocol, stage, large, work)
                row[stage] = (high - low) / (args.large - args.small)
            results[protocol] = row
            print(f"{protocol:<9}" + "".join(f"{row[s]:>10,.0f}" for s in stages), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.compare:
        compare(json.loads(args.compare.read_text()), results, stages)


def compare(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], stages: list[str]) -> None:
    print("\ninstructions per transaction: before / after (after as a share of before)")
    print(f"{'protocol':<9}" + "".join(f"{s:>26}" for s in stages))
    for protocol, row in after.items():
        old = before.get(protocol, {})
        cells = []
        for stage in stages:
            if stage in old and stage in row:
                cells.append(f"{old[stage]:>9,.0f} / {row[stage]:>8,.0f} ({row[stage] / old[stage]:4.0%})")
            else:
                cells.append(f"{'':>26}")
        print(f"{protocol:<9}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
