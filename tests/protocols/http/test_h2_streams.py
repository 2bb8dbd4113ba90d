"""The HTTP/2 layer on its own: frames and HPACK in, one exchange per stream out.

Byte streams come from python-hyper's h2 (tests/protocols/http/h2wire.py).
Every conversation is fed three ways: whole, one byte at a time, and with
trailing data (the first bytes of a frame that never completes) after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hpack import Encoder
from hyperframe.frame import HeadersFrame

from agent import metrics
from agent.protocols.http import h2streams
from agent.protocols.http.h2frames import PREFACE, PREFACE_TAIL
from agent.protocols.http.h2streams import H2_COUNTERS, Exchange, H2Connection
from agent.protocols.http.parser import ParserConfig
from agent.transport.types import Direction
from tests.protocols.http.h2wire import C2S, S2C, Conversation

SPLITS = ("whole", "bytewise", "trailing")
TRAILING = b"\x00\x00\x05\x00\x01\x00\x00"  # the start of a frame header whose frame never comes

Steps = list[tuple[Direction, bytes]]


def _chunks(data: bytes, split: str) -> Iterator[bytes]:
    if split == "bytewise":
        for i in range(len(data)):
            yield data[i:i + 1]
    else:
        yield data


def run(steps: Steps, split: str = "whole", config: ParserConfig | None = None,
        preface: bytes = PREFACE) -> tuple[list[Exchange], H2Connection]:
    counters = metrics.register(f"test.h2.{split}", H2_COUNTERS)
    for name in H2_COUNTERS:
        counters[name] = 0
    h2 = H2Connection(config or ParserConfig(), counters, client_preface=preface)
    out: list[Exchange] = []
    for direction, data in steps:
        for chunk in _chunks(data, split):
            out.extend(h2.feed(direction, chunk, 1000))
    if split == "trailing":
        for direction in (C2S, S2C):
            assert h2.feed(direction, TRAILING, 2000) == []
    return out, h2


def summary(exchange: Exchange) -> dict[str, Any]:
    def side(half: h2streams.Half | None) -> Any:
        if half is None:
            return None
        return {"fields": [(n.decode(), v.decode()) for n, v in half.fields],
                "trailers": [(n.decode(), v.decode()) for n, v in half.trailers],
                "body": b"".join(half.body), "body_bytes": half.body_bytes, "wire": half.wire_bytes,
                "ended": half.ended}
    return {"id": exchange.stream_id, "request": side(exchange.request), "response": side(exchange.response),
            "notes": exchange.notes}


def three_ways(steps: Steps, config: ParserConfig | None = None) -> list[dict[str, Any]]:
    results = [[summary(e) for e in run(steps, split, config)[0]] for split in SPLITS]
    assert results[0] == results[1] == results[2]
    return results[0]


def test_requests_and_responses_with_bodies_and_a_growing_header_table() -> None:
    conv = Conversation()
    ids = []
    for i in range(5):  # the same headers again and again: indexed from the dynamic table after the first
        sid = conv.request("GET", f"/page/{i}", headers=[("user-agent", "test-agent/1.0"), ("x-custom", "value")])
        conv.respond(sid, 200, b"body %d" % i, headers=[("content-type", "text/plain"), ("server", "h2test")])
        ids.append(sid)
    post = conv.request("POST", "/form", headers=[("content-type", "application/x-www-form-urlencoded")],
                        body=b"a=1&b=2")
    conv.respond(post, 201)
    out = three_ways(conv.steps, ParserConfig(include_response_body_for=(b"text/plain",)))
    assert [e["id"] for e in out] == [*ids, post]
    for i, e in enumerate(out[:5]):
        assert (":path", f"/page/{i}") in e["request"]["fields"]
        assert ("x-custom", "value") in e["request"]["fields"]
        assert ("server", "h2test") in e["response"]["fields"]
        assert e["response"]["body"] == b"body %d" % i
        assert e["response"]["body_bytes"] == len(b"body %d" % i)
        assert e["notes"] == []
    form = out[5]
    assert form["request"]["body"] == b"a=1&b=2"  # a form is kept to read its parameters
    assert form["request"]["body_bytes"] == 7
    assert (":status", "201") in form["response"]["fields"]


def test_wire_bytes_are_the_frames_of_the_stream() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/")
    before = len(conv.server_bytes())
    conv.respond(sid, 200, b"x" * 100)
    response_bytes = len(conv.server_bytes()) - before
    (exchange,), _ = run(conv.steps)
    assert exchange.response is not None
    # HEADERS frame + one DATA frame: exactly what the server sent after the request
    assert exchange.response.wire_bytes == response_bytes


def test_interleaved_streams_complete_in_the_order_their_responses_end() -> None:
    conv = Conversation()
    a = conv.request("GET", "/slow")
    b = conv.request("GET", "/fast")
    conv.respond(b, 200, b"fast", end=False)
    conv.respond(a, 200, b"slow")
    conv.send_data(S2C, b, b"!", end=True)
    out = three_ways(conv.steps)
    assert [e["id"] for e in out] == [a, b]
    assert out[1]["response"]["body_bytes"] == 5


def test_grpc_trailers_and_trailers_only_response() -> None:
    conv = Conversation()
    grpc = [("content-type", "application/grpc"), ("te", "trailers")]
    ok = conv.request("POST", "/pkg.Echo/Say", headers=grpc, body=b"\x00\x00\x00\x00\x02hi")
    conv.respond(ok, 200, b"\x00\x00\x00\x00\x02hi", headers=[("content-type", "application/grpc")],
                 trailers=[("grpc-status", "0")])
    bad = conv.request("POST", "/pkg.Echo/Fail", headers=grpc, body=b"\x00\x00\x00\x00\x00")
    conv.respond(bad, 200, headers=[("content-type", "application/grpc"), ("grpc-status", "5"),
                                    ("grpc-message", "no%20such%20thing")])
    out = three_ways(conv.steps)
    assert out[0]["response"]["trailers"] == [("grpc-status", "0")]
    assert ("grpc-status", "5") in out[1]["response"]["fields"]
    assert out[1]["response"]["trailers"] == []


def test_request_trailers() -> None:
    conv = Conversation()
    sid = conv.request("POST", "/up", body=b"data", trailers=[("x-checksum", "abc")])
    conv.respond(sid, 204)
    (e,) = three_ways(conv.steps)
    assert e["request"]["trailers"] == [("x-checksum", "abc")]


def test_resets_by_either_side() -> None:
    conv = Conversation()
    a = conv.request("GET", "/cancelled")
    conv.reset(C2S, a, 8)
    b = conv.request("GET", "/refused")
    conv.reset(S2C, b, 7)
    c = conv.request("GET", "/after-headers")
    conv.respond(c, 200, b"part", end=False)
    conv.reset(S2C, c, 2)
    out = three_ways(conv.steps)
    assert [e["notes"] for e in out] == [["Stream reset by the client (CANCEL)"],
                                         ["Stream reset by the server (REFUSED_STREAM)"],
                                         ["Stream reset by the server (INTERNAL_ERROR)"]]
    assert out[2]["response"]["body_bytes"] == 4
    assert out[2]["response"]["ended"] is False


def test_interim_response_is_dropped() -> None:
    conv = Conversation()
    sid = conv.request("POST", "/upload", headers=[("expect", "100-continue")], body=b"payload")
    conv.respond(sid, 200, b"ok", informational=100)
    (e,) = three_ways(conv.steps)
    assert (":status", "200") in e["response"]["fields"]
    assert (":status", "100") not in e["response"]["fields"]


def test_server_push_is_its_own_exchange() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/index.html")
    conv.respond(sid, 200, b"<html>", end=False)
    pushed = conv.push(sid, "/style.css", body=b"body{}")
    conv.send_data(S2C, sid, b"</html>")
    out = three_ways(conv.steps)
    assert [e["id"] for e in out] == [pushed, sid]
    assert (":path", "/style.css") in out[0]["request"]["fields"]
    assert out[0]["notes"] == ["Server push"]


def test_continuation_frames_and_padding() -> None:
    conv = Conversation()
    big = "v" * 40_000  # over the 16 KiB frame size: HEADERS + CONTINUATION frames
    sid = conv.request("GET", "/big", headers=[("x-big", big)])
    conv.server.send_headers(sid, [(":status", "200")])
    conv.send_data(S2C, sid, b"padded body", pad=20)
    out = three_ways(conv.steps, ParserConfig(include_response_body_for=(b"",)))
    assert ("x-big", big) in out[0]["request"]["fields"]
    assert out[0]["response"]["body"] == b"padded body"


def test_preface_tail_after_an_http1_reading_of_its_first_line() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/")
    conv.respond(sid, 204)
    direction, first = conv.steps[0]
    assert first.startswith(PREFACE)
    steps = [(direction, first[len(PREFACE) - len(PREFACE_TAIL):]), *conv.steps[1:]]
    out, _ = run(steps, preface=PREFACE_TAIL)
    assert [e.stream_id for e in out] == [sid]


def test_not_a_preface_stops_decoding() -> None:
    out, h2 = run([(C2S, b"GET / HTTP/1.1\r\n\r\n")])
    assert out == [] and h2.stopped
    assert h2.counters["h2_decoding_stopped"] == 1


def test_gap_inside_data_keeps_the_stream_with_a_loss_note() -> None:
    conv = Conversation()
    sid = conv.request("GET", "/file")
    conv.respond(sid, 200, b"A" * 3000)
    steps = conv.steps
    # the server's last segment holds HEADERS then DATA: cut 1000 payload bytes out of the DATA frame
    last = max(i for i, (d, _) in enumerate(steps) if d == S2C)
    data = steps[last][1]
    cut_at = len(data) - 1500
    counters = metrics.register("test.h2.gap", H2_COUNTERS)
    h2 = H2Connection(ParserConfig(), counters, client_preface=PREFACE)
    out: list[Exchange] = []
    for d, chunk in steps[:last]:
        out.extend(h2.feed(d, chunk, 1))
    out.extend(h2.feed(S2C, data[:cut_at], 2))
    out.extend(h2.gap(S2C, 1000, 3))
    out.extend(h2.feed(S2C, data[cut_at + 1000:], 4))
    (e,) = out
    assert e.response is not None and e.response.body_bytes == 3000
    assert e.notes == ["Packet loss while capturing the response"]
    assert not h2.stopped


def test_gap_outside_data_stops_decoding_with_a_note_on_open_streams() -> None:
    conv = Conversation()
    a = conv.request("GET", "/open")
    counters = metrics.register("test.h2.gapstop", H2_COUNTERS)
    h2 = H2Connection(ParserConfig(), counters, client_preface=PREFACE)
    for d, chunk in conv.steps:
        assert h2.feed(d, chunk, 1) == []
    (e,) = h2.gap(S2C, 50, 2)
    assert e.stream_id == a
    assert e.notes == ["HTTP/2 decoding stopped: bytes lost, header compression state unknown"]
    b = conv.request("GET", "/later")
    conv.respond(b, 200)
    for d, chunk in conv.steps[-2:]:
        assert h2.feed(d, chunk, 3) == []  # not guessed: nothing more comes out of this connection
    assert counters["h2_decoding_stopped"] == 1


def test_stream_limit_is_counted_and_header_state_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2streams, "MAX_OPEN_STREAMS", 2)
    conv = Conversation()
    ids = [conv.request("GET", f"/s{i}", headers=[("x-same", "indexed")]) for i in range(4)]
    for sid in ids:
        conv.respond(sid, 200, headers=[("x-reply", "r")])
    last = conv.request("GET", "/after", headers=[("x-same", "indexed")])
    conv.respond(last, 200, headers=[("x-reply", "r")])
    out, h2 = run(conv.steps)
    assert [e.stream_id for e in out] == [ids[0], ids[1], last]
    assert h2.counters["h2_streams_overflow"] == 2
    assert out[-1].request is not None and (b"x-same", b"indexed") in out[-1].request.fields


def test_header_list_over_the_limit_stops_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2streams, "MAX_HEADER_LIST", 1000)
    conv = Conversation()
    conv.request("GET", "/", headers=[("x-big", "b" * 2000)])
    out, h2 = run(conv.steps)
    assert out == [] and h2.counters["h2_header_lists_over_limit"] == 1
    assert h2.stopped.startswith("header list over the limit")


def headers_frame(stream_id: int, block: bytes, end_stream: bool = True) -> bytes:
    frame = HeadersFrame(stream_id, block)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


def test_header_table_over_the_limit_stops_decoding() -> None:
    encoder = Encoder()
    encoder.header_table_size = h2streams.MAX_HPACK_TABLE * 2  # announced at the start of the next block
    first = encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")])
    out, h2 = run([(C2S, PREFACE + headers_frame(1, first))])
    assert out == []
    assert h2.counters["h2_hpack_tables_over_limit"] == 1
    assert h2.stopped == f"header table over the limit of {h2streams.MAX_HPACK_TABLE} bytes"


def test_drain_publishes_open_streams() -> None:
    conv = Conversation()
    conv.request("GET", "/never-answered")
    _, h2 = run(conv.steps)
    (e,) = h2.drain()
    assert e.response is None and e.notes == ["HTTP/2 stream still open when the connection ended"]
    assert h2.held == 0 and h2.open_streams == 0
