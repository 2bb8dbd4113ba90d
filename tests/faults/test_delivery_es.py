"""Issue 15, defects 3, 4 and 9 against the Elasticsearch stand-in: 413 per event, broken and huge answers,
and the first SIGINT with Elasticsearch down or slow.

Each test replays a capture through the real CLI and asserts what the stand-in
stored, the exit code, what the log says, and that it holds no traceback.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.es_standin.harness import StandinProcess
from tests.faults.test_delivery_disk_full import AgentProcess
from tests.helpers.replay import PKTBEAT, corpus
from tests.outputs.pcapgen import icmp_pairs


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinProcess]:
    proc = StandinProcess("8.15.3")
    yield proc
    proc.stop()


@pytest.fixture
def es(standin: StandinProcess) -> StandinProcess:
    standin.control("/reset", {})
    return standin


def config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "pktbeat.yml"
    path.write_text("packetbeat.protocols: [{type: icmp, enabled: true}, {type: http, ports: [80, 5000]}]\n"
                    f"output.elasticsearch: {{hosts: ['{url}'], backoff.init: 0.1, backoff.max: 0.3}}\n"
                    f"path.data: {tmp_path / 'data'}\n" + extra)
    return path


def replay(tmp_path: Path, url: str, pcap: Path, extra: str = "", timeout: float = 90) -> tuple[int, str]:
    proc = subprocess.run([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config(tmp_path, url, extra))],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return proc.returncode, proc.stdout + proc.stderr


def test_413_for_one_event_drops_that_event_only_and_says_so(es: StandinProcess, tmp_path: Path) -> None:
    es.limit_content_length(1500)  # http_minitwit: one event fits in a request of 1500 bytes, five do not
    code, log = replay(tmp_path, es.url, corpus("http_minitwit.pcap"))
    assert es.stats()["documents"] == 1
    assert code == 3, log[-3000:]  # events were not delivered
    assert "Traceback" not in log
    refusals = re.findall(r"event \S+ \(http\) is too large for Elasticsearch: its bulk request of (\d+) bytes was "
                          r"refused with 413 even alone \(over the server's http.max_content_length(?:; the largest "
                          r"request it accepted was (\d+) bytes)?\)", log)
    assert len(refusals) == 5, log[-3000:]
    assert all(int(size) > 1500 >= int(largest or 0) for size, largest in refusals)
    assert "5 event(s) were not delivered: 5 refused by the output" in log


@pytest.mark.parametrize(("kind", "said"), [
    ("empty", "the server answered 200 with an empty body"),
    ("garbage", "the server answered 200 with a 71-byte text/html body: '<html><body><h1>502 Bad Gateway"),
    ("garbage_json", "-byte application/vnd.elasticsearch+json;compatible-with=8 body: "
                     "'{\"took\": 3, \"errors\": false"),
])
def test_a_broken_200_is_described_and_retried(es: StandinProcess, tmp_path: Path, kind: str, said: str) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 300)
    es.faults((kind, 60.0))
    with AgentProcess([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config(tmp_path, es.url))],
                      tmp_path) as agent:
        described = agent.wait_for(said, 30)
        es.faults(("ok", 0.1))  # the server is fixed: the retry goes through
        code = agent.proc.wait(timeout=30)
    log = agent.output()
    assert described, log[-3000:]
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "NoneType" not in log and "string indices" not in log
    assert es.stats()["documents"] == 300  # the retry after the broken answer stored every event once


def test_a_huge_answer_is_not_read_whole(es: StandinProcess, tmp_path: Path) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 300)
    es.faults(("huge", 3.0), size=52_000_000)
    with AgentProcess([PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config(tmp_path, es.url))],
                      tmp_path) as agent:
        peak_kb = 0
        while agent.proc.poll() is None:
            peak_kb = max(peak_kb, _peak_rss_kb(agent.proc.pid))
            time.sleep(0.05)
        agent.proc.wait()
    log = agent.output()
    assert agent.proc.returncode == 0, log[-3000:]
    assert "not read further" in log and "Traceback" not in log
    assert peak_kb < 250 * 1024, f"peak RSS {peak_kb // 1024} MB"  # reading it whole took ~900 MB
    assert es.stats()["documents"] == 300


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@pytest.mark.parametrize("fault", ["refuse", "slow"])
def test_the_first_sigint_ends_a_replay_waiting_for_elasticsearch(es: StandinProcess, tmp_path: Path,
                                                                  fault: str) -> None:
    pcap = icmp_pairs(tmp_path / "icmp.pcap", 50)
    es.faults((fault, 120.0), delay=60.0)
    args = [PKTBEAT, "run", "-e", "-t", "-I", str(pcap), "-c", str(config(tmp_path, es.url))]
    with AgentProcess(args, tmp_path) as agent:
        waiting = "not reachable" if fault == "refuse" else "Process watcher"
        assert agent.wait_for(waiting, 30), agent.output()[-3000:]
        time.sleep(1.5)  # the replay has ended: only the output is waited for (shutdown_timeout 0: forever)
        took = agent.interrupt()
    es.faults(("ok", 0.1))
    log = agent.output()
    assert took < 2.0, f"the first SIGINT took {took:.1f}s"
    assert agent.code == 3, log[-3000:]
    assert "50 events not acknowledged by the elasticsearch output after the stop" in log
    assert "Traceback" not in log
