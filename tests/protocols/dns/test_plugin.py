"""DNS transactions over UDP datagrams and TCP streams, with Packetbeat's notes.

TCP cases are fed three ways (whole, byte by byte, random splits) and must
give the same transactions.
"""

from __future__ import annotations

import struct

import pytest

from agent import metrics
from agent.protocols import registry
from agent.protocols.base import Transaction
from agent.protocols.dns import plugin as P
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Endpoint, ip_bytes
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, protocol_config, run_datagrams, run_stream
from tests.protocols.dns import vectors as V
from tests.protocols.dns.vectors import header, opt_rr, question, rr, tcp

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def udp_pair(ex: V.Exchange, **options: object) -> list[Transaction]:
    return run_datagrams("dns", [(C2S, ex.request, T0), (S2C, ex.response, T0 + 7 * MS)], options=options)


def check_pair(txn: Transaction, ex: V.Exchange, request: bytes, response: bytes) -> None:
    assert txn.type == "dns"
    assert txn.notes == []
    assert txn.has_request
    assert (txn.client_bytes, txn.server_bytes) == (len(request), len(response))
    assert txn.status == ("OK" if ex.rcode == "NOERROR" else "Error")
    f = txn.fields
    assert f["method"] == "QUERY"
    assert f["query"] == f"class IN, type {ex.qtype}, {ex.qname}"
    assert f["resource"] == ex.qname
    dns = f["dns"]
    assert (dns["type"], dns["id"], dns["op_code"], dns["response_code"]) == ("answer", ex.id, "QUERY", ex.rcode)
    assert sorted(a["data"] for a in dns.get("answers") or []) == sorted(ex.answers)
    addresses = [a["data"] for a in dns.get("answers") or [] if a["type"] in ("A", "AAAA")]
    assert dns.get("resolved_ip", []) == addresses
    assert f.get("related", {}).get("ip", []) == addresses


# -- UDP ------------------------------------------------------------------------------

@pytest.mark.parametrize("ex", V.UDP_EXCHANGES, ids=lambda ex: ex.qtype + "/" + ex.qname[:16])
def test_udp_query_and_response(ex: V.Exchange) -> None:
    txns = udp_pair(ex)
    assert len(txns) == 1
    check_pair(txns[0], ex, ex.request, ex.response)
    assert (txns[0].ts_ns, txns[0].end_ns) == (T0, T0 + 7 * MS)
    assert txns[0].conn.client.port == 40000 and txns[0].conn.server.port == 53


def test_udp_lone_query_waits_then_expires() -> None:
    spec = registry.spec("dns")
    out: list[Transaction] = []
    counters = metrics.register("test.dns.expiry")
    handler = spec.udp(protocol_config("dns", transaction_timeout="2s"), out.append, counters)
    conn = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 34898), Endpoint(ip_bytes("192.168.0.1"), 53), 4, "udp")
    handler.datagram(C2S, conn, V.ELASTIC_A.request, T0)
    handler.tick(T0 + 1_900 * MS)
    assert out == [] and handler.pending() == 1
    before = counters["unmatched_requests"]
    handler.tick(T0 + 2_000 * MS)
    assert handler.pending() == 0 and counters["unmatched_requests"] == before + 1
    (txn,) = out
    assert txn.notes == [P.NO_RESPONSE]
    assert txn.status == "Error" and txn.server_bytes is None and txn.end_ns is None
    assert txn.client_bytes == len(V.ELASTIC_A.request)
    assert txn.fields["dns"]["type"] == "query" and txn.fields["query"] == "class IN, type A, elastic.co"


def test_udp_response_without_query() -> None:
    (txn,) = run_datagrams("dns", [(S2C, V.ELASTIC_A.response, T0)])
    assert txn.notes == [P.ORPHANED_RESPONSE]
    assert not txn.has_request and txn.status == "Error"
    assert (txn.client_bytes, txn.server_bytes) == (None, len(V.ELASTIC_A.response))
    assert (txn.ts_ns, txn.end_ns) == (T0, T0)
    assert txn.conn.client.port == 40000  # the receiver of a response is the client
    assert txn.fields["dns"]["type"] == "answer" and txn.fields["method"] == "QUERY"


