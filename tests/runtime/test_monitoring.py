"""The stats endpoint and the periodic metrics log."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
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


def test_metrics_endpoint_in_prometheus_format() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from agent.runtime.prometheus import Sources

    counters = {"kernel.seen": 10, "events.http.OK": 4, "events.http.Error": 1, "http.parse_errors": 2,
                "http.unmatched_requests": 3, "pipeline.acked": 5, "pipeline.retried": 1, "pipeline.dropped": 0,
                "pipeline.queue_full_drops": 7, "spool.full_drops": 1, "someone.new_counter": 9,
                "capture.ring_pending_bytes": 128}
    sources = Sources(counters=lambda: counters,
                      interfaces=lambda: {"veth0": {"seen": 10, "matched": 8, "ring_full": 2, "bytes": 900}},
                      gauges=lambda: {"queue_events": 3, "spool_events": 0, "spool_bytes": 0},
                      processes=lambda: {"main": os.getpid()}, protocols=("http", "dns"))
    server = MonitoringServer(HttpEndpointConfig(enabled=True, host="127.0.0.1", port=0), lambda: counters,
                              {"name": "t"}, sources=sources)
    server.start()
    try:
        reply = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    finally:
        server.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("pktbeat_kernel_packets_total", (("counter", "seen"), ("interface", "veth0")))] == 10
    assert samples[("pktbeat_kernel_drops_total", (("cause", "ring_full"), ("interface", "veth0")))] == 2
    assert samples[("pktbeat_kernel_bytes_total", (("interface", "veth0"),))] == 900
    assert samples[("pktbeat_events_total", (("protocol", "http"), ("status", "Error")))] == 1
    assert samples[("pktbeat_parse_errors_total", (("protocol", "http"),))] == 2
    assert samples[("pktbeat_parse_errors_total", (("protocol", "dns"),))] == 0
    assert samples[("pktbeat_unmatched_messages_total", (("direction", "request"), ("protocol", "http")))] == 3
    assert samples[("pktbeat_output_events_total", (("outcome", "acked"),))] == 5
    assert samples[("pktbeat_output_events_total", (("outcome", "dropped"),))] == 8
    assert samples[("pktbeat_queue_events", ())] == 3
    assert samples[("pktbeat_someone_new_counter_total", ())] == 9  # registered elsewhere: exported anyway
    assert samples[("pktbeat_capture_ring_pending_bytes", ())] == 128  # a declared gauge: no _total
    assert samples[("pktbeat_process_resident_memory_bytes", (("process", "main"),))] > 1e6
    assert ("pktbeat_process_cpu_seconds_total", (("process", "main"),)) in samples
    assert not any(name.startswith("pktbeat_kernel_seen") for name, _ in samples)  # per interface instead


def test_idle_connections_cost_no_thread_and_do_not_delay_stop() -> None:
    """Hundreds of idle connections: bounded threads, the oldest idle closed, the endpoint still answers."""
    from agent.runtime import monitoring

    server = MonitoringServer(HttpEndpointConfig(enabled=True, host="127.0.0.1", port=0), lambda: {"a.b": 1},
                              {"name": "t"})
    before = threading.active_count()
    server.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        # a slow request holds a worker only until REQUEST_TIMEOUT_S; stop() does not wait for it
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.sendall(b"GET /stats HTTP/1.1\r\n")
        idle.append(slow)
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stats", timeout=5).read())
        assert stats["a"] == {"b": 1}
        assert threading.active_count() - before <= monitoring.WORKERS + 1
        assert server.counters["connections_refused"] >= 300 - monitoring.MAX_CONNECTIONS
    finally:
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        for sock in idle:
            sock.close()
    assert took < 1.0
    assert threading.active_count() <= before


@pytest.mark.live
def test_live_metrics_match_stats_localhost_only_and_fast_sigint() -> None:
    """During a live capture: /metrics parses, the veth's seen counter is the kernel's /stats counter, the
    endpoint is unreachable from another namespace, and SIGINT with an idle connection open exits in < 2 s."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.helpers.live import live_agent
    from tests.helpers.netns import veth_pair

    with veth_pair() as pair:
        pair.b.popen(["python3", "-m", "http.server", "8080", "--bind", pair.b_ip])
        pair.b.wait_port(8080, pair.b_ip)
        with live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [8080]}], {"http.enabled": True}) as agent:
            for _ in range(3):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:8080/"])
            text, stats = "", {}
            for _ in range(40):
                time.sleep(0.25)
                text = pair.a.run(["curl", "-s", "http://127.0.0.1:5066/metrics"]).stdout
                stats = json.loads(pair.a.run(["curl", "-s", "http://127.0.0.1:5066/stats"]).stdout)
                if stats.get("events", {}).get("http", {}).get("OK", 0) >= 3 and \
                        f'counter="seen",interface="{pair.a_if}"' in text:
                    text = pair.a.run(["curl", "-s", "http://127.0.0.1:5066/metrics"]).stdout
                    stats = json.loads(pair.a.run(["curl", "-s", "http://127.0.0.1:5066/stats"]).stdout)
                    break
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            seen = samples[("pktbeat_kernel_packets_total", (("counter", "seen"), ("interface", pair.a_if)))]
            assert seen == stats["kernel"]["seen"] > 0
            assert samples[("pktbeat_events_total", (("protocol", "http"), ("status", "OK")))] == 3
            assert ("pktbeat_parse_errors_total", (("protocol", "http"),)) in samples
            assert samples[("pktbeat_process_resident_memory_bytes", (("process", "worker-0"),))] > 0
            assert ("pktbeat_output_events_total", (("outcome", "acked"),)) in samples
            assert ("pktbeat_spool_events", ()) in samples
            refused = pair.b.run(["curl", "-s", "--max-time", "3", f"http://{pair.a_ip}:5066/metrics"], check=False)
            assert refused.returncode != 0 and not refused.stdout
            idle = pair.a.popen(["python3", "-c", "import socket, time; s = socket.create_connection("
                                 "('127.0.0.1', 5066)); time.sleep(30)"])
            time.sleep(0.5)
            assert idle.poll() is None
            started = time.monotonic()
            agent.signal(signal.SIGINT)
            code = agent.proc.wait(timeout=10)
            took = time.monotonic() - started
            agent.exit_code = code
            agent._keep_results()
    assert code == 0, agent.log()[-2000:]
    assert took < 2.0, took
