"""Packetbeat's DNS captures through the real CLI (`pktbeat run -t -e -I ...`), asserting event fields."""

from __future__ import annotations

import functools
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.replay import CORPUS, corpus, replay

HERE = Path(__file__).parent
DNS = [{"type": "dns", "ports": [53]}]

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="the beats corpus is not present")


def dns_events(pcap: str | Path, **options: Any) -> list[dict[str, Any]]:
    events, _ = replay(pcap if isinstance(pcap, Path) else corpus(pcap), [{"type": "dns", "ports": [53], **options}])
    return [e for e in events if e["type"] == "dns"]


def flatten(event: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_google_a_record() -> None:
    (e,) = dns_events("dns_google_com.pcap")
    assert e["query"] == "class IN, type A, google.com" and e["status"] == "OK"
    assert (e["source"]["bytes"], e["destination"]["bytes"], e["network"]["bytes"]) == (28, 284, 312)
    assert e["event"]["duration"] == 61_782_000
    answers = e["dns"]["answers"]
    assert len(answers) == 16 and {a["type"] for a in answers} == {"A"}
    assert e["dns"]["resolved_ip"][0] == "62.214.62.249"
    assert e["related"]["ip"] == ["192.168.238.68", "192.168.238.1", *e["dns"]["resolved_ip"]]


def test_not_found() -> None:
    (e,) = dns_events("dns_not_found.pcap")
    assert (e["status"], e["dns"]["response_code"]) == ("Error", "NXDOMAIN")
    assert e["dns"]["answers_count"] == 0 and e["dns"]["authorities_count"] == 1
    assert "authorities" not in e["dns"] and "error" not in e
    (e,) = dns_events("dns_not_found.pcap", include_authorities=True)
    (soa,) = e["dns"]["authorities"]
    assert (soa["type"], soa["name"], soa["data"]) == ("SOA", "elastic.co", "ns-1183.awsdns-19.org")
    assert soa["rname"] == "awsdns-hostmaster.amazon.com" and isinstance(soa["serial"], int)


def test_mx_and_ns() -> None:
    (e,) = dns_events("dns_mx.pcap")
    mx = [(a["preference"], a["data"]) for a in e["dns"]["answers"]]
    assert sorted(mx) == [(1, "aspmx.l.google.com"), (5, "alt1.aspmx.l.google.com"), (5, "alt2.aspmx.l.google.com"),
                          (10, "alt3.aspmx.l.google.com"), (10, "alt4.aspmx.l.google.com")]
    (e,) = dns_events("dns_ns.pcap")
    assert sorted(a["data"] for a in e["dns"]["answers"]) == [
        "ns-1183.awsdns-19.org", "ns-2007.awsdns-58.co.uk", "ns-66.awsdns-08.com", "ns-835.awsdns-40.net"]


def test_txt_with_request_and_response_text() -> None:
    (e,) = dns_events("dns_txt.pcap", send_request=True, send_response=True)
    assert e["request"] == ("ID 6075; QR query; OPCODE QUERY; FLAGS rd; RCODE NOERROR; "
                            "QUESTION class IN, type TXT, elastic.co")
    assert e["response"].startswith("ID 6075; QR response; OPCODE QUERY; FLAGS rd ra; RCODE NOERROR; QUESTION class IN")
    assert "include:_spf.google.com" in e["response"]
    assert {a["type"] for a in e["dns"]["answers"]} == {"TXT"}


def test_additionals() -> None:
    (e,) = dns_events("dns_additional.pcap", include_additionals=True)
    assert e["dns"]["additionals_count"] == 1
    additionals = [(a["name"], a["type"], a["data"]) for a in e["dns"]["additionals"]]
    assert additionals == [("ns.heise.de", "A", "193.99.145.37")]


def test_tcp_axfr() -> None:
    (e,) = dns_events("dns_tcp_axfr.pcap", send_request=True)
    assert e["network"]["transport"] == "tcp" and e["query"] == "class IN, type AXFR, etas.com"
    assert [a["type"] for a in e["dns"]["answers"]] == ["SOA", "NS", "A", "SOA"]
    assert (e["source"]["bytes"], e["destination"]["bytes"]) == (30, 197)  # both with their 2-byte prefix
    assert e["request"].endswith("QUESTION class IN, type AXFR, etas.com")


def test_edns_dnssec() -> None:
    (e,) = dns_events("dns_udp_edns_ds.pcap")
    d = e["dns"]
    assert d["opt"] == {"do": True, "version": "0", "udp_size": 4000, "ext_rcode": "NOERROR"}
    assert "DO" in d["header_flags"] and d["additionals_count"] == 0
    assert [a["type"] for a in d["answers"]] == ["DS", "DS", "RRSIG"]
    ds = d["answers"][0]
    assert set(ds) == {"name", "type", "class", "ttl", "key_tag", "algorithm", "digest_type", "data"}
    assert ds["data"] == ds["data"].upper() and ds["name"] == "ietf.org"
    assert d["answers"][2]["type_covered"] == "DS"


def test_fragmented_edns0_response_matches_packetbeat() -> None:
    """udp_edns0_resp.pcap: a 3398-byte response in three IPv4 fragments, without its query.

    The expected values are those of Packetbeat's own test of this response.
    """
    (e,) = dns_events("udp_edns0_resp.pcap", send_response=True)
    assert e["status"] == "Error" and e["error"]["message"] == "Response: received without an associated Query"
    assert e["destination"]["bytes"] == 3398 and "bytes" not in e["source"] and e["network"]["bytes"] == 3398
    assert "start" not in e["event"] and "duration" not in e["event"] and "end" in e["event"]
    assert (e["source"]["ip"], e["destination"]["ip"], e["destination"]["port"]) == ("192.168.178.24", "8.8.8.8", 53)
    assert (e["method"], e["query"], e["resource"]) == ("QUERY", "class IN, type ANY, peacecorps.gov", "peacecorps.gov")
    d = e["dns"]
    assert {k: d[k] for k in ("id", "op_code", "type", "response_code", "answers_count", "authorities_count",
                             "additionals_count", "header_flags", "flags", "opt", "question")} == {
        "id": 0xD315, "op_code": "QUERY", "type": "answer", "response_code": "NOERROR", "answers_count": 33,
        "authorities_count": 0, "additionals_count": 0, "header_flags": ["RD", "RA", "AD"],
        "flags": {"authentic_data": True, "authoritative": False, "checking_disabled": False,
                  "recursion_available": True, "recursion_desired": True, "truncated_response": False},
        "opt": {"do": False, "ext_rcode": "NOERROR", "udp_size": 512, "version": "0"},
        "question": {"class": "IN", "etld_plus_one": "peacecorps.gov", "name": "peacecorps.gov",
                     "registered_domain": "peacecorps.gov", "top_level_domain": "gov", "type": "ANY"}}
    resolved = ["2600:1f16:ba1:bb01:d444:d4b5:5636:4326", "2600:1f16:ba1:bb00:456d:828a:2b3c:f49b",
                "2600:1f16:ba1:bb02:c8e5:f0:9843:2532", "3.128.227.188", "18.189.98.7", "3.137.88.51"]
    assert d["resolved_ip"] == resolved
    assert e["related"]["ip"] == ["192.168.178.24", "8.8.8.8", *resolved]
    answers = d["answers"]
    assert answers[0] == {
        "algorithm": "RSASHA1-NSEC3-SHA1", "class": "IN", "expiration": "20220819160326",
        "inception": "20220815155149", "key_tag": "51332", "labels": "2", "name": "peacecorps.gov",
        "original_ttl": "172800", "signer_name": "peacecorps.gov", "ttl": "21600", "type": "RRSIG",
        "type_covered": "DNSKEY",
        "data": "TxQ/sPkf25wkkygJL4SIf64K1uqz9cL9TwKWrLUVPl4W0v4C30w0FswKChAHS2d1XpHoRYzCz1Z1NgEAS6fmRwm3QjG0hJV5"
                "7OMvHMUm3egLk8wKVdAhCHMOAKZ3LH9oFIC46vMNc0nZIP/aTlVlcRSCrRVcUUR+MhOCP2M2lwc="}
    assert answers[9] == {"class": "IN", "data": "92E0C69899A903", "flags": "0", "hash": "SHA1", "iterations": "10",
                          "name": "peacecorps.gov", "ttl": "900", "type": "NSEC3PARAM"}
    assert [a["preference"] for a in answers if a["type"] == "MX"] == [10, 5, 20]
    assert answers[-1] == {"class": "IN", "data": "ns0.peacecorps.gov", "expire": 0x1BAF80, "minimum": 0x384,
                           "name": "peacecorps.gov", "refresh": 0x2A30, "retry": 0x438,
                           "rname": "dnsadmin.peacecorps.gov", "serial": 0x7802D445, "ttl": "21600", "type": "SOA"}
    assert e["response"] == (HERE / "edns0_response.txt").read_text().rstrip("\n")


def test_dns_event_of_the_basic_auth_golden_file() -> None:
    """The DNS half of Packetbeat's golden file for http_basicauth.pcap, field for field."""
    events = dns_events("http_basicauth.pcap")
    golden = json.loads((CORPUS / "golden" / "http_basic_auth-expected.json").read_text())
    (expected,) = [g for g in golden if g["type"] == "dns"]
    ignored = {"@metadata.version", "agent.ephemeral_id", "agent.id", "agent.name", "agent.type", "agent.version",
               "ecs.version", "event.end", "event.start", "host.name", "@timestamp", "network.direction"}
    (event,) = events
    ours = {k: v for k, v in flatten(event).items() if k not in ignored}
    assert ours == {k: v for k, v in expected.items() if k not in ignored}


# -- the same events whatever the TCP segmentation ------------------------------------------

def resegment(src: Path, dst: Path, rng: random.Random) -> int:
    """Copy an Ethernet capture, cutting each TCP payload into random pieces; returns the pieces written."""
    written = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        reader = dpkt.pcap.Reader(fin)
        writer = dpkt.pcap.Writer(fout, linktype=reader.datalink())
        for ts, frame in reader:
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            seg = ip.data if isinstance(ip, dpkt.ip.IP) else None
            if not isinstance(seg, dpkt.tcp.TCP) or len(seg.data) < 2:
                writer.writepkt(frame, ts)
                continue
            payload = bytes(seg.data)
            cuts = sorted(rng.sample(range(1, len(payload)), k=min(len(payload) - 1, rng.randint(1, 6))))
            for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True):
                piece = dpkt.tcp.TCP(bytes(seg))
                piece.seq = (seg.seq + a) & 0xFFFFFFFF
                piece.data = payload[a:b]
                piece.sum = 0
                packet = dpkt.ip.IP(bytes(ip))
                packet.data = piece
                packet.len = len(packet.pack_hdr()) + len(bytes(piece))
                packet.sum = 0
                out = dpkt.ethernet.Ethernet(bytes(eth))
                out.data = packet
                writer.writepkt(bytes(out), ts)
                written += 1
    return written


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(event).items() if not k.startswith(("agent.", "@metadata"))}


