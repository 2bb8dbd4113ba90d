"""Attaching: interfaces that appear later, clean exit, killed runs, foreign TC filters, failing interfaces."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.helpers.live import live_agent, live_available, tc_filters
from tests.helpers.netns import Namespace, VethPair, veth_pair

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None, reason=str(live_available()))]

ICMP = [{"type": "icmp", "enabled": True}]


def _add_veth(pair: VethPair, a_if: str, b_if: str, subnet: int) -> tuple[str, str]:
    pair.a.run(["ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", pair.b.name])
    a_ip, b_ip = f"10.214.{subnet}.1", f"10.214.{subnet}.2"
    pair.a.run(f"ip addr add {a_ip}/24 dev {a_if}")
    pair.b.run(f"ip addr add {b_ip}/24 dev {b_if}")
    pair.b.run(f"ip link set {b_if} up")
    return a_ip, b_ip


def _wait_filters(ns: Namespace, iface: str, count: int, timeout: float) -> float | None:
    """Seconds until `iface` has `count` pktbeat filters, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if len(tc_filters(ns, iface)) == count:
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def test_interface_created_after_start_is_captured_within_one_second() -> None:
    subnet = os.getpid() % 200 + 20
    with veth_pair() as pair, live_agent(pair.a, None, ICMP) as agent:  # device: any
        new_a, new_b = f"pbla{subnet}", f"pblb{subnet}"
        _, b_ip = _add_veth(pair, new_a, new_b, subnet)
        pair.a.run(f"ip link set {new_a} up")
        took = _wait_filters(pair.a, new_a, 2, 5.0)
        assert took is not None and took < 1.0, f"attached after {took}s:\n{agent.log()[-2000:]}"
        pair.a.run(f"ping -c 2 -i 0.2 {b_ip}")

        # deleted and created again (a VPN reconnecting): attached again
        pair.a.run(f"ip link del {new_a}")
        time.sleep(0.3)
        _a_ip, b_ip = _add_veth(pair, new_a, new_b, subnet)
        pair.a.run(f"ip link set {new_a} up")
        took = _wait_filters(pair.a, new_a, 2, 5.0)
        assert took is not None and took < 1.0, f"re-attached after {took}s:\n{agent.log()[-2000:]}"
        pair.a.run(f"ping -c 3 -i 0.2 {b_ip}")
        time.sleep(0.3)
        assert agent.stop() == 0
        log = agent.log()
    pings = [e for e in agent.events("icmp") if e["destination"]["ip"] == b_ip and e["icmp"]["request"]["type"] == 8]
    assert len(pings) == 5
    assert log.count(f"attached to {new_a}") == 2
    assert f"{new_a} (ifindex" in log and "went away" in log


def test_sigterm_removes_every_filter_and_exits_fast() -> None:
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if, "lo"], ICMP) as agent:
        assert len(tc_filters(pair.a, pair.a_if)) == 2
        assert len(tc_filters(pair.a, "lo")) == 1  # loopback: ingress only
        pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
        code = agent.stop()
        assert code == 0, agent.log()[-3000:]
        assert agent.stop_seconds is not None and agent.stop_seconds < 2.0
        assert tc_filters(pair.a, pair.a_if) == [] and tc_filters(pair.a, "lo") == []
        # the clsact qdiscs pktbeat created are gone too
        assert "clsact" not in pair.a.run(f"tc qdisc show dev {pair.a_if}").stdout
        assert "capture counters at exit" in agent.log()


def test_kill_9_then_start_leaves_exactly_one_set_of_filters() -> None:
    with veth_pair() as pair:
        with live_agent(pair.a, [pair.a_if], ICMP) as first:
            first.kill()
            left = tc_filters(pair.a, pair.a_if)
            assert len(left) == 2 and all(f"pktbeat:{first.proc.pid}:" in line for line in left)
        with live_agent(pair.a, [pair.a_if], ICMP) as second:
            now = tc_filters(pair.a, pair.a_if)
            assert len(now) == 2, now
            assert all(f"pktbeat:{second.proc.pid}:" in line for line in now)
            assert "left behind by a pktbeat run that was killed" in second.log()
            pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
            time.sleep(0.2)
            assert second.stop() == 0
        assert tc_filters(pair.a, pair.a_if) == []
        assert len([e for e in second.events("icmp") if e["icmp"]["request"]["type"] == 8]) == 2


def _tx_packets(ns: Namespace, iface: str) -> int:
    return int(ns.run(["cat", f"/sys/class/net/{iface}/statistics/tx_packets"]).stdout)


