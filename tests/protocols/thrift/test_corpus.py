"""Packetbeat's Thrift pcaps through the CLI (`pktbeat run -t -I`), checking the published events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.replay import corpus, replay

IDL = Path(__file__).parent / "idl"
TUTORIAL_IDL = [str(IDL / "tutorial.thrift"), str(IDL / "shared.thrift")]

TUTORIAL_CALLS = [
    ("ping", "()", ""), ("add", "(1: 1, 2: 1)", "2"), ("add16", "(1: 1, 2: 1)", "2"),
    ("add64", "(1: 1, 2: 1)", "2"), ("add_doubles", "(1: 1.2, 2: 1.3)", "2.5"), ("echo_bool", "(1: true)", "true"),
    ("echo_string", '(1: "hello")', '"hello"'), ("echo_binary", '(1: "world")', '"world"'),
    ("echo_list", "(1: [1, 2, 3])", "[1, 2, 3]"), ("echo_set", "(1: {1, 2, 3})", "{1, 2, 3}"),
    ("echo_map", '(1: {"a": 1, "c": 3, "b": 2})', '{"a": 1, "c": 3, "b": 2}'),
    ("calculate", "(1: 1, 2: (1: 1, 2: 0, 3: 4))", ""), ("calculate", "(1: 1, 2: (1: 15, 2: 10, 3: 2))", "5"),
    ("getStruct", "(1: 1)", '(1: 1, 2: "5")'), ("zip", "()", None), ("zip", "()", None), ("ping", "()", ""),
]


def thrift(**options: Any) -> list[dict[str, Any]]:
    return [{"type": "thrift", "ports": [9090], **options}]


def check_tutorial(events: list[dict[str, Any]]) -> None:
    assert [(e["method"], e["thrift"]["params"], e["thrift"].get("return_value")) for e in events] == TUTORIAL_CALLS
    assert all(e["type"] == "thrift" and e["event"]["dataset"] == "thrift" for e in events)
    assert all(e["destination"]["port"] == 9090 and e["source"]["bytes"] > 0 for e in events)
    assert all("bytes" in e["destination"] for i, e in enumerate(events) if i not in (14, 15))
    assert not any("bytes" in events[i]["destination"] or "end" in events[i]["event"] for i in (14, 15))
    error = events[11]
    assert error["status"] == "Error" and error["thrift"]["exceptions"] == '(1: (1: 4, 2: "Cannot divide by 0"))'
    assert [e["status"] for e in events].count("Error") == 1


def test_tutorial_socket_with_request_and_response() -> None:
    events, _ = replay(corpus("thrift_tutorial.pcap"), thrift(send_request=True, send_response=True))
    check_tutorial(events)
    assert events[0]["request"] == "ping()" and events[2]["query"] == "add16(1: 1, 2: 1)"
    assert events[11]["response"] == 'Exceptions: (1: (1: 4, 2: "Cannot divide by 0"))'
    assert events[4]["response"] == "2.5" and events[0]["path"] == ""
    assert events[1]["event"]["duration"] > 0 and events[1]["network"]["protocol"] == "thrift"


def test_tutorial_defaults_send_no_request_or_response() -> None:
    events, _ = replay(corpus("thrift_tutorial.pcap"), thrift())
    check_tutorial(events)
    assert not any("request" in e or "response" in e for e in events)


def test_tutorial_framed() -> None:
    events, _ = replay(corpus("thrift_tutorial_framed_transport.pcap"), thrift(transport_type="framed"))
    check_tutorial(events)
    assert events[1]["source"]["bytes"] == 30 and events[1]["destination"]["bytes"] == 23  # frame sizes


def test_tutorial_with_idl() -> None:
    events, _ = replay(corpus("thrift_tutorial.pcap"), thrift(idl_files=TUTORIAL_IDL))
    assert len(events) == 17
    assert [e["thrift"]["params"] for e in events[:7]] == [
        "()", "(num1: 1, num2: 1)", "(num1: 1, num2: 1)", "(num1: 1, num2: 1)", "(num1: 1.2, num2: 1.3)",
        "(b: true)", '(s: "hello")']
    assert {e["thrift"]["service"] for e in events} == {"Calculator", "SharedService"}
    assert events[13]["thrift"]["service"] == events[13]["path"] == "SharedService"
    assert events[11]["thrift"]["exceptions"] == '(ouch: (1: 4, 2: "Cannot divide by 0"))'
    assert events[11]["query"] == "calculate(logid: 1, w: (1: 1, 2: 0, 3: 4))"


def test_integration_with_thrift_test_idl() -> None:
    events, _ = replay(corpus("thrift_integration.pcap"),
                       thrift(idl_files=[str(IDL / "ThriftTest.thrift")], send_request=True))
    assert len(events) == 26
    assert all(e["thrift"]["service"] == "ThriftTest" and e["request"] for e in events)
    assert (events[0]["method"], events[0]["thrift"]["params"], events[0]["thrift"]["return_value"]) == (
        "testByte", "(thing: 63)", "63")
    assert (events[5]["method"], events[5]["thrift"]["params"]) == ("testEnum", "(thing: 5)")
    oneway = events[17]
    assert (oneway["method"], oneway["thrift"]["params"]) == ("testOneway", "(secondsToSleep: 1)")
    assert "return_value" not in oneway["thrift"] and "bytes" not in oneway["destination"]
    text = '"' + "Python" * 20 + '"'
    assert events[21]["thrift"]["params"] == f"(thing: {text})" and events[21]["thrift"]["return_value"] == text
    exceptions = [e for e in events if e["status"] == "Error"]
    assert exceptions and all(e["method"].startswith("testException") for e in exceptions)
    assert all(e["thrift"]["exceptions"].startswith("(err1: ") for e in exceptions)


def test_echo_binary_framed() -> None:
    # The capture repeats the connection (same SYN, same segments) four times: those are retransmissions.
    events, _ = replay(corpus("thrift_echo_binary.pcap"), thrift(transport_type="framed", idl_files=TUTORIAL_IDL))
    assert len(events) == 1
    assert events[0]["thrift"] == {"params": "(s: ab0c1d281a000000)", "service": "Calculator",
                                   "return_value": "ab0c1d281a000000"}


def test_ipv6_framed() -> None:
    events, _ = replay(corpus("ipv6_thrift.pcap"), thrift(transport_type="framed"))
    assert len(events) == 17
    assert all(e["client"]["ip"] == "::1" and e["server"]["ip"] == "::1" for e in events)
    assert all(e["network"]["type"] == "ipv6" for e in events)
    assert [e["method"] for e in events[-3:]] == ["zip", "zip", "ping"]