@functools.cache
def axfr_baseline() -> list[dict[str, Any]]:
    return [comparable(e) for e in dns_events("dns_tcp_axfr.pcap", send_request=True, send_response=True)]


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_tcp_axfr_same_events_whatever_the_segmentation(seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pktbeat-dns-reseg-") as tmp:
        path = Path(tmp) / "axfr.pcap"
        assert resegment(corpus("dns_tcp_axfr.pcap"), path, random.Random(seed)) > 2
        events = dns_events(path, send_request=True, send_response=True)
    assert [comparable(e) for e in events] == axfr_baseline()


def test_unanswered_query_is_published_after_the_timeout() -> None:
    """Without -t, replay waits for pending queries to time out, as a live agent would."""
    with tempfile.TemporaryDirectory(prefix="pktbeat-dns-lone-") as tmp:
        path = Path(tmp) / "query.pcap"
        with corpus("dns_google_com.pcap").open("rb") as fin, path.open("wb") as fout:
            reader = dpkt.pcap.Reader(fin)
            writer = dpkt.pcap.Writer(fout, linktype=reader.datalink())
            ts, frame = next(iter(reader))  # the query alone
            writer.writepkt(frame, ts)
        events, _ = replay(path, [{"type": "dns", "ports": [53], "transaction_timeout": "1s"}], topspeed=False)
    (e,) = [e for e in events if e["type"] == "dns"]
    assert e["error"]["message"] == "No response to this query was received"
    assert e["status"] == "Error" and e["dns"]["type"] == "query" and e["query"] == "class IN, type A, google.com"
    assert e["source"]["bytes"] == 28 and "bytes" not in e["destination"] and "end" not in e["event"]
