"""Packetbeat's HTTP pcaps through the real CLI (`pktbeat run -t -e -I`), asserting event fields."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.replay import corpus, replay


def http_events(pcap: str, **options: Any) -> list[dict[str, Any]]:
    options.setdefault("ports", [80])
    events, _ = replay(corpus(pcap), [{"type": "http", **options}])
    return [e for e in events if e.get("type") == "http"]


def test_minitwit_chunked_response_and_statuses() -> None:
    events = http_events("http_minitwit.pcap", send_all_headers=True)
    assert [e["http"]["response"]["status_code"] for e in events] == [200, 304, 404]
    assert [e["status"] for e in events] == ["OK", "OK", "Error"]
    assert [(e["source"]["bytes"], e["destination"]["bytes"]) for e in events] == \
        [(364, 1000), (471, 234), (289, 396)]
    first = events[0]
    assert first["http"]["response"]["headers"]["transfer-encoding"] == "chunked"
    assert first["http"]["response"]["body"]["bytes"] == first["http"]["response"]["headers"]["content-length"]
    assert first["url"]["full"] == "http://192.168.1.110/"
    assert first["event"]["duration"] > 0
    assert events[1]["http"]["request"]["referrer"] == "http://192.168.1.110/"
    assert all(e["network"]["protocol"] == "http" and e["network"]["transport"] == "tcp" for e in events)


def test_basic_auth_user_and_golden_fields() -> None:
    [event] = http_events("http_basicauth.pcap", send_all_headers=True)
    assert event["user"] == {"name": "simplesimon"}
    assert event["related"]["user"] == ["simplesimon"]
    assert event["related"]["hosts"] == ["www.example.com"]
    assert event["destination"]["domain"] == "www.example.com"
    assert event["http"]["request"]["headers"]["authorization"] == "Basic c2ltcGxlc2ltb246YWJjZDEyMys="
    assert event["http"]["response"]["headers"]["etag"] == '"359670651"'
    assert event["http"]["response"]["body"] == {"bytes": 1270}
    assert (event["source"]["bytes"], event["destination"]["bytes"]) == (130, 1591)


def test_basic_auth_redacted() -> None:
    [event] = http_events("http_basicauth.pcap", redact_authorization=True, send_request=True,
                          send_all_headers=True)
    assert event["http"]["request"]["headers"]["authorization"] == "*"
    assert "Authorization:****" in event["request"]
    assert "user" not in event


def test_large_body_truncated_by_max_message_size() -> None:
    [event] = http_events("http_get_2k_file.pcap", ports=[8000], include_body_for=["binary"],
                          max_message_size=1024)
    content = event["http"]["response"]["body"]["content"]
    assert 500 < len(content) < 1024
    assert event["http"]["response"]["headers"]["content-length"] == 2048


def test_gap_inside_a_body_keeps_the_event() -> None:
    [event] = http_events("gap_in_stream.pcap", ports=[8000])
    assert event["status"] == "OK"
    assert event["error"]["message"] == "Packet loss while capturing the response"


def test_http10_connection_close() -> None:
    [event] = http_events("http_10_connection_close.pcap", ports=[8000])
    assert event["http"]["response"]["headers"]["content-length"] == 11422
    assert event["http"]["response"]["body"]["bytes"] == 11422  # no Content-Length: the body ran to FIN
    assert event["status"] == "OK" and "error" not in event


def test_expect_100_continue_one_event() -> None:
    [event] = http_events("http_100_continue.pcap", ports=[9200], send_all_headers=True)
    assert event["http"]["request"]["headers"]["expect"] == "100-continue"
    assert event["http"]["response"]["status_code"] == 200
    assert "error" not in event


def test_hidden_post_parameters() -> None:
    [event] = http_events("hide_secret_POST.pcap", hide_keywords=["pass", "password"])
    assert event["url"]["query"] == "pass=xxxxx&user=monica"
    assert "secret" not in repr(event)


@pytest.mark.parametrize(("pcap", "port", "header"), [
    ("http_realip.pcap", 8002, "X-Forward-For"),
    ("http_x_forwarded_for.pcap", 80, "X-Forwarded-For"),
])
def test_forwarded_ip(pcap: str, port: int, header: str) -> None:
    [event] = http_events(pcap, ports=[port], real_ip_header=header)
    assert event["network"]["forwarded_ip"] == "89.247.39.104"
    assert "89.247.39.104" in event["related"]["ip"]


def test_split_cookies_of_a_wsgi_app() -> None:
    [event] = http_events("wsgi_loopback.pcap", ports=[8888], send_all_headers=True, split_cookie=True)
    assert len(event["http"]["request"]["headers"]["cookie"]) == 6
    assert len(event["http"]["response"]["headers"]["set-cookie"]) == 4
    assert event["http"]["response"]["status_phrase"] == "ok"


def test_json_body_sent_as_a_form() -> None:
    [event] = http_events("http_post_json.pcap", ports=[9200], include_body_for=["x-www-form-urlencoded", "json"])
    assert event["url"]["query"] == "%7B+%22query%22%3A+%7B+%22match_all%22%3A+%7B%7D%7D%7D%0A="
    assert event["http"]["response"]["body"]["content"]


def test_vlan_tagged_http() -> None:
    [event] = http_events("http_over_vlan.pcap", ports=[8080])
    assert event["query"] == "GET /jpetstore/"


def test_http_events_never_hold_nulls() -> None:
    """HTTP declares its fields null-free (the event builder skips its null walk): check it on every capture."""
    from tests.helpers.inprocess import events_for, read_packets

    def nulls(value: object, path: str = "") -> list[str]:
        if value is None:
            return [path]
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
        return []

    options = {"send_request": True, "send_response": True, "send_all_headers": True, "split_cookie": True,
               "include_body_for": ["text", "json", "html"], "real_ip_header": "X-Forwarded-For",
               "hide_keywords": ["pass", "password"], "keep_null": True}
    checked = 0
    for pcap, port in (("http_minitwit.pcap", 80), ("wsgi_loopback.pcap", 8888), ("http_post.pcap", 80),
                       ("http_basicauth.pcap", 80), ("http_unmatched.pcap", 8080), ("gap_in_stream.pcap", 8000),
                       ("http_realip.pcap", 8002), ("hide_secret_POST.pcap", 80), ("http_100_continue.pcap", 9200),
                       ("http_get_2k_file.pcap", 8000), ("http_10_connection_close.pcap", 8000)):
        events = events_for(read_packets(corpus(pcap)), [{"type": "http", "ports": [port], **options}])
        for event in events:
            assert nulls(event) == [], f"{pcap}: null at {nulls(event)}"
        checked += len(events)
    assert checked >= 15
