"""Processes of flows in the parent: lookups in the kernel's owners map (faked here), wildcards and the cache;
and the event builder's hook for transactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.capture.sockrecord import TaskFacts
from agent.events.builder import AgentIdentity, EventBuilder
from agent.events.direction import DirectionClassifier
from agent.procs.flows import FlowProcesses
from agent.protocols.base import Transaction
from agent.transport.types import ConnectionInfo, Endpoint
from tests.procs.test_table import START, TASK, fake_proc, owner, table


class FakeOwners:
    def __init__(self, entries: dict[tuple[int, int, bytes, int, bytes, int], TaskFacts]) -> None:
        self.entries = entries
        self.asked: list[tuple[int, int, bytes, int, bytes, int]] = []

    def owner(self, family: int, l4proto: int, laddr: bytes, lport: int, raddr: bytes, rport: int
              ) -> TaskFacts | None:
        key = (family, l4proto, laddr, lport, raddr, rport)
        self.asked.append(key)
        return self.entries.get(key)


def test_flow_events_get_the_processes_of_local_endpoints(tmp_path: Path) -> None:
    dns = TASK._replace(tgid=53, comm="named", start_ns=START + 1)
    fake_proc(tmp_path, 53, START + 1, "/usr/sbin/named", ["named"], "/", addresses=("10.0.0.2",))
    source = FakeOwners({
        (4, 6, b"\x0a\0\0\x01", 40000, b"\x0a\0\0\x02", 80): TASK,
        (6, 17, b"\0" * 16, 53, b"\0" * 16, 0): dns,  # a dual-stack server bound to any address
    })
    flows = FlowProcesses(source, table(tmp_path))
    tcp: dict[str, Any] = {"network": {"transport": "tcp"}, "source": {"ip": "10.0.0.1", "port": 40000},
                           "destination": {"ip": "10.0.0.2", "port": 80}}
    flows.annotate_flow(tcp)
    assert tcp["source"]["process"]["pid"] == 100 and "process" not in tcp["destination"]
    assert tcp["process"]["name"] == "curl"
    udp: dict[str, Any] = {"network": {"transport": "udp"}, "source": {"ip": ["192.0.2.1", "10.0.0.1"], "port": 999},
                           "destination": {"ip": ["192.0.2.2", "10.0.0.2"], "port": 53}}
    flows.annotate_flow(udp)  # a tunnel's flow: the inner addresses are the sockets'
    assert udp["destination"]["process"]["name"] == "named"
    elsewhere: dict[str, Any] = {"network": {"transport": "udp"}, "source": {"ip": "10.0.0.1", "port": 999},
                                 "destination": {"ip": "10.9.9.9", "port": 53}}
    flows.annotate_flow(elsewhere)  # to port 53 of another host: not the local server bound to any address
    assert "process" not in elsewhere["destination"]
    asked = len(source.asked)
    flows.annotate_flow(dict(udp, source=dict(udp["source"]), destination=dict(udp["destination"])))
    assert len(source.asked) == asked  # remembered for a while
    icmp: dict[str, Any] = {"network": {"transport": "icmp"}, "source": {"ip": "10.0.0.1"},
                            "destination": {"ip": "10.0.0.2"}}
    flows.annotate_flow(icmp)
    assert "process" not in icmp


def test_the_event_builder_asks_its_finder_for_tcp_and_udp_only(tmp_path: Path) -> None:
    t = table(tmp_path)
    t.add(owner())
    builder = EventBuilder(AgentIdentity.create("test"), DirectionClassifier([], []))
    builder.processes = t
    conn = ConnectionInfo(Endpoint(b"\x0a\0\0\x01", 40000), Endpoint(b"\x0a\0\0\x02", 80), 4, "tcp")
    event = builder.transaction_event(Transaction(type="http", conn=conn, ts_ns=10**18))
    assert event is not None and event["source"]["process"]["pid"] == 100 and event["process"]["pid"] == 100
    assert "process" not in event["client"]
    builder.processes = None
    plain = builder.transaction_event(Transaction(type="http", conn=conn, ts_ns=10**18))
    assert plain is not None and "process" not in plain and "process" not in plain["source"]
