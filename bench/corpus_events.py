"""Snapshot the events of every corpus pcap, and compare two snapshots: the check behind refactors.

    .venv/bin/python bench/corpus_events.py record DIR [--jobs 2] [--only SUBSTRING]
    .venv/bin/python bench/corpus_events.py compare BEFORE_DIR AFTER_DIR
    .venv/bin/python bench/corpus_events.py check BEFORE_DIR     (record into a temporary dir, then compare)

A refactor of the parsers must not change a single published byte.  `record`
replays each of the 118 pcaps of Packetbeat's corpus through the CLI
(`pktbeat run -t -e -I pcap -c cfg`, file output) with every protocol
enabled, in three variants:

  packetbeat   Packetbeat's system-test config: every protocol on its test port, default options
  verbose      every protocol on every port the corpus uses, with every optional field turned on
               (send_request/send_response, all headers and bodies, authorities, raw certificates...)
  resegmented  the verbose config in-process, with every TCP payload cut into 16 segments, so each
               parser's buffering across segments is exercised on real traffic

and writes one normalised NDJSON file per pcap and variant.  Normalised means
only that the fields that differ from run to run or with the version
(`agent.id`, `agent.ephemeral_id`, `agent.version`, `@metadata.version`,
`ecs.version`) are masked; every other byte is kept, key order included.
`compare` lists every pcap whose events differ and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus_configs import PACKETBEAT_PROTOCOLS, VERBOSE_PROTOCOLS  # noqa: E402
from tests.helpers.replay import CORPUS  # noqa: E402

PKTBEAT = ROOT / ".venv" / "bin" / "pktbeat"
VARIANTS = ("packetbeat", "verbose", "resegmented")
MASKED = {("agent", "id"), ("agent", "ephemeral_id"), ("agent", "version"), ("@metadata", "version"),
          ("ecs", "version")}
RESEGMENT_CUTS = [i / 16 for i in range(1, 16)]

SETTINGS: dict[str, Any] = {
    "packetbeat.interfaces.device": "any",
    "packetbeat.interfaces.internal_networks": ["private"],
    "tags": [],
}


def pcaps(only: str | None) -> list[Path]:
    return [p for p in sorted(CORPUS.glob("*.pcap")) if only is None or only in p.name]


def normalise(event: dict[str, Any]) -> str:
    for outer, inner in MASKED:
        section = event.get(outer)
        if isinstance(section, dict) and inner in section:
            section[inner] = "*"
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def replay_cli(pcap: Path, protocols: list[dict[str, Any]]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="pktbeat-snap-") as tmp:
        directory = Path(tmp)
        config = {**SETTINGS, "packetbeat.protocols": protocols,
                  "output.file": {"path": str(directory / "out"), "filename": "packetbeat"}}
        (directory / "packetbeat.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        proc = subprocess.run([str(PKTBEAT), "run", "-t", "-e", "-I", str(pcap), "-c", "packetbeat.yml"],
                              cwd=directory, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            return [f"EXIT {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}"]
        out = directory / "out"
        lines: list[str] = []
        for path in sorted(out.iterdir(), key=lambda p: (len(p.name), p.name)) if out.is_dir() else []:
            lines += [normalise(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        return lines


def replay_resegmented(pcap: Path) -> list[str]:
    from tests.helpers.inprocess import events_for, read_packets, split_tcp

    packets = split_tcp(read_packets(pcap), RESEGMENT_CUTS)
    return [normalise(event) for event in events_for(packets, VERBOSE_PROTOCOLS, {"tags": []})]


def record_one(pcap: Path, variant: str) -> list[str]:
    if variant == "packetbeat":
        return replay_cli(pcap, PACKETBEAT_PROTOCOLS)
    if variant == "verbose":
        return replay_cli(pcap, VERBOSE_PROTOCOLS)
    return replay_resegmented(pcap)


def record(directory: Path, jobs: int, only: str | None) -> int:
    for variant in VARIANTS:
        (directory / variant).mkdir(parents=True, exist_ok=True)
    work = [(pcap, variant) for pcap in pcaps(only) for variant in VARIANTS]
    total = 0
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(record_one, pcap, variant): (pcap, variant) for pcap, variant in work}
        for future in concurrent.futures.as_completed(futures):
            pcap, variant = futures[future]
            lines = future.result()
            total += len(lines)
            (directory / variant / f"{pcap.name}.ndjson").write_text("".join(line + "\n" for line in lines))
    print(f"recorded {total} events of {len(work) // len(VARIANTS)} pcaps x {len(VARIANTS)} variants in {directory}")
    return 0


def compare(before: Path, after: Path) -> int:
    differ = 0
    files = 0
    events = 0
    for variant in VARIANTS:
        names = sorted({p.name for p in (before / variant).glob("*.ndjson")}
                       | {p.name for p in (after / variant).glob("*.ndjson")})
        for name in names:
            a, b = before / variant / name, after / variant / name
            old = a.read_text().splitlines() if a.exists() else ["(missing)"]
            new = b.read_text().splitlines() if b.exists() else ["(missing)"]
            files += 1
            events += len(old)
            if old != new:
                differ += 1
                print(f"DIFFERENT {variant}/{name}: {len(old)} -> {len(new)} events")
                for line in list(difflib.unified_diff(old, new, lineterm="", n=0))[:8]:
                    print("   ", line[:400])
    print(f"{files - differ}/{files} files identical ({events} events before)")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("directory", type=Path)
    rec.add_argument("--jobs", type=int, default=2)
    rec.add_argument("--only")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    chk = sub.add_parser("check")
    chk.add_argument("before", type=Path)
    chk.add_argument("--jobs", type=int, default=2)
    chk.add_argument("--only")
    args = parser.parse_args()
    if args.command == "record":
        return record(args.directory, args.jobs, args.only)
    if args.command == "compare":
        return compare(args.before, args.after)
    after = Path(tempfile.mkdtemp(prefix="pktbeat-events-after-"))
    try:
        record(after, args.jobs, args.only)
        if args.only:  # compare only what was recorded
            return compare(_subset(args.before, after), after)
        return compare(args.before, after)
    finally:
        shutil.rmtree(after, ignore_errors=True)


def _subset(before: Path, after: Path) -> Path:
    subset = Path(tempfile.mkdtemp(prefix="pktbeat-events-before-"))
    for variant in VARIANTS:
        (subset / variant).mkdir()
        for path in (after / variant).glob("*.ndjson"):
            if (before / variant / path.name).exists():
                shutil.copy(before / variant / path.name, subset / variant / path.name)
    return subset


if __name__ == "__main__":
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.exit(main())
