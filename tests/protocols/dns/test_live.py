"""dnsmasq in namespace b, queried with dig from namespace a over UDP and TCP (IPv4 and IPv6).

The traffic is captured on the veth in namespace a and replayed through the
CLI (`capture_events`); when live eBPF capture lands, only that function
changes.  Every event is checked against what dig itself reported.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events as live_capture
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("dnsmasq") and shutil.which("dig") and shutil.which("tcpdump")),
                       reason="needs dnsmasq, dig and tcpdump"),
]


@dataclass
class Lab:
    pair: VethPair
    subnet: int  # the N of 10.213.N.0/24
    tmp: Path


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # A private directory: pytest's shared basetemp is pruned by concurrent runs on this machine.
    with tempfile.TemporaryDirectory(prefix="pktbeat-dns-live-") as tmpdir, veth_pair("dns") as pair:
        tmp = Path(tmpdir)
        n = int(pair.b_ip.split(".")[2])
        args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=53",
                f"--listen-address={pair.b_ip}", f"--listen-address={pair.b_ip6}", "--bind-interfaces",
                "--pid-file=", "--user=root", "--group=root",
                f"--address=/wild.example.test/10.213.{n}.9", "--local=/example.test/",
                f"--host-record=host.example.test,10.213.{n}.10,fd00:213::10",
                "--txt-record=txt.example.test,hello world,second",
                "--mx-host=example.test,mail.example.test,10",
                "--srv-host=_sip._udp.example.test,sip.example.test,5060,1,2",
                "--cname=alias.example.test,host.example.test",
                f"--ptr-record=10.{n}.213.10.in-addr.arpa,host.example.test"]
        pair.b.popen(args, log=tmp / "dnsmasq.log")
        pair.b.wait_port(53, udp=True)
        pair.b.wait_port(53)
        yield Lab(pair, n, tmp)


def capture_events(lab: Lab, traffic: Callable[[], None], protocols: list[dict[str, Any]] | None = None,
                   name: str = "live") -> list[dict[str, Any]]:
    """Run `traffic` while capturing on namespace a's veth, then replay the capture through the CLI."""
    events = live_capture(lab.pair, lambda _pair: traffic(), protocols or [
        {"type": "dns", "ports": [53], "send_request": True, "send_response": True}])
    return [e for e in events if e["type"] == "dns"]


@dataclass
class Answer:
    """What dig printed for one query."""

    id: int
    status: str
    size: int  # "MSG SIZE rcvd"
    records: list[tuple[str, str]]  # (type, data) of the answer section


def dig(lab: Lab, *args: str, server: str | None = None) -> list[Answer]:
    out = lab.pair.a.run(["dig", f"@{server or lab.pair.b_ip}", "+tries=1", "+time=3", *args]).stdout
    answers = []
    for block in out.split(";; ->>HEADER<<-")[1:]:
        head = re.search(r"status: (\w+), id: (\d+)", block)
        size = re.search(r"MSG SIZE\s+rcvd: (\d+)", block)
        assert head and size, block
        section = block.split(";; ANSWER SECTION:\n")[1].split("\n\n")[0] if ";; ANSWER SECTION:" in block else ""
        records = [(line.split()[3], " ".join(line.split()[4:])) for line in section.splitlines() if line]
        answers.append(Answer(int(head.group(2)), head.group(1), int(size.group(1)), records))
    return answers


def by_id(events: list[dict[str, Any]], ident: int) -> dict[str, Any]:
    (event,) = [e for e in events if e["dns"]["id"] == ident]
    return event


