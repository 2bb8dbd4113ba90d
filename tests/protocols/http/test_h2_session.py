"""The http protocol's sessions on HTTP/2 and on connections that turn into TLS.

HTTP/2 byte streams come from python-hyper's h2 (h2wire.py); every case is
fed whole, byte by byte, cut at random points, and with trailing data (the
start of a frame that never completes).
"""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.protocols.base import Transaction
from agent.protocols.http.h2frames import PREFACE
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.http.h2wire import Conversation, upgrade_conversation
from tests.protocols.tls import builders as b

TRAILING = b"\x00\x00\x08\x00\x01\x00\x00"  # an incomplete frame header after the conversation


def steps_of(pairs: list[tuple[Any, bytes]]) -> list[Step]:
    return [Step(direction, data, ts_ns=1_000_000_000 + i * 1_000_000) for i, (direction, data) in enumerate(pairs)]


def http(steps: list[Step], trailing: bool = True, **options: Any) -> list[Transaction]:
    """Three ways, then the same with trailing bytes on both directions: the same transactions."""
    txns = assert_same_three_ways("http", steps, server_port=8080, options=options,
                                  hand_over_options={"tls": {}})
    if trailing:
        extra = [*steps, Step(C2S, TRAILING, ts_ns=9_000_000_000), Step(S2C, TRAILING, ts_ns=9_000_000_000)]
        with_trailing = run_stream("http", extra, server_port=8080, options=options, hand_over_options={"tls": {}})
        assert [t.fields for t in with_trailing] == [t.fields for t in txns]
    return txns


def counters() -> Any:
    return metrics.register("test.http")


def test_prior_knowledge_requests() -> None:
    conv = Conversation()
    a = conv.request("GET", "/index.html?q=1", authority="www.example.com:8080",
                     headers=[("user-agent", "curl/8"), ("accept", "*/*")])
    conv.respond(a, 200, b"<html></html>", headers=[("content-type", "text/html"), ("server", "nginx")])
    post = conv.request("POST", "/login", authority="www.example.com:8080",
                        headers=[("content-type", "application/x-www-form-urlencoded")], body=b"user=me&password=x")
    conv.respond(post, 302, headers=[("location", "/home")])
    missing = conv.request("GET", "/missing", authority="www.example.com:8080")
    conv.respond(missing, 404, b"not here", headers=[("content-type", "text/plain")])
    before = counters()["h2_connections"]
    get, login, not_found = http(steps_of(conv.steps), send_headers=["server", "location"],
                                 include_body_for=["text/html"], hide_keywords=["password"])
    assert counters()["h2_connections"] == before + 6  # whole, bytewise, three random cuts, trailing data
    assert get.fields["http"]["version"] == "2"
    assert get.fields["method"] == "GET" and get.fields["query"] == "GET /index.html"
    assert get.fields["url"] == {"scheme": "http", "domain": "www.example.com", "port": 8080,
                                 "path": "/index.html", "extension": "html", "query": "q=1",
                                 "full": "http://www.example.com:8080/index.html?q=1"}
    assert get.domain == "www.example.com"
    assert get.fields["user_agent"] == {"original": "curl/8"}
    response = get.fields["http"]["response"]
    assert response["status_code"] == 200 and "status_phrase" not in response
    assert response["headers"] == {"content-length": 13, "content-type": "text/html", "server": "nginx"}
    assert response["body"] == {"bytes": 13, "content": "<html></html>"}
    assert get.status == "OK" and get.notes == []
    assert get.client_bytes == get.fields["http"]["request"]["bytes"] > 0
    assert login.fields["url"]["query"] == "password=xxxxx&user=me"
    assert login.fields["http"]["response"]["headers"]["location"] == "/home"
    assert not_found.status == "Error" and not_found.fields["http"]["response"]["status_code"] == 404


def test_send_request_and_response_render_the_header_lists() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/r", headers=[("x-a", "1")])
    conv.respond(sid, 200, b"ok", headers=[("content-type", "text/plain")])
    [txn] = http(steps_of(conv.steps), send_request=True, send_response=True, include_body_for=["text/plain"])
    assert txn.fields["request"] == "GET /r HTTP/2\r\nx-a: 1\r\n\r\n"
    assert txn.fields["response"] == "HTTP/2 200\r\ncontent-type: text/plain\r\n\r\nok"


