"""Running pktbeat on a pcap through its CLI, and reading the events it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    """`../shared` beside the checkout (or $PKTBEAT_SHARED): Packetbeat's corpus and the conformance runner."""
    candidates = [Path(os.environ["PKTBEAT_SHARED"])] if os.environ.get("PKTBEAT_SHARED") else []
    candidates += [ROOT.parent / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "corpus" / "beats").is_dir():
            return candidate
    return candidates[0]


SHARED = _shared_dir()
CORPUS = SHARED / "corpus" / "beats"
PKTBEAT = str(ROOT / ".venv" / "bin" / "pktbeat")

# The protocols on their standard ports, as Packetbeat's system tests configure them.
STANDARD_PROTOCOLS: list[dict[str, Any]] = [
    {"type": "icmp", "enabled": True},
    {"type": "dns", "ports": [53]},
    {"type": "http", "ports": [80]},
    {"type": "memcache", "ports": [11211]},
    {"type": "mysql", "ports": [3306]},
    {"type": "pgsql", "ports": [5432]},
    {"type": "redis", "ports": [6379]},
    {"type": "tls", "ports": [443]},
    {"type": "mongodb", "ports": [27017]},
]


def corpus(name: str) -> Path:
    return CORPUS / name


def write_config(directory: Path, protocols: list[dict[str, Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> Path:
    config: dict[str, Any] = {
        "packetbeat.interfaces.device": "any",
        "packetbeat.interfaces.internal_networks": ["private"],
        "packetbeat.protocols": protocols if protocols is not None else STANDARD_PROTOCOLS,
        "output.file": {"path": str(directory / "out"), "filename": "packetbeat"},
    }
    config.update(settings or {})
    path = directory / "packetbeat.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_events(directory: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    out = directory / "out"
    if not out.is_dir():
        return events
    for path in sorted(out.iterdir(), key=lambda p: (len(p.name), p.name)):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def replay(pcap: str | Path, protocols: list[dict[str, Any]] | None = None,
           settings: dict[str, Any] | None = None, *, topspeed: bool = True, extra_args: list[str] | None = None,
           env: dict[str, str] | None = None, timeout: float = 120) -> tuple[list[dict[str, Any]], str]:
    """`pktbeat run -e [-t] -I pcap -c cfg`; returns (events, log).  Fails the test on a non-zero exit."""
    with tempfile.TemporaryDirectory(prefix="pktbeat-test-") as tmp:
        directory = Path(tmp)
        config = write_config(directory, protocols, settings)
        args = [PKTBEAT, "run", "-e", "-I", str(pcap), "-c", str(config), *(extra_args or [])]
        if topspeed:
            args.insert(3, "-t")
        proc = subprocess.run(args, cwd=directory, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"pktbeat exited {proc.returncode}:\n{log[-3000:]}"
        return read_events(directory), log
