"""Issue 15, defects 1-3 on real full disks (tmpfs): nothing crashes, nothing is written twice, nothing hangs.

- the spool on a full disk holds a bounded buffer in memory, then refuses (counted), then resumes;
- the file output cuts a failed write back to the last whole line and resumes without duplicates;
- a replay with its disk queue on an 8 KiB tmpfs delivers everything;
- a replay whose output disk is full at start delivers everything once space returns;
- an event larger than queue.disk.max_size is a counted, logged drop, not a hang;
- the first SIGINT stops a replay blocked on a full output disk.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import metrics
from agent.outputs.file import FileOutput, FileOutputConfig
from agent.publisher.pipeline import Pipeline
from agent.publisher.spool import Refusal, Spool
from agent.publisher.types import EncodedEvent, Outcome
from tests.helpers.floods import PcapWriter, one_exchange
from tests.helpers.replay import PKTBEAT
from tests.helpers.tmpfs import fill, tmpfs, tmpfs_available
from tests.outputs.pcapgen import icmp_pairs

pytestmark = pytest.mark.skipif(tmpfs_available() is not None, reason=tmpfs_available() or "")


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    metrics.reset_for_tests()
    yield


def event(i: int, pad: int = 200) -> EncodedEvent:
    return EncodedEvent(b'{"type":"icmp","n":%d,"pad":"%s"}' % (i, b"x" * pad), f"id-{i}", None, "icmp")


def output_lines(directory: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(directory.glob("*.ndjson")):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends with a torn line"
        lines += data.splitlines()
    return lines


def numbers(lines: list[bytes]) -> list[int]:
    return sorted(json.loads(line)["n"] for line in lines)


def test_spool_on_a_full_disk_holds_then_refuses_then_resumes(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pktbeat.publisher.spool")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        spool = Spool(disk / "spool", 100_000_000, write_ahead=8, retry_interval=0.05)
        filler = fill(disk)
        accepted = [i for i in range(100) if spool.append(event(i))]
        assert accepted == list(range(16))  # twice write_ahead held in memory, then refused
        assert spool.refusal is Refusal.DISK and spool.blocked
        assert spool.counters["disk_full_drops"] == 84
        assert "No space left on device" in caplog.text and str(disk / "spool") in caplog.text
        events, pos = spool.read(5)  # what is held is still readable (from memory)
        assert [e.event_id for e in events] == [f"id-{i}" for i in range(5)]
        spool.ack(pos, 5)  # ack.json cannot be written either: logged, not raised
        filler.unlink()
        time.sleep(0.06)
        spool.flush()
        assert not spool.blocked
        assert spool.append(event(100))
        rest: list[str] = []
        while True:
            events, pos = spool.read(7)
            if not events:
                break
            rest += [e.event_id for e in events]
            spool.ack(pos, len(events))
        assert rest == [f"id-{i}" for i in (*range(5, 16), 100)]
        assert "can be written again" in caplog.text
        spool.close()


def test_file_output_resumes_after_enospc_without_duplicates_or_torn_lines(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64k") as disk:
        out = FileOutput(FileOutputConfig(path=str(disk)))
        assert out.publish([event(i) for i in range(10)]) == [Outcome.ACKED] * 10
        filler = fill(disk)
        os.truncate(filler, filler.stat().st_size - 1000)  # room for about four lines
        pending = [event(i) for i in range(10, 60)]
        outcomes = out.publish(pending)
        written = outcomes.count(Outcome.ACKED)
        assert 0 < written < 10 and outcomes == [Outcome.ACKED] * written + [Outcome.RETRY] * (50 - written)
        assert numbers(output_lines(disk)) == list(range(10 + written))  # whole lines only
        assert out.publish(pending[written:]) == [Outcome.RETRY] * (50 - written)  # still full: nothing written
        filler.unlink()
        assert out.publish(pending[written:]) == [Outcome.ACKED] * (50 - written)
        out.close()
        assert numbers(output_lines(disk)) == list(range(60))


def test_a_torn_line_left_by_a_crash_is_removed_at_start(tmp_path: Path) -> None:
    out = FileOutput(FileOutputConfig(path=str(tmp_path), rotate_on_startup=False))
    out.publish([event(i) for i in range(3)])
    out.close()
    [path] = list(tmp_path.glob("*.ndjson"))
    with open(path, "ab") as handle:
        handle.write(b'{"@metadata":{"beat":"packetbeat"},"type":"icmp","n":3,"pa')
    again = FileOutput(FileOutputConfig(path=str(tmp_path), rotate_on_startup=False))
    again.publish([event(3)])
    again.close()
    assert numbers(output_lines(tmp_path)) == [0, 1, 2, 3]


def _replay(tmp_path: Path, pcap: Path, settings: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "pktbeat.yml"
    config.write_text("packetbeat.protocols: [{type: icmp, enabled: true}, {type: http, ports: [80, 5000]}]\n"
                      f"path.data: {tmp_path / 'data'}\n" + settings)
    return subprocess.run([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config)], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


def test_replay_with_its_disk_queue_on_an_8k_tmpfs_delivers_everything(tmp_path: Path) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 3000)
    with tmpfs(tmp_path / "queue", "8k") as queue:
        proc = _replay(tmp_path, pcap, f"queue.disk: {{path: {queue}}}\noutput.file: {{path: {tmp_path / 'out'}}}\n")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert "No space left on device" in log  # the agent says what is full
    lines = output_lines(tmp_path / "out")
    assert len(lines) == 3000 and len(set(lines)) == 3000  # each ICMP pair once


def test_replay_whose_output_disk_is_full_delivers_everything_once_space_returns(tmp_path: Path) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 3000)
    with tmpfs(tmp_path / "out", "8m") as out:
        filler = fill(out)
        timer = threading.Timer(2.0, filler.unlink)
        timer.start()
        try:
            proc = _replay(tmp_path, pcap, f"output.file: {{path: {out}}}\n")
        finally:
            timer.cancel()
        lines = output_lines(out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert "cannot write to" in log and "No space left on device" in log and "again after" in log
    assert len(lines) == 3000 and len(set(lines)) == 3000  # no duplicate, no loss


def test_an_event_larger_than_the_disk_queue_is_a_counted_drop_not_a_hang(tmp_path: Path) -> None:
    # queue.disk.max_size is at least 10MB (Packetbeat's minimum): an 11 MB response body kept in its event.
    pcap = tmp_path / "big.pcap"
    body = b"x" * 11_000_000
    with PcapWriter(pcap) as w:
        one_exchange(w, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11000000\r\n\r\n" + body, 80)
    config = tmp_path / "pktbeat.yml"
    config.write_text("packetbeat.protocols: [{type: http, ports: [80], send_response: true, max_message_size: 16MB,\n"
                      "                        include_body_for: [text/plain]}]\n"
                      f"path.data: {tmp_path / 'data'}\nqueue.disk: {{path: {tmp_path / 'queue'}, max_size: 10MB}}\n"
                      f"output.file: {{path: {tmp_path / 'out'}}}\n")
    started = time.monotonic()
    proc = subprocess.run([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert time.monotonic() - started < 30
    assert proc.returncode == 3, log[-3000:]  # events were not delivered
    assert "Traceback" not in log
    assert "is larger than the disk queue (queue.disk.max_size: 10000000 bytes) and was dropped" in log
    assert "1 event(s) were not delivered: 1 larger than the disk queue" in log


def test_a_pipeline_drops_an_oversized_event_and_delivers_the_rest(tmp_path: Path) -> None:
    class Collect:
        name = "collect"
        batch_size = 10

        def __init__(self) -> None:
            self.got: list[str] = []

        def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
            self.got += [e.event_id for e in batch]
            return [Outcome.ACKED] * len(batch)

        def close(self) -> None:
            pass

    out = Collect()
    pipe = Pipeline(out, spool=Spool(tmp_path, 5000), durable=True, flush_timeout=0.01)
    for i in range(20):
        pipe.publish(event(i, pad=9000 if i in (3, 11) else 100))
    pipe.close(time.monotonic() + 30)
    assert out.got == [f"id-{i}" for i in range(20) if i not in (3, 11)]
    assert pipe.counters["too_large_drops"] == 2 and pipe.undelivered() == 2


def test_the_first_sigint_stops_a_replay_blocked_on_a_full_output_disk(tmp_path: Path) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 20_000)
    with tmpfs(tmp_path / "out", "1m") as out:
        fill(out)
        config = tmp_path / "pktbeat.yml"
        config.write_text("packetbeat.protocols: [{type: icmp, enabled: true}]\n"
                          f"output.file: {{path: {out}}}\npath.data: {tmp_path / 'data'}\n"
                          "packetbeat.shutdown_timeout: 1s\n")
        with AgentProcess([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config)], tmp_path) as agent:
            assert agent.wait_for("No space left on device", 60), agent.output()[-3000:]
            time.sleep(0.5)
            took = agent.interrupt()
    log = agent.output()
    assert took < 1 + 1.5, f"the first SIGINT took {took:.1f}s"
    assert agent.code == 3, log[-3000:]  # events were not delivered
    assert "Traceback" not in log
    assert "not acknowledged by the file output after the stop" in log


class AgentProcess:
    """pktbeat in the background, its output collected by a thread; SIGINT timed; always killed at the end."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
        self.chunks: list[bytes] = []
        self.code: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.chunks.append(line)

    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.05)
        return False

    def interrupt(self, timeout: float = 15) -> float:
        """SIGINT once; seconds until the process exited."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.code = self.proc.wait(timeout=timeout)
        took = time.monotonic() - sent
        self._reader.join(timeout=5)
        return took

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