def test_grpc_status_and_message_from_trailers() -> None:
    conv = Conversation()
    grpc = [("content-type", "application/grpc"), ("te", "trailers")]
    ok = conv.request("POST", "/helloworld.Greeter/SayHello", headers=grpc, body=b"\x00\x00\x00\x00\x02hi")
    conv.respond(ok, 200, b"\x00\x00\x00\x00\x02yo", headers=[("content-type", "application/grpc")],
                 trailers=[("grpc-status", "0"), ("grpc-message", "")])
    bad = conv.request("POST", "/helloworld.Greeter/Missing", headers=grpc, body=b"\x00\x00\x00\x00\x00")
    conv.respond(bad, 200, headers=[("content-type", "application/grpc"), ("grpc-status", "12"),
                                    ("grpc-message", "Method%20not%20found%3A%20Missing")])
    good, missing = http(steps_of(conv.steps), send_headers=["grpc-status"])
    assert good.fields["rpc"] == {"system": "grpc", "service": "helloworld.Greeter", "method": "SayHello",
                                  "grpc": {"status_code": 0}}
    assert good.status == "OK" and good.notes == []
    assert good.fields["http"]["response"]["headers"]["grpc-status"] == "0"  # a trailer, exported like a header
    assert missing.fields["rpc"]["grpc"] == {"status_code": 12}
    assert missing.status == "Error"
    assert missing.notes == ["Method not found: Missing"]  # published as error.message


def test_reset_stream_and_unanswered_request() -> None:
    conv = Conversation()
    cancelled = conv.request("GET", "/slow")
    conv.reset(C2S, cancelled)
    conv.request("GET", "/never")
    reset, unanswered = http(steps_of(conv.steps))
    assert reset.notes == ["Unmatched request", "Stream reset by the client (CANCEL)"]
    assert reset.status == "Error"
    assert unanswered.notes == ["Unmatched request", "HTTP/2 stream still open when the connection ended"]


def test_server_settings_before_the_client_preface() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/first")
    conv.respond(sid, 200)
    steps = conv.steps
    # the server's SETTINGS (its second step) goes out before the client's preface, as grpc servers do
    reordered = [steps[1], steps[0], *steps[2:]]
    [txn] = http(steps_of(reordered))
    assert txn.fields["url"]["path"] == "/first"
    assert counters()["parse_errors"] >= 0


def test_upgrade_h2c() -> None:
    upgrade, after = [t for t in http(steps_of(upgrade_conversation()), include_body_for=["text/plain"])
                      if t.fields["http"]["response"]["status_code"] != 101]
    assert upgrade.fields["http"]["version"] == "2"
    assert upgrade.fields["url"]["path"] == "/up"
    assert upgrade.fields["http"]["response"]["body"]["content"] == "upgraded body"
    assert upgrade.notes == ["Request sent as HTTP/1.1 with Upgrade: h2c"]
    assert after.fields["url"]["path"] == "/after" and after.fields["http"]["response"]["status_code"] == 204
    [switching] = [t for t in run_stream("http", steps_of(upgrade_conversation()), server_port=8080)
                   if t.fields["http"]["response"]["status_code"] == 101]
    assert switching.fields["http"]["version"] == "1.1"


def test_gap_stops_http2_decoding_with_a_note() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/cut")
    steps = steps_of(conv.steps)
    steps.append(Step(S2C, gap=40, ts_ns=5_000_000_000))
    later = conv.request("GET", "/later")
    conv.respond(later, 200)
    steps += steps_of(conv.steps[-2:])
    txns = run_stream("http", steps, server_port=8080)
    assert [t.fields["url"]["path"] for t in txns] == ["/cut"]
    assert "HTTP/2 decoding stopped: bytes lost, header compression state unknown" in txns[0].notes
    assert sid == 1


# -- connections handed over to TLS --------------------------------------------------------------------------

CLIENT_HELLO = b.record(b.HANDSHAKE, b.client_hello(ciphers=(0xC02F,), extensions=[b.sni("www.example.test")]))
SERVER_FLIGHT = b.record(b.HANDSHAKE, b.server_hello(cipher=0xC02F) + b.server_hello_done())
CLIENT_FINISH = b.record(b.HANDSHAKE, b.client_key_exchange()) + b.CHANGE_CIPHER_SPEC
SERVER_FINISH = b.CHANGE_CIPHER_SPEC + b.app_data()