def test_udp_duplicate_query_closes_the_first() -> None:
    txns = run_datagrams("dns", [(C2S, V.ELASTIC_A.request, T0), (C2S, V.ELASTIC_A.request, T0 + MS),
                                 (S2C, V.ELASTIC_A.response, T0 + 3 * MS)])
    first, second = txns
    assert first.notes == [P.DUPLICATE_QUERY] and first.status == "Error" and first.ts_ns == T0
    assert first.server_bytes is None and first.fields["dns"]["type"] == "query"
    assert second.notes == [] and second.ts_ns == T0 + MS and second.status == "OK"


def test_udp_edns_mismatch_notes() -> None:
    ex = V.EDNS_SEC_A
    no_opt_response = ex.response[:-11]  # the OPT record cut off; ARCOUNT still says 1
    (txn,) = run_datagrams("dns", [(C2S, ex.request, T0), (S2C, no_opt_response, T0 + MS)])
    assert txn.notes == [P.EDNS_NOT_SUPPORTED] and txn.status == "OK"
    assert txn.server_bytes == len(no_opt_response)
    no_opt_request = ex.request[:-11]
    (txn,) = run_datagrams("dns", [(C2S, no_opt_request, T0), (S2C, ex.response, T0 + MS)])
    assert txn.notes == [P.EDNS_UNEXPECTED] and txn.status == "OK"
    assert txn.fields["dns"]["opt"] == {"do": True, "version": "0", "udp_size": 4000, "ext_rcode": "NOERROR"}


