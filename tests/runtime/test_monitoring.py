"""The stats endpoint and the periodic metrics log."""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from agent.config.model import HttpEndpointConfig
from agent.runtime.monitoring import MetricsLogger, MonitoringServer, nest


def test_nest() -> None:
    assert nest({"tcp.gaps": 2, "tcp.fin": 1, "http.unmatched_requests": 3}) == {
        "http": {"unmatched_requests": 3}, "tcp": {"fin": 1, "gaps": 2}}


def test_stats_endpoint_serves_counters() -> None:
    counters = {"tcp.gaps": 5}
    server = MonitoringServer(HttpEndpointConfig(enabled=True, host="127.0.0.1", port=0), lambda: counters,
                              {"name": "t"})
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        stats = json.loads(urllib.request.urlopen(url + "/stats", timeout=5).read())
        assert stats == {"tcp": {"gaps": 5}}
        info = json.loads(urllib.request.urlopen(url + "/", timeout=5).read())
        assert info["beat"] == "packetbeat" and info["name"] == "t"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/nope", timeout=5)
    finally:
        server.stop()


def test_metrics_logger_logs_only_changes(caplog: pytest.LogCaptureFixture) -> None:
    counters = {"a.b": 1}
    logger = MetricsLogger(30, lambda: dict(counters))
    with caplog.at_level(logging.INFO, logger="pktbeat.monitoring"):
        logger.tick(0)
        logger.tick(10**9)  # before the period: nothing
        counters["a.b"] = 4
        logger.tick(31 * 10**9)
        logger.tick(62 * 10**9)  # no change: nothing
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert '"b":1' in lines[0] and '"b":3' in lines[1]


@pytest.mark.live
def test_live_agent_serves_kernel_and_protocol_counters() -> None:
    from tests.helpers.live import live_agent
    from tests.helpers.netns import veth_pair

    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], [{"type": "icmp", "enabled": True}],
                                         {"http.enabled": True, "http.host": "127.0.0.1", "http.port": 5066}
                                         ) as agent:
        pair.a.run(f"ping -c 3 -i 0.2 {pair.b_ip}")
        deadline = 20
        stats: dict[str, object] = {}
        for _ in range(deadline * 4):
            out = pair.a.run(["curl", "-s", "http://127.0.0.1:5066/stats"], check=False).stdout
            if out:
                stats = json.loads(out)
                if stats.get("kernel", {}).get("matched", 0) >= 6:  # type: ignore[union-attr]
                    break
            import time

            time.sleep(0.25)
        assert stats["kernel"]["seen"] >= 6  # type: ignore[index]
        info = json.loads(pair.a.run(["curl", "-s", "http://127.0.0.1:5066/"]).stdout)
        assert info["beat"] == "packetbeat" and info["mode"] == "live"
        assert agent.stop() == 0
    echoes = [e for e in agent.events("icmp") if e["icmp"]["request"]["type"] == 8]
    assert len(echoes) == 3 and all(e["status"] == "OK" for e in echoes)