@pytest.mark.parametrize("pipelined", [False, True])
def test_connect_then_tls(pipelined: bool) -> None:
    connect = b"CONNECT www.example.test:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n"
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"
    if pipelined:  # the client sends its ClientHello without waiting for the 200
        steps = [Step(C2S, connect + CLIENT_HELLO, ts_ns=1), Step(S2C, established, ts_ns=2)]
    else:
        steps = [Step(C2S, connect, ts_ns=1), Step(S2C, established, ts_ns=2), Step(C2S, CLIENT_HELLO, ts_ns=3)]
    steps += [Step(S2C, SERVER_FLIGHT, ts_ns=4), Step(C2S, CLIENT_FINISH, ts_ns=5), Step(S2C, SERVER_FINISH, ts_ns=6)]
    connect_txn, tls_txn = http(steps, trailing=False)
    assert connect_txn.fields["url"] == {"original": "www.example.test:443", "domain": "www.example.test", "port": 443}
    assert connect_txn.fields["query"] == "CONNECT www.example.test:443"
    assert connect_txn.notes == [] and connect_txn.domain is None
    assert tls_txn.type == "tls"
    assert tls_txn.fields["tls"]["client"]["server_name"] == "www.example.test"
    assert tls_txn.fields["tls"]["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert tls_txn.fields["tls"]["established"] is True


def test_connect_to_something_else_is_a_tunnel() -> None:
    steps = [Step(C2S, b"CONNECT mail.example.test:25 HTTP/1.1\r\n\r\n", ts_ns=1),
             Step(S2C, b"HTTP/1.1 200 OK\r\n\r\n", ts_ns=2),
             Step(S2C, b"220 mail ESMTP\r\n", ts_ns=3), Step(C2S, b"EHLO me\r\n", ts_ns=4)]
    [txn] = http(steps, trailing=False)
    assert txn.fields["url"]["port"] == 25


def test_refused_connect_stays_http() -> None:
    steps = [Step(C2S, b"CONNECT www.example.test:443 HTTP/1.1\r\n\r\n", ts_ns=1),
             Step(S2C, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", ts_ns=2),
             Step(C2S, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", ts_ns=3),
             Step(S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ts_ns=4)]
    refused, get = http(steps, trailing=False)
    assert refused.fields["http"]["response"]["status_code"] == 403 and get.fields["method"] == "GET"


def test_upgrade_to_tls() -> None:
    steps = [Step(C2S, b"OPTIONS * HTTP/1.1\r\nHost: h\r\nUpgrade: TLS/1.2\r\nConnection: Upgrade\r\n\r\n", ts_ns=1),
             Step(S2C, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
                  ts_ns=2),
             Step(C2S, CLIENT_HELLO, ts_ns=3), Step(S2C, SERVER_FLIGHT, ts_ns=4),
             Step(C2S, CLIENT_FINISH, ts_ns=5), Step(S2C, SERVER_FINISH, ts_ns=6)]
    upgrade, tls_txn = http(steps, trailing=False)
    assert upgrade.fields["http"]["response"]["status_code"] == 101
    assert tls_txn.type == "tls" and tls_txn.fields["tls"]["client"]["server_name"] == "www.example.test"


def test_preface_is_detected_from_the_first_bytes_only() -> None:
    """`PRI * HTTP/2.0` later on an HTTP/1.1 connection still switches: the preface is what it is."""
    conv = Conversation()
    sid = conv.request("GET", "/h2")
    conv.respond(sid, 200)
    h1 = [Step(C2S, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n", ts_ns=1),
          Step(S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ts_ns=2)]
    txns = run_stream("http", [*h1, *steps_of(conv.steps)], server_port=8080)
    assert [t.fields["url"]["path"] for t in txns] == ["/one", "/h2"]
    assert conv.steps[0][1].startswith(PREFACE)


def test_https_scheme_from_tls_plaintext() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/secure?x=1", authority="www.example.com", scheme="https")
    conv.respond(sid, 200)
    [txn] = run_stream("http", steps_of(conv.steps), server_port=443)
    assert txn.fields["url"]["scheme"] == "https"
    assert txn.fields["url"]["full"] == "https://www.example.com/secure?x=1"
    assert txn.fields["url"]["port"] == 443


def test_settings_header_recognised_however_it_is_cut() -> None:
    from agent.protocols.http.h2session import starts_with_settings

    settings = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"
    assert [starts_with_settings(settings[:n]) for n in range(1, 10)] == [None] * 8 + [True]
    assert starts_with_settings(b"HTTP/1.1 200") is False
    assert starts_with_settings(b"\x00\x00\x12\x01") is False  # HEADERS, not SETTINGS
    assert starts_with_settings(b"\x00\x00\x13\x04\x00\x00\x00\x00\x00") is False  # not a multiple of 6


def test_server_settings_first_fed_byte_by_byte_keeps_the_frame() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/first")
    conv.respond(sid, 200)
    before = counters()["h2_frames"]
    steps = steps_of([conv.steps[1], conv.steps[0], *conv.steps[2:]])
    run_stream("http", steps, split="bytewise", server_port=8080)
    whole = counters()["h2_frames"] - before
    run_stream("http", steps, split="whole", server_port=8080)
    assert counters()["h2_frames"] - before == 2 * whole  # the server's SETTINGS read in both
