"""Replay on several workers: the same events as one process, each connection in its order, one report."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest
import yaml

from agent.capture.flowhash import FrameSharder, ShardedReader, flow_hash
from agent.capture.pcapfile import CaptureReader
from agent.config.load import load
from agent.config.typed import ConfigError
from agent.publisher.types import EncodedEvent, Outcome
from agent.runtime import wiring
from agent.runtime.replay import ReplayOptions, ReplayRunner
from agent.runtime.replay_shards import ShardedReplay, replay_runner, replay_workers
from bench.gen_traffic_pcap import generate
from tests.helpers.replay import CORPUS, PKTBEAT, ROOT, STANDARD_PROTOCOLS

# A mix of link types, VLANs, IPv6, UDP/ICMP, pipelined and datagram protocols, unanswered requests.
MIXED = ["http_over_vlan.pcap", "icmp6_ping_over_vlan.pcap", "ipv6_thrift.pcap", "dns_udp_edns_ds.pcap",
         "mysql_long_result.pcap", "pgsql_extended_query.pcap", "redis_session.pcap", "http_unmatched.pcap",
         "memcache_bin_udp_multi_store.pcap", "802.1q-q-in-q-icmp.pcap", "tls-sample1.pcap", "mongodb_find.pcap",
         "flowhash_ipv6.pcap", "icmp_2_pings.pcap", "wsgi_loopback.pcap"]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep-alive HTTP and DNS from many clients: enough flows to land on every worker."""
    path = tmp_path_factory.mktemp("traffic") / "traffic.pcap"
    generate(path, 6000, seed=3, body_mu=6.0)
    return path


