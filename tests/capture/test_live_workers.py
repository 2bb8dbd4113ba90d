"""Several workers: the kernel steers both directions of a flow to one worker (with the hash file replay
shards by), and the work is spread."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from agent.capture.flowhash import flow_hash
from agent.capture.packet import F_FRAGMENT
from tests.helpers.live import kernel_probe, live_agent, live_available
from tests.helpers.netns import veth_pair

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

HTTP_PORT = 8080


def test_flow_hash_is_the_same_both_ways() -> None:
    with veth_pair() as pair:
        pair.b.popen(["socat", f"TCP-LISTEN:{HTTP_PORT},bind={pair.b_ip},reuseaddr,fork", "EXEC:cat"])
        pair.b.popen(["socat", f"UDP-RECVFROM:5353,bind={pair.b_ip},reuseaddr,fork", "EXEC:cat"])
        pair.b.wait_port(HTTP_PORT, host=pair.b_ip)
        with kernel_probe(pair.a, [pair.a_if], ports=[f"tcp:{HTTP_PORT}", "udp:5353"]) as probe:
            for i in range(8):
                pair.a.run(["socat", "-", f"TCP:{pair.b_ip}:{HTTP_PORT}"], input=f"line {i}\n")
                pair.a.run(["socat", "-t", "0.3", "-", f"UDP:{pair.b_ip}:5353"], input=f"dgram {i}\n")
            time.sleep(0.2)
            data = probe.finish()
    hashes: dict[tuple, set[int]] = defaultdict(set)
    directions: dict[tuple, set[int]] = defaultdict(set)
    for r in data["records"]:
        ends = tuple(sorted([(r["src"], r["sport"]), (r["dst"], r["dport"])]))
        key = (r["l4proto"], ends) if r["l4proto"] == 6 else (r["l4proto"], tuple(sorted([r["src"], r["dst"]])))
        hashes[key].add(r["flow_hash"])
        directions[key].add(r["direction"])
        # file replay shards with the Python twin of the kernel's hash: it must give the same value
        assert r["flow_hash"] == flow_hash(bytes.fromhex(r["src"]), bytes.fromhex(r["dst"]), r["l4proto"],
                                           r["sport"], r["dport"], bool(r["flags"] & F_FRAGMENT)), r
    tcp = [k for k in hashes if k[0] == 6]
    udp = [k for k in hashes if k[0] == 17]
    assert len(tcp) == 8 and len(udp) == 1
    for key, values in hashes.items():
        assert len(values) == 1, f"{key}: {values}"
        assert directions[key] == {0, 1}
    # different connections spread over hash values
    assert len({next(iter(hashes[k])) for k in tcp}) == 8


@pytest.mark.server
def test_two_workers_decode_every_transaction(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.html").write_text("x" * 3000)
    with veth_pair() as pair:
        pair.b.popen(["python3", "-m", "http.server", "-b", pair.b_ip, "-d", str(root), str(HTTP_PORT)])
        pair.b.wait_port(HTTP_PORT, host=pair.b_ip)
        with live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [HTTP_PORT]}],
                        {"packetbeat.interfaces.workers": 2}) as agent:
            for _ in range(20):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:{HTTP_PORT}/page.html"])
            time.sleep(0.3)
            assert agent.stop() == 0, agent.log()[-3000:]
    http = agent.events("http")
    assert len(http) == 20
    assert all(e["http"]["response"]["status_code"] == 200 and e["http"]["request"]["method"] == "GET"
               for e in http)
    assert "2 worker(s)" in agent.log()
    match = re.search(r"records per worker at exit: 0=(\d+), 1=(\d+)", agent.log())
    assert match is not None, agent.log()[-2000:]
    assert int(match.group(1)) > 0 and int(match.group(2)) > 0
