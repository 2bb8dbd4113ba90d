"""Packetbeat's file output (the embedded default) and console output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.outputs.console import ConsoleOutput, ConsoleOutputConfig
from agent.outputs.file import FileOutput, FileOutputConfig
from agent.publisher.types import EncodedEvent, Outcome
from tests.helpers.replay import PKTBEAT, corpus, write_config


def _events(n: int, size: int = 100) -> list[EncodedEvent]:
    return [EncodedEvent(json.dumps({"type": "t", "n": i, "pad": "x" * size}).encode(), f"id{i}")
            for i in range(n)]


def _lines(directory: Path) -> list[dict[str, object]]:
    files = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def test_ndjson_with_metadata_and_default_name(tmp_path: Path) -> None:
    out = FileOutput(FileOutputConfig(path=str(tmp_path)))
    assert out.publish(_events(3)) == [Outcome.ACKED] * 3
    out.close()
    [path] = list(tmp_path.iterdir())
    assert path.name.startswith("packetbeat-") and path.name.endswith(".ndjson")
    events = _lines(tmp_path)
    assert [e["n"] for e in events] == [0, 1, 2]
    assert events[0]["@metadata"]["beat"] == "packetbeat" and events[0]["@metadata"]["type"] == "_doc"


def test_rotation_keeps_number_of_files_and_no_event_is_split(tmp_path: Path) -> None:
    out = FileOutput(FileOutputConfig(path=str(tmp_path), filename="pb", rotate_every_kb=2, number_of_files=3))
    for batch in range(10):
        out.publish(_events(5, size=200))
        assert len(list(tmp_path.iterdir())) <= 3, f"batch {batch}"
    out.close()
    files = list(tmp_path.iterdir())
    assert len(files) == 3
    for path in files:
        assert path.stat().st_size <= 2048 + 400  # one event may end a file past the limit, never split
        for line in path.read_text().splitlines():
            json.loads(line)


def test_permissions_and_rotate_on_startup(tmp_path: Path) -> None:
    first = FileOutput(FileOutputConfig(path=str(tmp_path), permissions="0640"))
    first.publish(_events(1))
    first.close()
    second = FileOutput(FileOutputConfig(path=str(tmp_path), permissions="0640"))
    second.publish(_events(1))
    second.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2  # a new run starts a new file
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in files)


def test_permissions_are_what_was_asked_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the agent's own umask must not narrow a configured mode
    try:
        output = FileOutput(FileOutputConfig(path=str(tmp_path / "out"), permissions="0640"))
        output.publish(_events(1))
        output.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()] == [0o640]


def test_console_output_pretty(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleOutput(ConsoleOutputConfig(codec={"json": {"pretty": True}})).publish(_events(1, size=1))
    text = capsys.readouterr().out
    assert text.startswith("{\n") and json.loads(text)["n"] == 0


def test_replay_works_without_root_bpf_or_compiler() -> None:
    """-I needs no privileges: run it as nobody."""
    with tempfile.TemporaryDirectory(prefix="pktbeat-nobody-") as tmp:
        _replay_as_nobody(Path(tmp))


def _replay_as_nobody(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    config = write_config(tmp_path, [{"type": "icmp", "enabled": True}],
                          {"path.data": str(tmp_path / "data"), "path.logs": str(tmp_path / "logs")})
    os.chmod(config, 0o644)
    pcap = tmp_path / "ping.pcap"
    pcap.write_bytes(corpus("icmp4_ping.pcap").read_bytes())
    os.chmod(pcap, 0o644)
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                           PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for p in (tmp_path / "out").iterdir() for line in p.read_text().splitlines()]
    assert [e["icmp"]["request"]["type"] for e in events] == [8]
    assert "bcc" not in proc.stderr.lower()