def test_udp_queries_of_several_types(lab: Lab) -> None:
    n = lab.subnet
    queries = [("host.example.test", "A"), ("host.example.test", "AAAA"), ("txt.example.test", "TXT"),
               ("example.test", "MX"), ("_sip._udp.example.test", "SRV"), ("alias.example.test", "A"),
               (f"10.{n}.213.10.in-addr.arpa", "PTR"), ("missing.example.test", "A"), ("x.wild.example.test", "A")]
    answers: list[Answer] = []
    events = capture_events(lab, lambda: [answers.extend(dig(lab, name, qtype)) for name, qtype in queries],
                            name="udp")
    assert len(events) == len(queries) == len(answers)
    for (name, qtype), answer in zip(queries, answers, strict=True):
        e = by_id(events, answer.id)
        assert e["network"]["transport"] == "udp" and e["network"]["type"] == "ipv4"
        assert (e["source"]["ip"], e["destination"]["ip"], e["destination"]["port"]) == (
            lab.pair.a_ip, lab.pair.b_ip, 53)
        assert e["query"] == f"class IN, type {qtype}, {name}" and e["dns"]["question"]["name"] == name
        assert e["dns"]["response_code"] == answer.status
        assert e["status"] == ("OK" if answer.status == "NOERROR" else "Error")
        assert e["destination"]["bytes"] == answer.size  # dig's own count of the response
        assert "error" not in e
        assert e["dns"]["opt"]["udp_size"] == 1232 and e["dns"]["opt"]["version"] == "0"  # dig sends EDNS
        # dig sets RD and AD, and an OPT record (shown, as Packetbeat does, as an empty additional).
        assert e["request"] == (f"ID {answer.id}; QR query; OPCODE QUERY; FLAGS rd ad; RCODE NOERROR; "
                                f"QUESTION class IN, type {qtype}, {name}; ADDITIONAL ")
        assert [a["type"] for a in e["dns"].get("answers", [])] == [t for t, _ in answer.records]
    resolved = {a.id: by_id(events, a.id)["dns"].get("resolved_ip") for a in answers}
    assert resolved[answers[0].id] == [f"10.213.{n}.10"]
    assert resolved[answers[1].id] == ["fd00:213::10"]
    assert by_id(events, answers[2].id)["dns"]["answers"][0]["data"] == "hello world second"
    mx = by_id(events, answers[3].id)["dns"]["answers"][0]
    assert (mx["preference"], mx["data"]) == (10, "mail.example.test")
    srv = by_id(events, answers[4].id)["dns"]["answers"][0]
    assert (srv["priority"], srv["weight"], srv["port"], srv["data"]) == (1, 2, 5060, "sip.example.test")
    alias = by_id(events, answers[5].id)
    assert [(a["type"], a["data"]) for a in alias["dns"]["answers"]] == [("CNAME", "host.example.test"),
                                                                          ("A", f"10.213.{n}.10")]
    assert alias["related"]["ip"] == [lab.pair.a_ip, lab.pair.b_ip, f"10.213.{n}.10"]
    assert by_id(events, answers[6].id)["dns"]["answers"][0]["data"] == "host.example.test"
    missing = by_id(events, answers[7].id)
    assert missing["dns"]["answers_count"] == 0 and missing["dns"]["response_code"] == "NXDOMAIN"
    assert by_id(events, answers[8].id)["dns"]["resolved_ip"] == [f"10.213.{n}.9"]
    assert by_id(events, answers[8].id)["dns"]["question"]["subdomain"] == "x.wild"


def test_tcp_queries_on_one_connection(lab: Lab) -> None:
    answers: list[Answer] = []
    events = capture_events(lab, lambda: answers.extend(dig(lab, "+tcp", "+keepopen", "host.example.test", "A",
                                                            "txt.example.test", "TXT", "missing.example.test", "A")),
                            name="tcp")
    assert len(answers) == 3 and len(events) == 3
    ports = {e["source"]["port"] for e in events}
    assert len(ports) == 1  # the three exchanges shared one connection
    for answer in answers:
        e = by_id(events, answer.id)
        assert e["network"]["transport"] == "tcp"
        assert e["destination"]["bytes"] == answer.size + 2  # the 2-byte length prefix counts on TCP
        assert e["dns"]["response_code"] == answer.status and "error" not in e
    assert by_id(events, answers[1].id)["dns"]["answers"][0]["data"] == "hello world second"
    assert by_id(events, answers[2].id)["status"] == "Error"


def test_ipv6_udp_and_tcp(lab: Lab) -> None:
    answers: list[Answer] = []

    def traffic() -> None:
        answers.extend(dig(lab, "host.example.test", "AAAA", server=lab.pair.b_ip6))
        answers.extend(dig(lab, "+tcp", "host.example.test", "A", server=lab.pair.b_ip6))

    events = capture_events(lab, traffic, name="ipv6")
    assert len(events) == 2
    udp, tcp = by_id(events, answers[0].id), by_id(events, answers[1].id)
    for e in (udp, tcp):
        assert e["network"]["type"] == "ipv6" and e["destination"]["ip"] == lab.pair.b_ip6
    assert udp["network"]["transport"] == "udp" and udp["dns"]["resolved_ip"] == ["fd00:213::10"]
    assert tcp["network"]["transport"] == "tcp" and tcp["dns"]["resolved_ip"] == [f"10.213.{lab.subnet}.10"]


def test_query_without_edns_and_default_output(lab: Lab) -> None:
    answers: list[Answer] = []
    events = capture_events(lab, lambda: answers.extend(dig(lab, "+nocookie", "+noedns", "alias.example.test", "A")),
                            protocols=[{"type": "dns", "ports": [53]}], name="plain")
    (e,) = events
    assert "opt" not in e["dns"] and "request" not in e and "response" not in e
    assert e["dns"]["header_flags"] == ["AA", "RD", "RA"]  # dnsmasq is authoritative for its local names
    assert e["source"]["bytes"] < e["destination"]["bytes"] == answers[0].size