def run(directory: Path, files: list[Path], workers: int, *extra: str, flows: bool = True,
        timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = directory / f"out-{workers}"
    config: dict[str, Any] = {
        "packetbeat.protocols": [p for p in STANDARD_PROTOCOLS if p["type"] not in ("http", "redis")]
        + [{"type": "thrift", "ports": [9090], "transport_type": "framed"}, {"type": "http", "ports": [80, 8000, 8080]},
           {"type": "redis", "ports": [6379, 6380]}],
        "output.file": {"path": str(out), "filename": "packetbeat"},
        "path.data": str(directory / "data"),  # one agent id for every run
    }
    if flows:
        config["packetbeat.flows"] = {"period": "-1s"}
    path = directory / f"w{workers}.yml"
    path.write_text(yaml.safe_dump(config))
    args = [PKTBEAT, "run", "-e", "-t", "-c", str(path), "-w", str(workers), *extra]
    for file in files:
        args += ["-I", str(file)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return proc, out


def lines(out: Path) -> list[bytes]:
    found: list[bytes] = []
    for path in sorted(out.iterdir(), key=lambda p: (len(p.name), p.name)):
        found += path.read_bytes().splitlines()
    return found


class Recorder:
    """An output that keeps every event it is given, ids included, in order."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []

    def publish(self, batch: list[EncodedEvent]) -> list[Outcome]:
        self.events.extend(batch)
        return [Outcome.ACKED] * len(batch)

    def close(self) -> None:
        pass


def replay_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: list[Path], workers: int
                      ) -> tuple[Any, list[EncodedEvent]]:
    """The replay the CLI runs, in this process (workers forked from it), into a Recorder."""
    recorder = Recorder()
    monkeypatch.setattr(wiring, "make_output", lambda config: recorder)
    config = load(None, extra={
        "packetbeat.protocols": [p for p in STANDARD_PROTOCOLS if p["type"] not in ("http", "redis")]
        + [{"type": "thrift", "ports": [9090], "transport_type": "framed"}, {"type": "http", "ports": [80, 8000, 8080]},
           {"type": "redis", "ports": [6379, 6380]}],
        "packetbeat.flows": {"period": "-1s"}, "packetbeat.interfaces.workers": workers,
        "path.data": str(tmp_path / "data"), "logging.level": "warning"})
    runner = replay_runner(config, ReplayOptions([str(f) for f in files], topspeed=True, progress=False))
    assert runner.run() == 0
    return runner, recorder.events


def per_connection(events: list[EncodedEvent]) -> dict[tuple[Any, ...], list[str]]:
    """Each connection's (and flow's) events in the order they were published, without the run's ephemeral id."""
    order: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for encoded in events:
        event = json.loads(encoded.data)
        event["agent"].pop("ephemeral_id")
        source, destination = event.get("source", {}), event.get("destination", {})
        key = (event["type"], source.get("ip"), source.get("port"), destination.get("ip"), destination.get("port"))
        order[key].append(json.dumps(event, sort_keys=True))
    return order


def test_two_workers_give_the_same_events_and_ids_in_each_connections_order(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, traffic: Path) -> None:
    tunnels = sorted((ROOT / "tests" / "pcaps" / "tunnels").glob("*.pcap"))
    files = [traffic, *(CORPUS / name for name in MIXED), *tunnels]
    one, first = replay_in_process(monkeypatch, tmp_path, files, 1)
    two, second = replay_in_process(monkeypatch, tmp_path, files, 2)
    assert isinstance(one, ReplayRunner) and isinstance(two, ShardedReplay) and len(two.workers) == 2
    assert len(first) > 1000 and {"flow", "http", "dns", "mysql", "pgsql", "redis", "icmp", "thrift"} <= {
        e.type for e in first}
    # the ids every output is given (Elasticsearch's _id): the same multiset
    assert Counter(e.event_id for e in first) == Counter(e.event_id for e in second)
    assert per_connection(first) == per_connection(second)
    assert [e.event_id for e in first] != [e.event_id for e in second]  # (the workers did interleave)


def test_the_cli_with_two_workers_reports_once(tmp_path: Path, traffic: Path) -> None:
    files = [traffic, CORPUS / "http_unmatched.pcap", CORPUS / "dns_udp_edns_ds.pcap"]
    one, out1 = run(tmp_path, files, 1)
    two, out2 = run(tmp_path, files, 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "replaying with 2 workers" in two.stderr and "replaying with" not in one.stderr
    assert len(lines(out1)) == len(lines(out2)) > 1000
    # end-of-input reports are totals, said once
    pending = [line for line in two.stderr.splitlines() if "had no response by the end of the input" in line]
    assert len(pending) == 1 and pending[0].split("INFO")[-1] == next(
        line for line in one.stderr.splitlines() if "had no response" in line).split("INFO")[-1]


def test_the_shards_partition_the_file_and_keep_flows_together(traffic: Path) -> None:
    shards = 3
    kept: list[list[tuple[int, bytes, int]]] = []
    for index in range(shards):
        with ShardedReader(traffic, index, shards, lambda offset, frames: True) as reader:
            kept.append(list(reader))
    with CaptureReader(traffic) as reader:
        everything = list(reader)
    assert sorted(r for part in kept for r in part) == sorted(everything)
    assert all(len(part) > len(everything) // (2 * shards) for part in kept)
    owner: dict[tuple[Any, ...], int] = {}
    for index, part in enumerate(kept):
        for _ts, frame, _len in part:
            ip = dpkt.ethernet.Ethernet(frame).data
            l4 = ip.data
            ends = tuple(sorted([(ip.src, l4.sport), (ip.dst, l4.dport)]))
            key = (ip.p, ends) if ip.p == 6 else (ip.p, tuple(sorted([ip.src, ip.dst])))
            assert owner.setdefault(key, index) == index, key


@pytest.mark.parametrize("path", [CORPUS / "http_over_vlan.pcap", CORPUS / "ipv6_thrift.pcap",
                                  CORPUS / "802.1q-q-in-q-icmp.pcap", CORPUS / "wsgi_loopback.pcap",
                                  CORPUS / "dns_udp_edns_ds.pcap", CORPUS / "mysql_long_result.pcap",
                                  ROOT / "tests/pcaps/tunnels/vxlan.pcap", ROOT / "tests/pcaps/tunnels/gre.pcap"],
                         ids=lambda p: p.name)
def test_the_fast_path_agrees_with_the_decoded_packet(path: Path) -> None:
    """Plain IPv4/TCP frames are sharded from their raw bytes, the rest from the decoded packet (tunnels by
    their outer addresses): the same answer."""
    from agent.capture.decode import FrameDecoder
    from agent.capture.packet import F_FRAGMENT
    from agent.capture.tunnel import TunnelSettings
    from agent.metrics import Counters

    with CaptureReader(path) as reader:
        sharder = FrameSharder(reader.info.linktype, 7)
        decoder = FrameDecoder(reader.info.linktype, tunnels=TunnelSettings(enabled=False), counters=Counters("t"))
        for _ts, frame, _len in reader:
            pkt = decoder.decode(frame, 0)
            expected = 0 if pkt is None else flow_hash(pkt.src, pkt.dst, pkt.l4proto, pkt.sport, pkt.dport,
                                                        bool(pkt.flags & F_FRAGMENT)) % 7
            assert sharder.shard(frame) == expected


def test_flow_hash_is_symmetric_and_keys_udp_and_fragments_by_address() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([192, 168, 7, 9])
    v6a, v6b = bytes(range(16)), bytes(range(16, 32))
    assert flow_hash(a, b, 6, 40000, 80, False) == flow_hash(b, a, 6, 80, 40000, False)
    assert flow_hash(v6a, v6b, 6, 40000, 443, False) == flow_hash(v6b, v6a, 6, 443, 40000, False)
    assert flow_hash(a, b, 6, 40000, 80, False) != flow_hash(a, b, 6, 40001, 80, False)
    assert flow_hash(a, b, 17, 40000, 53, False) == flow_hash(b, a, 17, 1, 2, False)
    assert flow_hash(a, b, 6, 40000, 80, True) == flow_hash(a, b, 6, 0, 0, True) == flow_hash(a, b, 17, 0, 0, False)


def test_how_many_workers(tmp_path: Path, traffic: Path) -> None:
    def workers(setting: int, files: list[str], topspeed: bool = True) -> int:
        config = load(None, extra={"packetbeat.interfaces.workers": setting})
        return replay_workers(config, ReplayOptions(files, topspeed=topspeed))

    small = str(CORPUS / "http_post.pcap")
    big = tmp_path / "big.pcap"
    with open(big, "wb") as handle:
        handle.truncate(64 << 20)  # only its size is read
    cpus = len(os.sched_getaffinity(0))
    assert workers(0, [small]) == 1  # too small to gain from a fork
    assert workers(0, [str(big)]) == min(cpus, 8)
    assert workers(2, [small]) == 2
    assert workers(16, [small]) == 16
    with pytest.raises(ConfigError, match="between 0 and 16"):  # more is refused with the config's ranges
        workers(17, [small])
    assert workers(2, [small], topspeed=False) == 1  # real time: one process keeps up
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert workers(2, [str(fifo)]) == 1  # every worker must be able to read the file


def test_a_broken_file_is_reported_once(tmp_path: Path, traffic: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(traffic.read_bytes()[: traffic.stat().st_size // 2 + 7])
    missing = tmp_path / "missing.pcap"
    proc, out = run(tmp_path, [cut, missing], 2, flows=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 2, errors
    assert any("truncated record" in e and "the packets before it were processed" in e for e in errors)
    assert any("missing.pcap" in e for e in errors)
    assert len(lines(out)) > 100  # the part before the break was replayed


def _workers_of(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def _start_long_replay(tmp_path: Path, traffic: Path) -> tuple[subprocess.Popen[str], list[int]]:
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"packetbeat.protocols": [{"type": "http", "ports": [80]}],
                                      "output.file": {"path": str(tmp_path / "out"), "filename": "pb"},
                                      "path.data": str(tmp_path / "data")}))
    proc = subprocess.Popen([PKTBEAT, "run", "-e", "-t", "-c", str(config), "-w", "2", "-l", "10000", "-I",
                             str(traffic)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.1)
        workers = _workers_of(proc.pid)
    assert len(workers) == 2, "the workers did not start"
    return proc, workers


def test_first_sigint_stops_every_worker_and_publishes_what_they_decoded(tmp_path: Path, traffic: Path) -> None:
    proc, _ = _start_long_replay(tmp_path, traffic)
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.is_dir() and any(p.stat().st_size for p in out.iterdir())):
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "replaying with 2 workers" in stderr
    written = lines(out)
    assert written and all(line.endswith(b"}") for line in written)
    assert subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout == b""  # no worker left


def test_a_worker_that_dies_is_reported_and_the_replay_ends_with_an_input_error(tmp_path: Path,
                                                                                 traffic: Path) -> None:
    proc, workers = _start_long_replay(tmp_path, traffic)
    try:
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr[-2000:]
    assert "ended without finishing" in stderr


def test_workers_die_with_their_parent(tmp_path: Path, traffic: Path) -> None:
    proc, workers = _start_long_replay(tmp_path, traffic)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_progress_bar_shows_each_file_as_far_as_its_slowest_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.runtime import replay_shards

    shown: list[tuple[str, Any]] = []

    class Recorder:
        def __init__(self, label: str, total: int, enabled: bool) -> None:
            shown.append(("new", label))

        def update(self, done: int, packets: int | None = None, events: int | None = None) -> None:
            shown.append(("at", done, packets))

        def done(self, packets: int | None = None, events: int | None = None) -> None:
            shown.append(("done", None))

    monkeypatch.setattr(replay_shards, "Progress", Recorder)
    shared = replay_shards.SharedState(2)
    fake = type("Fake", (), {"shared": shared, "workers": [0, 1], "files": ["a.pcap", "b.pcap"], "published": 0,
                             "options": ReplayOptions(["a.pcap", "b.pcap"], loops=2)})()
    view = replay_shards._ProgressView(fake, enabled=True)  # type: ignore[arg-type]
    shared.report(0, 1, 5000, 50)
    shared.report(1, 1, 3000, 30)
    view.update()
    shared.report(0, 2, 100, 1)  # worker 0 is on the next file; worker 1 still on the first
    shared.report(1, 1, 9000, 90)
    view.update()
    shared.report(1, 3, 10, 1)  # both past b.pcap: the second loop's a.pcap
    shared.report(0, 3, 20, 2)
    view.update()
    view.close()
    assert shown == [("new", "a.pcap"), ("at", 3000, 30), ("at", 9000, 90), ("done", None), ("new", "a.pcap"),
                     ("at", 10, 1), ("done", None)]


def test_the_progress_bar_draws_on_a_terminal(tmp_path: Path, traffic: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"packetbeat.protocols": [{"type": "http", "ports": [80]}],
                                      "output.discard": {}, "path.data": str(tmp_path / "data"),
                                      "path.logs": str(tmp_path / "logs")}))  # not the checkout's ./logs
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([PKTBEAT, "run", "-t", "-c", str(config), "-w", "2", "-l", "2", "-I", str(traffic)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
                            env={**os.environ, "TERM": "xterm"})
    os.close(terminal)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    assert b"traffic.pcap" in shown, shown[-2000:]
