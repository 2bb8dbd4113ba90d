"""HTTP sessions on literal bytes: transactions and Packetbeat's fields, fed whole, byte by byte and split at random."""

from __future__ import annotations

import gzip
import re
from typing import Any

import pytest

from agent import metrics
from agent.protocols.base import Transaction
from agent.protocols.http.url import split_host
from agent.transport.types import Direction
from tests.helpers.sessions import Step, assert_same_three_ways, run_stream
from tests.protocols.http import messages as m

REQ = Direction.TO_SERVER
RESP = Direction.TO_CLIENT


def req(data: bytes, ts: int = 1_000, **kw: Any) -> Step:
    return Step(REQ, data, ts, **kw)


def resp(data: bytes, ts: int = 2_000, **kw: Any) -> Step:
    return Step(RESP, data, ts, **kw)


def http(steps: list[Step], **kwargs: Any) -> list[Transaction]:
    return assert_same_three_ways("http", steps, **kwargs)


def get(fields: dict[str, Any], dotted: str) -> Any:
    value: Any = fields
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def counters() -> metrics.Counters:
    return metrics.register("test.http")


SIMPLE_GET = (b"GET /index.html?b=2&a=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.0\r\n"
              b"Accept: */*\r\n\r\n")
SIMPLE_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nServer: t\r\n\r\nhello"


def test_simple_transaction_fields() -> None:
    [txn] = http([req(SIMPLE_GET), resp(SIMPLE_OK)])
    assert (txn.type, txn.status, txn.ts_ns, txn.end_ns, txn.has_request) == ("http", "OK", 1_000, 2_000, True)
    assert (txn.client_bytes, txn.server_bytes) == (len(SIMPLE_GET), len(SIMPLE_OK))
    assert txn.domain == "www.example.com"
    assert txn.notes == []
    assert txn.fields == {
        "http": {
            "version": "1.1",
            "request": {"method": "GET", "bytes": len(SIMPLE_GET), "headers": {"content-length": 0}},
            "response": {"status_code": 200, "status_phrase": "ok", "bytes": len(SIMPLE_OK), "body": {"bytes": 5},
                         "headers": {"content-length": 5, "content-type": "text/html"}},
        },
        "url": {"scheme": "http", "domain": "www.example.com", "path": "/index.html", "extension": "html",
                "query": "a=1&b=2", "full": "http://www.example.com/index.html?a=1&b=2"},
        "user_agent": {"original": "curl/8.0"},
        "method": "GET",
        "query": "GET /index.html",
        "related": {"hosts": ["www.example.com"]},
    }


def test_pipelined_requests_are_each_their_own_event() -> None:
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
    responses = b"".join(b"HTTP/1.1 %d X\r\nContent-Length: 1\r\n\r\n%d" % (200 + i, i) for i in range(3))
    txns = http([req(requests), resp(responses)])
    assert [(t.fields["url"]["path"], t.fields["http"]["response"]["status_code"]) for t in txns] == \
        [("/0", 200), ("/1", 201), ("/2", 202)]
    assert all(t.status == "OK" for t in txns)


def test_keep_alive_sequence() -> None:
    steps = []
    for i in range(4):
        steps.append(req(b"GET /k%d HTTP/1.1\r\nHost: h\r\n\r\n" % i, ts=10 * i + 1))
        steps.append(resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ts=10 * i + 2))
    txns = http(steps)
    assert [(t.fields["query"], t.ts_ns, t.end_ns) for t in txns] == \
        [(f"GET /k{i}", 10 * i + 1, 10 * i + 2) for i in range(4)]