def test_foreign_filter_keeps_working_and_its_qdisc_stays() -> None:
    """A foreign filter after pktbeat's (it mirrors IPv4 to a spare veth) matches while and after pktbeat runs."""
    subnet = os.getpid() % 200 + 20
    with veth_pair() as pair:
        iface = pair.a_if
        mirror, sink = f"pbma{subnet}", f"pbmb{subnet}"
        pair.a.run(["ip", "link", "add", mirror, "type", "veth", "peer", "name", sink])
        pair.a.run(f"ip link set {mirror} up")
        pair.a.run(f"ip link set {sink} up")
        pair.a.run(f"tc qdisc add dev {iface} clsact")
        # Runs after pktbeat (higher pref): it only sees packets that pktbeat's program passes on.
        pair.a.run(f"tc filter add dev {iface} ingress pref 60000 protocol ip u32 match u32 0 0 "
                   f"action mirred egress mirror dev {mirror}")
        with live_agent(pair.a, [iface], ICMP) as agent:
            before = _tx_packets(pair.a, mirror)
            pair.b.run(f"ping -c 3 -i 0.1 {pair.a_ip}")
            during = _tx_packets(pair.a, mirror)
            assert during >= before + 3
            assert agent.stop() == 0
        assert len([e for e in agent.events("icmp") if e["icmp"]["request"]["type"] == 8]) == 3
        pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
        assert _tx_packets(pair.a, mirror) >= during + 2
        assert "clsact" in pair.a.run(f"tc qdisc show dev {iface}").stdout  # not pktbeat's: kept
        assert "pref 60000" in pair.a.run(f"tc filter show dev {iface} ingress").stdout


def test_failing_interface_is_skipped_and_a_missing_one_is_waited_for() -> None:
    subnet = os.getpid() % 200 + 20
    with veth_pair() as pair:
        bad_a, bad_b = f"pbfa{subnet}", f"pbfb{subnet}"
        _add_veth(pair, bad_a, bad_b, subnet)
        pair.a.run(f"ip link set {bad_a} up")
        # A foreign filter at pktbeat's priority with another protocol: the kernel refuses pktbeat's.
        pair.a.run(f"tc qdisc add dev {bad_a} clsact")
        pair.a.run(f"tc filter add dev {bad_a} ingress pref 28770 protocol ip u32 match u32 0 0")
        later = f"pbln{subnet}"
        with live_agent(pair.a, [pair.a_if, bad_a, later], ICMP) as agent:
            assert agent.wait_for(f"cannot attach to {bad_a}", 5)
            assert tc_filters(pair.a, bad_a) == []  # nothing half-attached (egress was rolled back)
            pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
            pair.a.run(["ip", "link", "add", later, "type", "veth", "peer", "name", f"pblm{subnet}"])
            took = _wait_filters(pair.a, later, 2, 5.0)  # named, so attached even while down
            assert took is not None and took < 1.0
            time.sleep(0.2)
            assert agent.stop() == 0
        assert len([e for e in agent.events("icmp") if e["icmp"]["request"]["type"] == 8]) == 2
        assert "u32" in pair.a.run(f"tc filter show dev {bad_a} ingress").stdout


def test_sigusr1_logs_counters() -> None:
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], ICMP) as agent:
        pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
        time.sleep(1.2)  # counters are read every second
        mark = len(agent.log())
        agent.signal(signal.SIGUSR1)
        assert agent.wait_for("capture counters on SIGUSR1", 5, after=mark)
        line = next(line for line in agent.log()[mark:].splitlines() if "on SIGUSR1, " + pair.a_if in line)
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        assert counts["matched"] >= 4 and counts["seen"] >= counts["matched"]  # 2 pings + replies (+ IPv6 ND)
        assert counts["emitted"] == counts["sent"] == counts["matched"]
        assert "dropped: none" in line
        assert agent.stop() == 0


def test_status_line_when_asked_for() -> None:
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], ICMP, extra_args=["--status"]) as agent:
        pair.b.run(f"ping -c 3 -i 0.3 {pair.a_ip}")
        assert agent.wait_for("pkt/s", 5)
        assert agent.stop() == 0
    status = [line for line in agent.log().splitlines() if "pkt/s" in line]
    assert status and all(line.startswith("pktbeat 1 if | ") for line in status)


def test_a_dead_worker_stops_the_agent_cleanly() -> None:
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], ICMP) as agent:
        children = pair.a.run(["cat", f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children"]).stdout.split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        code = agent.proc.wait(timeout=10)
        agent.stop()
        assert code == 2
        assert "worker 0 exited unexpectedly" in agent.log()
        assert tc_filters(pair.a, pair.a_if) == []


def test_a_second_agent_does_not_steal_the_first_ones_interface() -> None:
    with veth_pair() as pair, live_agent(pair.a, [pair.a_if], ICMP) as first:
        with live_agent(pair.a, [pair.a_if], ICMP) as second:
            assert second.wait_for("is already capturing on it", 5)
            assert all(f"pktbeat:{first.proc.pid}:" in line for line in tc_filters(pair.a, pair.a_if))
            assert second.stop() == 0
        assert len(tc_filters(pair.a, pair.a_if)) == 2  # the first one's, untouched
        pair.b.run(f"ping -c 2 -i 0.1 {pair.a_ip}")
        time.sleep(0.2)
        assert first.stop() == 0
    assert len([e for e in first.events("icmp") if e["icmp"]["request"]["type"] == 8]) == 2