def big_response(edns: bool) -> bytes:
    answers = b"".join(rr(b"\xc0\x0c", 1, bytes([10, 0, i // 256, i % 256])) for i in range(40))
    return header(5, 0x8180, 1, 40, 0, 1 if edns else 0) + question("big.example", 1) + answers \
        + (opt_rr(1232) if edns else b"")


def test_udp_non_edns_response_over_512_bytes() -> None:
    query = header(5, 0x0100) + question("big.example", 1)
    (txn,) = run_datagrams("dns", [(C2S, query, T0), (S2C, big_response(False), T0 + MS)])
    assert len(big_response(False)) > 512
    assert txn.notes == ["Response: " + P.OVERSIZE]
    assert len(txn.fields["dns"]["resolved_ip"]) == 40
    query = header(5, 0x0100, ar=1) + question("big.example", 1) + opt_rr(1232)
    (txn,) = run_datagrams("dns", [(C2S, query, T0), (S2C, big_response(True), T0 + MS)])
    assert txn.notes == []


def test_udp_orphan_notes_come_first() -> None:
    (txn,) = run_datagrams("dns", [(S2C, big_response(False), T0)])
    assert txn.notes == [P.ORPHANED_RESPONSE, "Response: " + P.OVERSIZE]


def test_udp_garbage_and_empty_raise_parse_error() -> None:
    spec = registry.spec("dns")
    out: list[Transaction] = []
    handler = spec.udp(protocol_config("dns"), out.append, metrics.register("test.dns.garbage"))
    conn = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 34898), Endpoint(ip_bytes("192.168.0.1"), 53), 4, "udp")
    for data in (b"", bytes(range(14)), b"\x00" * 11):
        with pytest.raises(ParseError):
            handler.datagram(C2S, conn, data, T0)
    assert out == [] and handler.pending() == 0


def test_udp_port_53_to_port_53_pairs_by_qr_bit() -> None:
    # Both sides use port 53, so the dispatcher sees both datagrams as coming from the server side.
    spec = registry.spec("dns")
    out: list[Transaction] = []
    handler = spec.udp(protocol_config("dns"), out.append, metrics.register("test.dns.53"))
    resolver, auth = Endpoint(ip_bytes("10.0.0.1"), 53), Endpoint(ip_bytes("10.0.0.2"), 53)
    handler.datagram(S2C, ConnectionInfo(auth, resolver, 4, "udp"), V.ELASTIC_A.request, T0)
    handler.datagram(S2C, ConnectionInfo(resolver, auth, 4, "udp"), V.ELASTIC_A.response, T0 + MS)
    (txn,) = out
    assert txn.notes == [] and txn.conn.client == resolver and txn.conn.server == auth


def test_udp_send_request_and_response_text() -> None:
    (txn,) = udp_pair(V.ELASTIC_A, send_request=True, send_response=True)
    assert txn.fields["request"] == ("ID 8529; QR query; OPCODE QUERY; FLAGS rd; RCODE NOERROR; "
                                     "QUESTION class IN, type A, elastic.co")
    assert txn.fields["response"] == ("ID 8529; QR response; OPCODE QUERY; FLAGS rd ra; RCODE NOERROR; "
                                      "QUESTION class IN, type A, elastic.co; ANSWER 54.148.130.30; 54.69.104.66")
    (txn,) = udp_pair(V.ELASTIC_A)
    assert "request" not in txn.fields and "response" not in txn.fields


def test_udp_include_authorities_and_additionals() -> None:
    (txn,) = udp_pair(V.GITHUB_PTR)
    assert txn.fields["dns"]["authorities_count"] == 13 and "authorities" not in txn.fields["dns"]
    (txn,) = udp_pair(V.GITHUB_PTR, include_authorities=True, include_additionals=True)
    assert len(txn.fields["dns"]["authorities"]) == 13
    assert txn.fields["dns"]["authorities"][0] == {"name": ".", "type": "NS", "class": "IN", "ttl": "1976",
                                                   "data": "l.root-servers.net"}


def test_udp_nxdomain_is_an_error() -> None:
    (txn,) = udp_pair(V.SOPHOS_TXT)
    assert txn.status == "Error" and txn.notes == [] and txn.fields["dns"]["response_code"] == "NXDOMAIN"


# -- TCP ------------------------------------------------------------------------------

def tcp_run(steps: list[Step], **kwargs: object) -> list[Transaction]:
    return assert_same_three_ways("dns", steps, server_port=53, **kwargs)


@pytest.mark.parametrize("ex", V.TCP_EXCHANGES, ids=lambda ex: ex.qtype + "/" + ex.qname[:16])
def test_tcp_query_and_response(ex: V.Exchange) -> None:
    txns = tcp_run([Step(C2S, ex.request, T0), Step(S2C, ex.response, T0 + 2 * MS)])
    assert len(txns) == 1
    check_pair(txns[0], ex, ex.request, ex.response)  # byte counts include the 2-byte prefix
    assert (txns[0].ts_ns, txns[0].end_ns) == (T0, T0 + 2 * MS)


def test_tcp_axfr_has_four_answers() -> None:
    (txn,) = tcp_run([Step(C2S, V.ZONE_AXFR_TCP.request, T0), Step(S2C, V.ZONE_AXFR_TCP.response, T0 + MS)])
    answers = txn.fields["dns"]["answers"]
    assert [a["type"] for a in answers] == ["SOA", "NS", "A", "SOA"]
    assert all("etas.com" in a["name"] for a in answers)


def test_tcp_two_messages_in_one_segment_each_way() -> None:
    soa_query = tcp(header(1, 0x0000) + question("etas.com", 6))
    soa_answer = tcp(header(1, 0x8480, 1, 1) + question("etas.com", 6) + rr(
        b"\xc0\x0c", 6, b"\x00\x00" + struct.pack("!IIIII", 1, 2, 3, 4, 5)))
    txns = tcp_run([Step(C2S, soa_query + V.ZONE_AXFR_TCP.request, T0),
                    Step(S2C, soa_answer + V.ZONE_AXFR_TCP.response, T0 + MS)])
    assert [t.fields["query"] for t in txns] == ["class IN, type SOA, etas.com", "class IN, type AXFR, etas.com"]
    assert all(t.notes == [] and t.status == "OK" for t in txns)
    assert [t.server_bytes for t in txns] == [len(soa_answer), len(V.ZONE_AXFR_TCP.response)]


def test_tcp_response_split_over_segments_is_dated_by_its_first() -> None:
    ex = V.ELASTIC_A_TCP
    steps = [Step(C2S, ex.request, T0), Step(S2C, ex.response[:1], T0 + MS), Step(S2C, ex.response[1:10], T0 + 2 * MS),
             Step(S2C, ex.response[10:], T0 + 3 * MS)]
    (txn,) = tcp_run(steps)
    check_pair(txn, ex, ex.request, ex.response)
    assert txn.end_ns == T0 + MS


def test_tcp_zero_length_query_is_dropped_quietly() -> None:
    assert tcp_run([Step(C2S, b"\x00\x00\x01\x02", T0)]) == []


def test_tcp_zero_length_response_closes_the_query() -> None:
    (txn,) = tcp_run([Step(C2S, V.ELASTIC_A_TCP.request, T0), Step(S2C, b"\x00\x00", T0 + MS)])
    assert txn.notes == ["Response: " + P.ZERO_LENGTH]
    assert txn.status == "Error" and txn.server_bytes is None and txn.client_bytes == len(V.ELASTIC_A_TCP.request)


def test_tcp_non_dns_response_closes_the_query() -> None:
    (txn,) = tcp_run([Step(C2S, V.ELASTIC_A_TCP.request, T0), Step(S2C, b"\x00\x02\x01\x02", T0 + MS)])
    assert txn.notes == ["Response: " + P.NON_DNS] and txn.status == "Error"
    assert txn.fields["query"] == "class IN, type A, elastic.co"


def test_tcp_gap_inside_a_response() -> None:
    ex = V.SOPHOS_TXT_TCP
    steps = [Step(C2S, ex.request, T0), Step(S2C, ex.response[:10], T0 + MS), Step(S2C, gap=10, ts_ns=T0 + 2 * MS),
             Step(S2C, fin=True, ts_ns=T0 + 3 * MS)]
    (txn,) = tcp_run(steps)
    assert txn.notes == ["Response: " + P.INCOMPLETE] and txn.status == "Error"
    assert "answers" not in txn.fields["dns"] and txn.fields["dns"]["type"] == "query"


def test_tcp_fin_inside_a_response() -> None:
    ex = V.ZONE_AXFR_TCP
    (txn,) = tcp_run([Step(C2S, ex.request, T0), Step(S2C, ex.response[:10], T0 + MS, fin=True)])
    assert txn.notes == ["Response: " + P.INCOMPLETE]


def test_tcp_gap_or_fin_after_a_complete_query_publishes_nothing() -> None:
    ex = V.SOPHOS_TXT_TCP
    steps = [Step(C2S, ex.request, T0), Step(C2S, gap=10, ts_ns=T0 + MS), Step(S2C, fin=True, ts_ns=T0 + MS)]
    assert tcp_run(steps, expire=False) == []
    (txn,) = tcp_run(steps)  # the connection expires: the query was never answered
    assert txn.notes == [P.NO_RESPONSE]


def test_tcp_gap_inside_a_query_drops_it() -> None:
    ex = V.SOPHOS_TXT_TCP
    assert tcp_run([Step(C2S, ex.request[:10], T0), Step(C2S, gap=10, ts_ns=T0 + MS),
                    Step(C2S, fin=True, ts_ns=T0 + MS)]) == []


def test_tcp_parsing_resumes_after_a_gap_in_a_known_length_message() -> None:
    first, second = V.ELASTIC_A_TCP, V.GITHUB_PTR_TCP
    steps = [Step(C2S, first.request + second.request, T0), Step(S2C, first.response[:40], T0 + MS),
             Step(S2C, gap=20, ts_ns=T0 + 2 * MS), Step(S2C, first.response[60:] + second.response, T0 + 3 * MS)]
    txns = tcp_run(steps)
    assert [t.notes for t in txns] == [["Response: " + P.INCOMPLETE], []]
    check_pair(txns[1], second, second.request, second.response)


def test_tcp_duplicate_queries_on_one_stream_and_in_one_segment() -> None:
    ex = V.ELASTIC_A_TCP
    for steps in ([Step(C2S, ex.request, T0), Step(C2S, ex.request, T0 + MS)],
                  [Step(C2S, ex.request + ex.request[:4], T0), Step(C2S, ex.request[4:], T0 + MS)]):
        txns = tcp_run(steps, expire=False)
        (txn,) = txns
        assert txn.notes == [P.DUPLICATE_QUERY] and txn.client_bytes == len(ex.request)


def test_tcp_response_without_query() -> None:
    (txn,) = tcp_run([Step(S2C, V.ELASTIC_A_TCP.response, T0)])
    assert txn.notes == [P.ORPHANED_RESPONSE] and not txn.has_request
    assert txn.server_bytes == len(V.ELASTIC_A_TCP.response)


def test_tcp_failure_without_a_pending_query_publishes_nothing() -> None:
    assert tcp_run([Step(S2C, b"\x00\x00", T0), Step(S2C, b"\x00\x02\x01\x02", T0)]) == []


def test_tcp_garbage_does_not_break_later_messages() -> None:
    # The length prefix keeps framing: a non-DNS message is skipped, the next one parses.
    ex = V.ELASTIC_A_TCP
    txns = tcp_run([Step(C2S, b"\x00\x03abc" + ex.request, T0), Step(S2C, ex.response, T0 + MS)])
    assert len(txns) == 1 and txns[0].notes == []


def test_tcp_old_queries_expire_while_the_connection_is_busy() -> None:
    old, busy = V.ELASTIC_A_TCP, V.GITHUB_PTR_TCP
    steps = [Step(C2S, old.request, T0)] + [
        Step(C2S if i % 2 == 0 else S2C, busy.request if i % 2 == 0 else busy.response, T0 + (i + 1) * 3_000 * MS)
        for i in range(8)]
    txns = run_stream("dns", steps, server_port=53, expire=False)
    assert [(t.fields["resource"], t.notes) for t in txns] == [
        ("131.252.30.192.in-addr.arpa", []), ("elastic.co", [P.NO_RESPONSE]),  # expired by the feed at 12 s
        ("131.252.30.192.in-addr.arpa", []), ("131.252.30.192.in-addr.arpa", []),
        ("131.252.30.192.in-addr.arpa", [])]


def test_null_fields_are_left_out_unless_keep_null() -> None:
    # No header flag set, and an A record without an address (counted, not listed): two null fields.
    request = header(7, 0x0000) + question("example.com", 1)
    response = header(7, 0x8000, 1, 1) + question("example.com", 1) + rr(b"\xc0\x0c", 1, b"")
    steps = [(C2S, request, T0), (S2C, response, T0 + MS)]
    [dropped] = run_datagrams("dns", steps, options={"keep_null": False})
    assert "header_flags" not in dropped.fields["dns"] and "answers" not in dropped.fields["dns"]
    assert dropped.fields["dns"]["answers_count"] == 1
    assert not dropped.may_hold_nulls  # nothing for the event builder's null walk to find
    [kept] = run_datagrams("dns", steps, options={"keep_null": True})
    assert kept.fields["dns"]["header_flags"] is None and kept.fields["dns"]["answers"] is None
    assert kept.may_hold_nulls
    # The same fields in the same order as the null walk would leave.
    assert [(k, v) for k, v in kept.fields["dns"].items() if v is not None] == list(dropped.fields["dns"].items())