def test_expect_100_continue_gives_one_event() -> None:
    head = (b"PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n"
            b"Content-Type: text/plain\r\n\r\n")
    steps = [req(head, ts=1), resp(b"HTTP/1.1 100 Continue\r\n\r\n", ts=2), req(b"0123456789", ts=3),
             resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", ts=4)]
    before = counters()["interim_responses"]
    [txn] = http(steps, options={"send_all_headers": True})
    assert counters()["interim_responses"] == before + 5  # five runs: whole, bytewise, three random splits
    assert txn.notes == [] and txn.status == "OK"
    assert txn.fields["http"]["request"]["headers"]["expect"] == "100-continue"
    assert txn.fields["http"]["response"]["status_code"] == 201
    assert (txn.ts_ns, txn.end_ns) == (1, 4)


def test_100_continue_after_the_whole_request_is_still_dropped() -> None:
    head = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nab"
    [txn] = http([req(head), resp(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")])
    assert txn.fields["http"]["response"]["status_code"] == 200 and txn.notes == []


def test_early_response_pairs_with_the_request_still_uploading() -> None:
    head = b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"
    steps = [req(head + b"x" * 100), resp(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"),
             req(b"y" * 900), req(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
             resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    txns = http(steps)
    assert [(t.fields["query"], t.status, t.notes) for t in txns] == \
        [("PUT /big", "Error", []), ("GET /next", "OK", [])]


def test_http10_body_until_fin() -> None:
    body = b"a" * 3000
    steps = [req(b"GET / HTTP/1.0\r\n\r\n", ts=1, fin=True),
             resp(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + body, ts=2, fin=True)]
    [txn] = http(steps, expire=False)
    assert txn.fields["http"]["version"] == "1.0"
    assert txn.fields["http"]["response"]["headers"]["content-length"] == 3000
    assert txn.fields["http"]["response"]["body"]["bytes"] == 3000
    assert txn.notes == []


def test_gap_in_http10_body_then_fin_is_published_with_a_note() -> None:
    data2 = (b"HTTP/1.0 200 OK\r\nDate: Tue, 14 Aug 2012 22:31:45 GMT\r\nContent-Type: text/html; charset=UTF-8\r\n"
             b"Content-Encoding: gzip\r\n\r\n" + b"x" * 20)
    steps = [req(b"GET / HTTP/1.0\r\n\r\n", fin=True), resp(data2), Step(RESP, gap=10, ts_ns=3), resp(b"", fin=True)]
    [txn] = http(steps, expire=False)
    assert txn.notes == ["Packet loss while capturing the response"]
    assert txn.status == "OK"


def test_gap_in_content_length_body_publishes_with_a_note() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n"
    steps = [req(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n"), resp(head + b"a" * 1000), Step(RESP, gap=2000, ts_ns=3),
             resp(b"b" * 1000, ts=4)]
    [txn] = http(steps, expire=False)
    assert txn.notes == ["Packet loss while capturing the response"] and txn.status == "OK"
    assert txn.fields["http"]["response"]["bytes"] == len(head) + 4000
    assert txn.end_ns == 2_000


def test_gap_in_headers_drops_the_partial_message_and_resyncs() -> None:
    steps = [req(b"GET /a HTTP/1.1\r\nHost: h\r\nUser-"), Step(REQ, gap=30, ts_ns=1),
             req(b"rest-of-a-lost-line\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
             resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    [txn] = http(steps)
    assert txn.fields["query"] == "GET /b" and txn.status == "OK"


def test_connection_seen_mid_stream_resynchronises() -> None:
    steps = [resp(b"e of an earlier response body\r\n</html>\r\n"),
             req(b"ders: lost\r\n\r\nGET /seen HTTP/1.1\r\nHost: h\r\n\r\n"),
             resp(b"HTTP/1.1 204 No Content\r\n\r\n")]
    [txn] = http(steps)
    assert txn.fields["query"] == "GET /seen" and txn.fields["http"]["response"]["status_code"] == 204


def test_unmatched_response_is_published_at_once() -> None:
    data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nnothing"
    out = run_stream("http", [resp(data)], expire=False)
    [txn] = out
    assert (txn.has_request, txn.status, txn.notes) == (False, "Error", ["Unmatched response"])
    assert txn.ts_ns == txn.end_ns == 2_000
    assert "url" not in txn.fields and "method" not in txn.fields
    assert txn.fields["http"] == {"response": {"status_code": 404, "status_phrase": "not found", "bytes": len(data),
                                               "body": {"bytes": 7}, "headers": {"content-length": 7}}}


def test_unmatched_request_on_expiry_with_host_port_mismatch() -> None:
    steps = [req(b"HEAD /_cat/shards HTTP/1.1\r\nHost: myhost:9200\r\n\r\n")]
    assert run_stream("http", steps, expire=False) == []
    [txn] = run_stream("http", steps)
    assert txn.notes == ["Unmatched request", "Host header port number mismatch"]
    assert txn.status == "Error" and txn.end_ns is None
    assert txn.domain == "myhost"
    assert txn.fields["url"]["full"] == "http://myhost:9200/_cat/shards"


@pytest.mark.parametrize(("host", "port", "domain", "full"), [
    ("elasticsearch", 80, "elasticsearch", "http://elasticsearch/_cat/shards"),
    ("elasticsearch:9200", 9200, "elasticsearch", "http://elasticsearch:9200/_cat/shards"),
    ("127.0.0.1", 80, None, "http://127.0.0.1/_cat/shards"),
    ("127.0.0.1:9200", 9200, None, "http://127.0.0.1:9200/_cat/shards"),
    ("fd00::42", 80, None, "http://[fd00::42]/_cat/shards"),
    ("[fd00::42]", 80, None, "http://[fd00::42]/_cat/shards"),
    ("[::1]:9200", 9200, None, "http://[::1]:9200/_cat/shards"),
])
def test_host_header_forms(host: str, port: int, domain: str | None, full: str) -> None:
    steps = [req(b"HEAD /_cat/shards HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())]
    [txn] = run_stream("http", steps, server_port=port)
    assert txn.notes == ["Unmatched request"]
    assert txn.domain == domain
    assert txn.fields["url"]["full"] == full
    assert ("port" in txn.fields["url"]) == (port != 80)
    if domain is None:
        assert txn.fields["related"]["ip"] == [split_host(host)[0]]


@pytest.mark.parametrize(("path", "extension"), [("/files.zip", "zip"), ("/files", None)])
def test_url_extension(path: str, extension: str | None) -> None:
    [txn] = run_stream("http", [req(b"HEAD %s HTTP/1.1\r\nHost: abc.com\r\n\r\n" % path.encode())])
    assert txn.fields["url"]["full"] == f"http://abc.com{path}"
    assert txn.fields["url"].get("extension") == extension


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_status_code_400_and_above_is_an_error(status: int) -> None:
    [txn] = http([req(SIMPLE_GET), resp(b"HTTP/1.1 %d Bad\r\nContent-Length: 0\r\n\r\n" % status)])
    assert txn.status == "Error" and txn.notes == []


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 \r\n", b"HTTP/1.1 200\r\n"])
def test_status_line_without_phrase_has_no_status_phrase(status_line: bytes) -> None:
    [txn] = http([req(SIMPLE_GET), resp(status_line + b"Content-Length: 0\r\n\r\n")])
    assert txn.fields["http"]["response"]["status_code"] == 200
    assert "status_phrase" not in txn.fields["http"]["response"]


def test_no_body_for_head_204_304_keeps_the_stream_in_step() -> None:
    steps = [req(b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
                 b"GET /c HTTP/1.1\r\nHost: h\r\n\r\nGET /d HTTP/1.1\r\nHost: h\r\n\r\n"),
             resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                  b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
                  b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")]
    txns = http(steps)
    assert [(t.fields["query"], t.fields["http"]["response"]["status_code"]) for t in txns] == \
        [("HEAD /a", 200), ("GET /b", 204), ("GET /c", 304), ("GET /d", 200)]


def test_switching_protocols_makes_a_tunnel() -> None:
    upgrade = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    steps = [req(upgrade), resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
             req(b"\x81\x85\x00\x00\x00\x00hello"), resp(b"\x88\x00")]
    before = counters()["tunnels"], counters()["parse_errors"]
    [txn] = http(steps)
    assert txn.fields["http"]["response"]["status_code"] == 101
    assert counters()["tunnels"] == before[0] + 5
    assert counters()["parse_errors"] == before[1]  # the WebSocket frames are not parsed as HTTP


def test_connect_tunnel() -> None:
    steps = [req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
             resp(b"HTTP/1.1 200 Connection established\r\n\r\n"),
             req(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), resp(b"\x16\x03\x03\x00\x5d")]
    [txn] = http(steps, server_port=3128)
    # the tunnel's target is the URL; the connection's destination is the proxy, not example.com
    assert txn.fields["method"] == "CONNECT" and txn.domain is None
    assert txn.fields["url"] == {"original": "example.com:443", "domain": "example.com", "port": 443}
    assert txn.notes == []


def test_refused_connect_resyncs_the_clients_held_bytes_itself() -> None:
    """The client's bytes held behind a refused CONNECT are parsed on the server's feed: their errors stay theirs."""
    from agent.protocols.base import SessionContext
    from agent.protocols.http.plugin import HttpSession
    from tests.helpers.sessions import conn_info, protocol_config

    out: list[Transaction] = []
    ctx = SessionContext("http", protocol_config("http"), conn_info(3128), out.append, metrics.register("test.http"))
    session = HttpSession(ctx)
    session.feed(Direction.TO_SERVER, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"
                 b"\x00junk\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n", 1_000)
    session.feed(Direction.TO_CLIENT, b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                 2_000)  # raised a ParseError of the client's direction from the server's feed
    session.feed(Direction.TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3_000)
    assert [(t.fields["method"], t.fields["http"]["response"]["status_code"]) for t in out] == [
        ("CONNECT", 407), ("GET", 200)]
    assert out[1].fields["url"]["path"] == "/next"


# -- options -------------------------------------------------------------------------------------------


POST_FORM = (b"POST /register HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: t\r\n"
             b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 45\r\n"
             b"Cookie: a=1; B=\"two\"; flag\r\nX-Forwarded-For: 89.247.39.104, 10.0.0.1\r\n\r\n"
             b"user=monica&address=anklamerstr.14b&pass=abc")
POST_OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 4\r\n"
           b"Set-Cookie: s=1; Path=/\r\nSet-Cookie: t=2\r\n\r\ndone")


def test_form_parameters_go_to_url_query() -> None:
    [txn] = http([req(POST_FORM), resp(POST_OK)])
    assert txn.fields["url"]["query"] == "address=anklamerstr.14b&pass=abc&user=monica"
    assert txn.fields["query"] == "POST /register"
    assert txn.fields["http"]["request"]["body"] == {"bytes": 45}


def test_hide_keywords_in_query_form_body_and_raw_request() -> None:
    get_ = b"GET /login?user=monica&PASS=secret HTTP/1.1\r\nHost: h\r\n\r\n"
    options = {"hide_keywords": ["pass", "password"], "send_request": True, "include_body_for": ["form"]}
    for request in (get_, POST_FORM.replace(b"pass=abc", b"pass=sec")):
        [txn] = http([req(request), resp(POST_OK)], options=options)
        assert "secret" not in repr(txn.fields) and "pass=sec" not in repr(txn.fields)
        assert "xxxxx" in txn.fields["url"]["query"]
    assert txn.fields["http"]["request"]["body"]["content"] == "user=monica&address=anklamerstr.14b&pass=xxxxx"


def test_uri_with_raw_space_and_hidden_password() -> None:
    [txn] = run_stream("http", [req(m.LOGIN_URI_WITH_SPACE)], options={"hide_keywords": ["password", "pass"]})
    assert txn.fields["url"]["path"] == "/test"
    assert "two secret" not in txn.fields["url"]["query"] and "two+secret" not in txn.fields["url"]["query"]
    assert txn.fields["url"]["query"] == "pass=xxxxx&password=xxxxx&username=ME"


@pytest.mark.parametrize(("data", "keywords", "contains", "absent"), [
    (m.LOGIN_POST, ["password"], "username=ME", "secret"),
    (m.LOGIN_GET_WITH_BODY, ["password"], "password=xxxxx", "secret"),
])
def test_censor_password(data: bytes, keywords: list[str], contains: str, absent: str) -> None:
    [txn] = run_stream("http", [req(data)], options={"hide_keywords": keywords})
    assert contains in txn.fields["url"]["query"] and absent not in txn.fields["url"]["query"]


def test_send_headers_list_is_case_insensitive_and_always_has_length_and_type() -> None:
    [txn] = http([req(POST_FORM), resp(POST_OK)], options={"send_headers": ["User-Agent", "COOKIE"]})
    assert txn.fields["http"]["request"]["headers"] == {
        "content-length": 45, "content-type": "application/x-www-form-urlencoded",
        "user-agent": "t", "cookie": 'a=1; B="two"; flag'}
    assert txn.fields["http"]["response"]["headers"] == {"content-length": 4,
                                                         "content-type": "text/html; charset=utf-8"}


def test_send_all_headers_and_split_cookie() -> None:
    [txn] = http([req(POST_FORM), resp(POST_OK)], options={"send_all_headers": True, "split_cookie": True})
    request_headers = txn.fields["http"]["request"]["headers"]
    assert request_headers["cookie"] == {"a": "1", "b": "two"}
    assert request_headers["host"] == "www.example.com"
    assert txn.fields["http"]["response"]["headers"]["set-cookie"] == {"s": "1", "path": "/, t=2"}
    [txn] = http([req(POST_FORM), resp(POST_OK)], options={"send_all_headers": True})
    assert txn.fields["http"]["response"]["headers"]["set-cookie"] == "s=1; Path=/, t=2"


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-forwarded-for"])
def test_real_ip_header(header: str) -> None:
    [txn] = http([req(POST_FORM), resp(POST_OK)], options={"real_ip_header": header})
    assert txn.fields["network"] == {"forwarded_ip": "89.247.39.104"}
    assert txn.fields["related"]["ip"] == ["89.247.39.104"]


def test_real_ip_header_that_is_not_an_address_is_left_out() -> None:
    bad = POST_FORM.replace(b"89.247.39.104", b"unknown")
    [txn] = http([req(bad), resp(POST_OK)], options={"real_ip_header": "X-Forwarded-For"})
    assert "network" not in txn.fields


@pytest.mark.parametrize(("request_ct", "response_ct", "has_request", "has_response"), [
    ("none", "none", False, False),
    ("both", "other", True, False),
    ("other", "both", False, True),
    ("both", "both", True, True),
    ("req1", "none", True, False),
    ("none", "req1", False, False),
    ("req2", "resp1", True, True),
    ("none", "resp2", False, True),
    ("resp3", "req2", False, False),
])
def test_include_body_for_per_direction(request_ct: str, response_ct: str, has_request: bool,
                                        has_response: bool) -> None:
    request = b"PUT /node HTTP/1.1\r\nHost: server\r\nContent-Length: 12\r\nContent-Type: %s\r\n\r\nrequest_body"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: %s\r\n\r\ndone."
    options = {"include_body_for": ["both"], "include_request_body_for": ["req1", "req2"],
               "include_response_body_for": ["resp1", "resp2", "resp3"]}
    [txn] = http([req(request % request_ct.encode()), resp(response % response_ct.encode())], options=options)
    assert (get(txn.fields, "http.request.body.content") is not None) == has_request
    assert (get(txn.fields, "http.response.body.content") is not None) == has_response
    if has_response:
        assert txn.fields["http"]["response"]["body"] == {"bytes": 5, "content": "done."}


def test_send_request_and_response_raw_text() -> None:
    request = b"POST / HTTP/1.1\r\n\r\n"
    response_head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\n"
    [txn] = http([req(request), resp(response_head + b"not found!")],
                 options={"send_request": True, "send_response": True})
    assert txn.fields["request"] == request.decode()
    assert txn.fields["response"] == response_head.decode()
    [txn] = http([req(request), resp(response_head + b"not found!")],
                 options={"send_response": True, "include_response_body_for": [""]})
    assert txn.fields["response"] == (response_head + b"not found!").decode()
    assert "request" not in txn.fields


def test_redact_authorization() -> None:
    [txn] = http([req(m.SOAP_WITH_AUTH), resp(SIMPLE_OK)],
                 options={"redact_authorization": True, "send_all_headers": True, "send_request": True})
    headers = txn.fields["http"]["request"]["headers"]
    assert headers["authorization"] == "*" and headers["proxy-authorization"] == "*"
    assert re.search(r"(?m)^Authorization:\*+\r$", txn.fields["request"])
    assert re.search(r"(?m)^Proxy-Authorization:\*+\r$", txn.fields["request"])
    assert "ZHVtbXk" not in txn.fields["request"]
    assert "user" not in txn.fields


def test_redact_authorization_raw_only() -> None:
    [txn] = http([req(m.CURL_POST_EMPTY), resp(SIMPLE_OK)],
                 options={"redact_authorization": True, "send_request": True})
    assert "uthorization:*" in txn.fields["request"]
    assert "Company" not in txn.fields["request"]


def test_basic_auth_user_name() -> None:
    [txn] = http([req(m.SOAP_WITH_AUTH), resp(SIMPLE_OK)])
    assert txn.fields["user"] == {"name": "dummy"}
    assert txn.fields["related"]["user"] == ["dummy"]


def test_redact_headers() -> None:
    [txn] = http([req(m.SOAP_REDACT_HEADER), resp(SIMPLE_OK)],
                 options={"send_all_headers": True, "redact_headers": ["header-to-redact", "should-not-exist"],
                          "redact_authorization": True})
    headers = txn.fields["http"]["request"]["headers"]
    assert headers["header-to-redact"] == "REDACTED"
    assert headers["accept-encoding"] == "gzip"
    assert "should-not-exist" not in headers


def test_max_message_size_truncates_and_still_publishes() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/binary\r\nContent-Length: 2000\r\n\r\n"
    [txn] = http([req(SIMPLE_GET), resp(head + b"z" * 2000)],
                 options={"include_body_for": ["binary"], "max_message_size": 1024})
    content = txn.fields["http"]["response"]["body"]["content"]
    assert 500 < len(content) < 2000 and len(content) == 1024 - len(head)
    assert txn.fields["http"]["response"]["bytes"] == len(head) + 2000
    assert txn.fields["http"]["response"]["headers"]["content-length"] == 2000


ENCODED = [
    (b"Transfer-Encoding: chunked\r\n\r\n4\r\nABCD\r\n0\r\n\r\n", "ABCD", None),
    (b"Transfer-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(m.GZIP_BODY) + m.GZIP_BODY, "hola\n", None),
    (b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(m.GZIP_BODY) + m.GZIP_BODY, "hola\n", None),
    (b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(m.GZIP_BODY) + m.GZIP_BODY
     + b"\r\n0\r\n\r\n", "hola\n", None),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n" % len(m.GZIP_BODY) + m.GZIP_BODY + b"\r\n0\r\n\r\n",
     "hola\n", None),
    (b"Transfer-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(m.DEFLATE_BODY) + m.DEFLATE_BODY,
     "hola\n", None),
    (b"Transfer-Encoding: x-gzip\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
     % len(m.GZIP_OF_DEFLATE) + m.GZIP_OF_DEFLATE, "hola\n", None),
    (b"Transfer-Encoding: x-deflate, gzip\r\nContent-Length: %d\r\n\r\n" % len(m.GZIP_OF_DEFLATE)
     + m.GZIP_OF_DEFLATE, "hola\n", None),
    (b"Content-Encoding: deflate, gzip\r\nContent-Length: %d\r\n\r\n" % len(m.GZIP_OF_DEFLATE)
     + m.GZIP_OF_DEFLATE, "hola\n", None),
    (b"Content-Encoding: x-deflate, x-gzip\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(m.GZIP_OF_DEFLATE)
     + m.GZIP_OF_DEFLATE + b"\r\n0\r\n\r\n", "hola\n", None),
    (b"Content-Encoding: deflate, identity\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n"
     % len(m.GZIP_OF_DEFLATE) + m.GZIP_OF_DEFLATE + b"\r\n0\r\n\r\n", "hola\n", None),
    (b"Content-Encoding: sdch\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(m.GZIP_OF_DEFLATE)
     + m.GZIP_OF_DEFLATE + b"\r\n0\r\n\r\n", None, "unable to decode body using sdch encoding: decoder not found"),
]


@pytest.mark.parametrize(("response", "body", "note"), ENCODED)
def test_body_encodings(response: bytes, body: str | None, note: str | None) -> None:
    [txn] = http([req(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"), resp(b"HTTP/1.1 200 OK\r\n" + response)],
                 options={"include_response_body_for": [""]})
    assert get(txn.fields, "http.response.body.content") == body
    assert txn.notes == ([note] if note else [])


def test_decoding_disabled_keeps_the_raw_body() -> None:
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
                % len(m.DEFLATE_BODY) + m.DEFLATE_BODY)
    [txn] = http([req(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"), resp(response)],
                 options={"include_response_body_for": [""], "decode_body": False})
    assert txn.fields["http"]["response"]["body"]["content"] == m.DEFLATE_BODY.decode("utf-8", "replace")


def test_gzip_response_with_include_body_for() -> None:
    page = b"<html>" + b"compressible " * 200 + b"</html>"
    packed = gzip.compress(page)
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n" % len(packed) + packed)
    [txn] = http([req(SIMPLE_GET), resp(response)], options={"include_body_for": ["text/html"]})
    assert txn.fields["http"]["response"]["body"] == {"bytes": len(page), "content": page.decode()}
    assert txn.fields["http"]["response"]["headers"]["content-length"] == len(packed)


def test_request_sent_by_the_port_side_is_reversed() -> None:
    steps = [resp(b"GET /odd HTTP/1.1\r\nHost: h\r\n\r\n"), req(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    [txn] = http(steps)
    assert txn.conn.client.port == 80 and txn.conn.server.port == 40000


def test_queue_of_pipelined_requests_is_bounded() -> None:
    from agent.protocols.http.plugin import MAX_QUEUED_REQUESTS

    many = b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n" * (MAX_QUEUED_REQUESTS + 5)
    out = run_stream("http", [req(many)], expire=False)
    assert len(out) == 5 and all(t.notes == ["Unmatched request"] for t in out)


def test_long_targets_get_the_same_url_fields_and_stay_out_of_the_cache() -> None:
    from agent.protocols.http import fields as http_event

    long_path = "/" + "a" * 3000
    ok = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    short = http([req(b"GET /x?b=2&a=1 HTTP/1.1\r\nHost: h.test:8080\r\n\r\n"), ok])
    before = len(http_event.TARGET_CACHE)
    long = http([req(f"GET {long_path}?b=2&a=1 HTTP/1.1\r\nHost: h.test:8080\r\n\r\n".encode()), ok])
    assert len(http_event.TARGET_CACHE) == before
    assert get(long[0].fields, "url.path") == long_path
    assert get(long[0].fields, "url.full") == f"http://h.test:8080{long_path}?a=1&b=2"
    assert get(short[0].fields, "url.full") == "http://h.test:8080/x?a=1&b=2"
    assert get(long[0].fields, "url.port") == get(short[0].fields, "url.port") == 8080


BARE_LF_NOTE = "Lines ended by a bare LF (accepted, RFC 9112 section 2.2)"


@pytest.mark.parametrize(("request_bytes", "response_bytes"), [
    (SIMPLE_GET, SIMPLE_OK.replace(b"\r\n", b"\n")),  # a server with bare LF throughout
    (SIMPLE_GET.replace(b"\r\n", b"\n"), SIMPLE_OK),  # a client with bare LF throughout
    # mixed: CRLF status line, LF header lines, CRLF blank line; the body holds CRLF CRLF
    (SIMPLE_GET, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\nContent-Length: 9\n\r\nab\r\n\r\ncd"),
])
def test_bare_lf_line_endings_are_accepted_with_a_note(request_bytes: bytes, response_bytes: bytes) -> None:
    [txn] = http([req(request_bytes), resp(response_bytes)], options={"send_all_headers": True})
    assert txn.has_request and txn.status == "OK" and txn.notes == [BARE_LF_NOTE]
    assert (txn.client_bytes, txn.server_bytes) == (len(request_bytes), len(response_bytes))
    assert get(txn.fields, "http.response.status_code") == 200
    assert get(txn.fields, "http.response.headers.content-type") == "text/html"
    assert get(txn.fields, "url.path") == "/index.html"
    body_length = int(re.search(rb"Content-Length: (\d+)", response_bytes).group(1))  # type: ignore[union-attr]
    assert get(txn.fields, "http.response.body.bytes") == body_length


def test_bare_lf_in_chunked_framing_and_trailers() -> None:
    response = (b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
                b"5\nhello\n6;ext=1\r\n world\n0\nExpires: never\n\n")
    following = SIMPLE_OK
    [first, second] = http([req(SIMPLE_GET), resp(response), req(SIMPLE_GET, ts=3_000), resp(following, ts=4_000)])
    assert first.notes == [BARE_LF_NOTE] and first.server_bytes == len(response)
    assert get(first.fields, "http.response.body.bytes") == 11
    assert second.notes == [] and second.server_bytes == len(following)


def test_lf_inside_a_crlf_field_value_becomes_a_space() -> None:
    response = b"HTTP/1.1 200 OK\r\nX-A: line\nfeed\r\nContent-Length: 0\r\n\r\n"
    [txn] = http([req(SIMPLE_GET), resp(response)], options={"send_all_headers": True})
    assert txn.has_request and txn.status == "OK" and txn.notes == [BARE_LF_NOTE]
    assert get(txn.fields, "http.response.headers.x-a") == "line feed"
    assert txn.server_bytes == len(response)
