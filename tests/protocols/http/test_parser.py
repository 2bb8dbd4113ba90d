"""HttpStreamParser on literal bytes: every message fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

from collections import deque

import pytest

from agent.metrics import Counters
from agent.protocols.http.head import MAX_CHUNK_LINE, MAX_START_LINE
from agent.protocols.http.messages import (
    NOTE_LOSS_REQUEST,
    NOTE_LOSS_RESPONSE,
    HttpMessage,
    ParserConfig,
)
from agent.protocols.http.parser import HttpStreamParser
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.protocols.http import messages as m

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT
TRAILING = b"TRAILING"


def new_parser(direction: Direction = S2C, config: ParserConfig | None = None,
               methods: deque[bytes] | None = None, counters: Counters | None = None) -> HttpStreamParser:
    return HttpStreamParser(direction, config or ParserConfig(),
                            counters if counters is not None else Counters("test.http"), methods)


def gap_msg(parser: HttpStreamParser, nbytes: int) -> HttpMessage | None:
    """The message a gap completed, if any."""
    messages = parser.gap(nbytes, 0).messages
    return messages[0] if messages else None


def feed_all(parser: HttpStreamParser, chunks: list[bytes], ts: int = 0) -> list[HttpMessage]:
    out = []
    for chunk in chunks:
        parser.receive(chunk, ts)
        while (msg := parser.next_message()) is not None:
            out.append(msg)
    return out


def parse_three_ways(data: bytes, direction: Direction = S2C, config: ParserConfig | None = None,
                     methods: tuple[bytes, ...] = (), trailing: bytes = TRAILING) -> list[HttpMessage]:
    """Messages of `data` fed whole, byte by byte and followed by trailing bytes (which must stay buffered)."""
    whole = feed_all(new_parser(direction, config, deque(methods)), [data])
    bytewise = feed_all(new_parser(direction, config, deque(methods)), [data[i:i + 1] for i in range(len(data))])
    assert bytewise == whole, "byte-by-byte feeding changed the messages"
    parser = new_parser(direction, config, deque(methods))
    with_trailing = feed_all(parser, [data + trailing])
    assert with_trailing == whole, "trailing data changed the messages"
    assert parser.buffered == len(trailing), "trailing data was consumed"
    return whole


def one(data: bytes, **kwargs: object) -> HttpMessage:
    msgs = parse_three_ways(data, **kwargs)  # type: ignore[arg-type]
    assert len(msgs) == 1, msgs
    return msgs[0]


# -- Packetbeat's TestHttpParser_* cases -------------------------------------------


def test_simple_response() -> None:
    msg = one(m.GOOGLE_RESPONSE)
    assert not msg.is_request
    assert (msg.status_code, msg.status_phrase, msg.version) == (200, b"OK", "1.1")
    assert msg.size == 262
    assert msg.content_length == 0
    assert msg.encodings == ("gzip",)
    assert msg.headers["x-frame-options"] == b"SAMEORIGIN"


def test_header_names_are_case_insensitive() -> None:
    msg = one(m.GOOGLE_RESPONSE_MIXED_CASE)
    assert msg.size == 262 and msg.content_length == 0
    assert msg.headers["expires"] == b"-1"
    assert msg.headers["cache-control"] == b"private, max-age=0"
    assert "content-length" in msg.headers and "server" in msg.headers


def test_simple_request_leaves_garbage_for_the_next_message() -> None:
    msg = one(m.GOOGLE_REQUEST, direction=C2S, trailing=b"garbage")
    assert msg.is_request
    assert (msg.method, msg.uri, msg.version) == (b"GET", b"/", "1.1")
    assert msg.size == 669
    assert msg.headers["host"] == b"www.google.ro"
    assert msg.headers["referer"] == b"http://www.google.ro/"


def test_request_with_content_length_zero_is_complete_at_end_of_headers() -> None:
    msg = one(m.CURL_POST_EMPTY, direction=C2S)
    assert msg.method == b"POST" and msg.content_length == 0 and msg.body_bytes == 0
    assert msg.size == len(m.CURL_POST_EMPTY)


@pytest.mark.parametrize("cut", [
    len(b"HTTP/1.1 200 OK\r\nDate: Tue, 14 Aug 2012 22:31:45 GMT\r\nExpires: -1\r\n"
        b"Cache-Control: private, max-age=0\r\nContent-Type: text/html; charset=UTF-8\r\n"),  # between fields
    m.GOOGLE_RESPONSE.index(b"coding: gzip"),  # mid header name
    m.GOOGLE_RESPONSE.index(b"zip\r\nServer"),  # mid header value
    m.GOOGLE_RESPONSE.index(b"\nServer"),  # between CR and LF
])
def test_response_split_across_segments(cut: int) -> None:
    parser = new_parser()
    assert feed_all(parser, [m.GOOGLE_RESPONSE[:cut]]) == []
    msgs = feed_all(parser, [m.GOOGLE_RESPONSE[cut:]])
    assert len(msgs) == 1 and msgs[0].size == 262 and msgs[0].status_phrase == b"OK"


def test_response_with_body_leaves_garbage() -> None:
    data = m.GOOGLE_RESPONSE.replace(b"Content-Length: 0", b"Content-Length: 30") + b"x" * 30
    msg = one(data, trailing=b"garbage")
    assert msg.content_length == 30 and msg.body_bytes == 30
    assert msg.size == 263 + 30


def test_split_mid_content_length_value_and_body() -> None:
    data = m.GOOGLE_RESPONSE.replace(b"Content-Length: 0", b"Content-Length: 30") + b"x" * 30
    cut1 = data.index(b"0\r\nX-XSS")
    cut2 = len(data) - 20
    parser = new_parser()
    assert feed_all(parser, [data[:cut1]]) == []
    assert feed_all(parser, [data[cut1:cut2]]) == []
    msgs = feed_all(parser, [data[cut2:]])
    assert len(msgs) == 1 and msgs[0].content_length == 30
    assert parser.buffered == 0


def test_http10_response_without_length_runs_until_close() -> None:
    data = (b"HTTP/1.0 200 OK\r\nDate: Tue, 14 Aug 2012 22:31:45 GMT\r\nExpires: -1\r\n"
            b"Cache-Control: private, max-age=0\r\nContent-Type: text/html; charset=UTF-8\r\n\r\ntest")
    for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
        parser = new_parser()
        assert feed_all(parser, chunks) == []
        msg = parser.close()
        assert msg is not None
        assert msg.content_length == 4 and msg.body_bytes == 4 and msg.version == "1.0"
        assert msg.size == len(data)
        assert msg.notes == ()


@pytest.mark.parametrize(("data", "code"), [
    (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 200),
    (b"HTTP/1.1 301\r\nContent-Length: 0\r\n\r\n", 301),
])
def test_status_line_without_reason_phrase(data: bytes, code: int) -> None:
    msg = one(data)
    assert msg.status_code == code and msg.status_phrase == b""


def test_reason_phrase_with_spaces() -> None:
    msg = one(m.NOT_FOUND_404)
    assert (msg.status_code, msg.status_phrase, msg.content_length) == (404, b"Not Found", 18)
    msg = one(m.ERROR_500)
    assert (msg.status_code, msg.status_phrase, msg.content_length) == (500, b"Internal Server Error", 2)
    msg = one(m.ERROR_500_NO_PHRASE)
    assert (msg.status_code, msg.status_phrase, msg.content_length) == (500, b"", 2)


def test_301_with_body_and_connection_close() -> None:
    # The Go test's body is 297 bytes long for a Content-Length of 290: the message ends at 290.
    parser = new_parser()
    parser.receive(m.MOVED_301, 0)
    msg = parser.next_message()
    assert msg is not None and msg.content_length == 290 and msg.body_bytes == 290
    assert parser.buffered == 7
    with pytest.raises(ParseError):  # "y></html>" does not start a message
        parser.next_message()


def test_request_then_response_in_one_buffer() -> None:
    msgs = parse_three_ways(m.GOOGLE_REQUEST + m.GOOGLE_RESPONSE, direction=C2S)
    assert [x.is_request for x in msgs] == [True, False]
    msgs = parse_three_ways(m.GOOGLE_REQUEST_WITH_BODY + m.GOOGLE_RESPONSE, direction=C2S)
    assert msgs[0].content_length == 2 and msgs[0].body_bytes == 2 and msgs[1].status_code == 200


def test_repeated_headers_are_joined() -> None:
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nDate: Tue, 14 Aug 2012 22:31:45 GMT\r\n"
            b"Set-Cookie: aCookie=yummy\r\nSet-Cookie: anotherCookie=why%20not\r\n\r\n")
    msg = one(data)
    assert msg.headers["set-cookie"] == b"aCookie=yummy, anotherCookie=why%20not"


# -- chunked transfer coding ------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
SAVE_ALL = ParserConfig(include_response_body_for=(b"",), include_request_body_for=(b"",))


def test_chunked_body_with_size_line_split() -> None:
    body = b"03\r" + b"\n123\r\n03\r\n123\r" + b"\n0\r\n\r\n"
    msg = one(CHUNKED_HEAD + body, config=SAVE_ALL)
    assert msg.body == b"123123" and msg.content_length == 6 and msg.body_bytes == 6
    assert msg.size == len(CHUNKED_HEAD) + len(body)
    parser = new_parser(config=SAVE_ALL)
    assert feed_all(parser, [CHUNKED_HEAD + b"03\r"]) == []
    assert feed_all(parser, [b"\n123\r\n03\r\n123\r"]) == []
    assert len(feed_all(parser, [b"\n0\r\n\r\n"])) == 1


def test_chunked_waits_for_the_final_crlf() -> None:
    parser = new_parser(config=SAVE_ALL)
    assert feed_all(parser, [CHUNKED_HEAD + b"03\r\n123\r\n0\r\n\r"]) == []
    msgs = feed_all(parser, [b"\n"])
    assert len(msgs) == 1 and msgs[0].body == b"123"


def test_chunk_extensions_and_trailers() -> None:
    body = (b"4;name=value;other\r\nWiki\r\n5 ; ext\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
            b"0;last\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\nX-Checksum: abc\r\n\r\n")
    msg = one(CHUNKED_HEAD + body, config=SAVE_ALL)
    assert msg.body == b"Wikipedia in\r\n\r\nchunks."
    assert msg.content_length == 23
    assert msg.size == len(CHUNKED_HEAD) + len(body)


def test_chunked_request() -> None:
    data = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n")
    msg = one(data, direction=C2S, config=SAVE_ALL)
    assert msg.is_request and msg.body == b"hello" and msg.content_length == 5


def test_chunked_wins_over_content_length() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    msg = one(data, config=SAVE_ALL)
    assert msg.body == b"ab" and msg.content_length == 2 and msg.encodings == ("gzip",)


@pytest.mark.parametrize("bad", [b"zz\r\n", b"-1\r\n", b"0x10\r\n", b"1_0\r\n", b"\r\n"])
def test_malformed_chunk_size_is_a_parse_error(bad: bytes) -> None:
    parser = new_parser()
    parser.receive(CHUNKED_HEAD + bad, 0)
    with pytest.raises(ParseError) as info:
        parser.next_message()
    assert info.value.protocol == "http" and info.value.direction == S2C
    assert "chunk size" in info.value.reason


def test_chunk_data_must_end_with_crlf() -> None:
    parser = new_parser()
    parser.receive(CHUNKED_HEAD + b"2\r\nabXY", 0)
    with pytest.raises(ParseError, match="CRLF"):
        parser.next_message()


def test_endless_chunk_size_line_is_bounded() -> None:
    counters = Counters("test.http")
    parser = new_parser(counters=counters)
    parser.receive(CHUNKED_HEAD + b"1" + b" " * MAX_CHUNK_LINE, 0)
    with pytest.raises(ParseError, match="chunk-size line longer"):
        parser.next_message()
    assert counters["chunk_line_overflow"] == 1


# -- bodies that are not there --------------------------------------------------------------


@pytest.mark.parametrize("status", [b"100 Continue", b"101 Switching Protocols", b"204 No Content",
                                    b"304 Not Modified", b"199 Whatever"])
def test_no_body_for_1xx_204_304_even_with_a_length(status: bytes) -> None:
    data = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"
    msg = one(data)
    assert msg.body_bytes == 0 and msg.size == len(data)


def test_no_body_for_the_response_to_head() -> None:
    methods = deque([b"HEAD"])
    parser = new_parser(methods=methods)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1270\r\n\r\n" + m.NOT_FOUND_404
    msgs = feed_all(parser, [data])
    assert [x.status_code for x in msgs] == [200, 404]
    assert msgs[0].body_bytes == 0 and msgs[0].content_length == 1270
    assert not methods


def test_request_parser_records_methods_for_the_response_side() -> None:
    methods: deque[bytes] = deque()
    requests = new_parser(C2S, methods=methods)
    responses = new_parser(S2C, methods=methods)
    feed_all(requests, [b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"])
    assert list(methods) == [b"HEAD", b"GET"]
    msgs = feed_all(responses, [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"])
    assert [x.body_bytes for x in msgs] == [0, 5]


def test_interim_response_does_not_consume_a_method() -> None:
    methods = deque([b"HEAD"])
    parser = new_parser(methods=methods)
    msgs = feed_all(parser, [b"HTTP/1.1 100 Continue\r\n\r\n"])
    assert msgs[0].status_code == 100 and list(methods) == [b"HEAD"]


def test_request_without_length_has_no_body() -> None:
    msgs = parse_three_ways(b"POST /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\n\r\n", direction=C2S)
    assert [x.uri for x in msgs] == [b"/x", b"/y"]


def test_http11_response_without_length_runs_until_close() -> None:
    parser = new_parser()
    assert feed_all(parser, [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", b"def"]) == []
    msg = parser.close()
    assert msg is not None and msg.body_bytes == 6 and msg.content_length == 6


# -- request line quirks -------------------------------------------------------------------------


def test_request_uri_with_a_raw_space() -> None:
    msg = one(b"GET /test?password=two secret HTTP/1.1\r\nHost: a\r\n\r\n", direction=C2S)
    assert msg.method == b"GET" and msg.uri == b"/test?password=two secret"


def test_leading_empty_lines_are_skipped() -> None:
    msg = one(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", direction=C2S)
    assert msg.uri == b"/" and msg.size == len(b"GET / HTTP/1.1\r\n\r\n")


def test_folded_header_is_joined_with_a_space() -> None:
    msg = one(b"HTTP/1.1 200 OK\r\nX-Long: first\r\n   second\r\n\tthird\r\nContent-Length: 0\r\n\r\n")
    assert msg.headers["x-long"] == b"first second third"


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"GET\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / FTP/1.0\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/x.y 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
])
def test_not_http_is_a_parse_error(data: bytes) -> None:
    for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
        parser = new_parser()
        with pytest.raises(ParseError) as info:
            feed_all(parser, chunks)
        assert info.value.offset == 0


def test_start_line_that_never_ends_is_bounded() -> None:
    counters = Counters("test.http")
    parser = new_parser(C2S, counters=counters)
    parser.receive(b"GET /" + b"a" * MAX_START_LINE, 0)
    with pytest.raises(ParseError, match="start line longer"):
        parser.next_message()
    assert counters["start_line_overflow"] == 1


def test_header_block_that_never_ends_is_bounded() -> None:
    config = ParserConfig(max_message_size=4096)
    counters = Counters("test.http")
    parser = new_parser(C2S, config, counters=counters)
    parser.receive(b"GET / HTTP/1.1\r\n", 0)
    assert parser.next_message() is None
    with pytest.raises(ParseError, match="header block longer than 4096"):
        for _ in range(200):
            parser.receive(b"X-Filler: " + b"y" * 40 + b"\r\n", 0)
            parser.next_message()
    assert parser.buffered <= 4096 + 64
    assert counters["header_block_overflow"] == 1


# -- max_message_size ------------------------------------------------------------------------------


def test_body_beyond_max_message_size_is_counted_not_stored() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/binary\r\nContent-Length: 2000\r\n\r\n"
    config = ParserConfig(include_response_body_for=(b"binary",), max_message_size=1024)
    msg = one(head + b"z" * 2000, config=config)
    assert msg.body_truncated
    assert len(msg.body) == 1024 - len(head)
    assert msg.body_bytes == 2000 and msg.content_length == 2000
    assert msg.size == len(head) + 2000
    counters = Counters("test.http")
    parser = new_parser(config=config, counters=counters)
    feed_all(parser, [head + b"z" * 2000])
    assert counters["bodies_truncated"] == 1


def test_body_not_included_is_not_stored() -> None:
    msg = one(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello")
    assert msg.body == b"" and not msg.save_body and msg.body_bytes == 5


def test_urlencoded_request_body_is_kept_for_its_parameters() -> None:
    msg = one(m.LOGIN_POST, direction=C2S)
    assert msg.save_body and not msg.send_body
    assert msg.body == b"username=ME&password=secret\r"


# -- gaps -----------------------------------------------------------------------------------------


def test_gap_in_headers_drops_the_message_and_resyncs() -> None:
    parser = new_parser()
    head = m.GOOGLE_RESPONSE[:120]
    assert feed_all(parser, [head]) == []
    assert gap_msg(parser, 5) is None
    assert parser.state_name == "resync"
    # The rest of the lost message is skipped; the next message is found at its start line.
    msgs = feed_all(parser, [m.GOOGLE_RESPONSE[125:] + m.NOT_FOUND_404])
    assert [x.status_code for x in msgs] == [404]


def test_gap_in_body_with_length() -> None:
    data = m.GOOGLE_RESPONSE.replace(b"Content-Length: 0", b"Content-Length: 40") + b"x" * 20
    parser = new_parser()
    assert feed_all(parser, [data]) == []
    assert gap_msg(parser, 10) is None
    msg = gap_msg(parser, 10)
    assert msg is not None
    assert msg.notes == (NOTE_LOSS_RESPONSE,)
    assert msg.content_length == 40 and msg.body_bytes == 40
    assert msg.size == len(data) + 20
    # The gap ended exactly with the body: the next message parses normally.
    assert feed_all(parser, [m.NOT_FOUND_404])[0].status_code == 404


def test_gap_past_the_end_of_a_body_resyncs() -> None:
    data = m.GOOGLE_RESPONSE.replace(b"Content-Length: 0", b"Content-Length: 40") + b"x" * 20
    parser = new_parser()
    feed_all(parser, [data])
    msg = gap_msg(parser, 30)
    assert msg is not None and msg.body_bytes == 40
    assert parser.state_name == "resync"
    assert [x.status_code for x in feed_all(parser, [b"tail of a lost message\r\n" + m.NOT_FOUND_404])] == [404]


def test_gap_in_http10_body_then_close() -> None:
    data = (b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n" + b"x" * 20)
    parser = new_parser()
    feed_all(parser, [data])
    assert gap_msg(parser, 10) is None
    assert gap_msg(parser, 5) is None
    msg = parser.close()
    assert msg is not None
    assert msg.notes == (NOTE_LOSS_RESPONSE,)  # once, however many gaps
    assert msg.body_bytes == 35


def test_gap_in_request_body_note() -> None:
    parser = new_parser(C2S)
    feed_all(parser, [b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345"])
    msg = gap_msg(parser, 5)
    assert msg is not None and msg.notes == (NOTE_LOSS_REQUEST,)


def test_gap_in_chunked_data_and_in_chunk_framing() -> None:
    parser = new_parser(config=SAVE_ALL)
    feed_all(parser, [CHUNKED_HEAD + b"a\r\n12345"])
    assert gap_msg(parser, 3) is None  # still inside the 10-byte chunk
    msgs = feed_all(parser, [b"90\r\n0\r\n\r\n"])
    assert len(msgs) == 1 and msgs[0].body == b"1234590" and msgs[0].notes == (NOTE_LOSS_RESPONSE,)
    assert msgs[0].body_bytes == 10
    parser = new_parser(config=SAVE_ALL)
    feed_all(parser, [CHUNKED_HEAD + b"5\r\nhello\r\n"])
    msg = gap_msg(parser, 7)  # the next chunk-size line is lost: the framing cannot be followed
    assert msg is not None and msg.body == b"hello" and msg.notes == (NOTE_LOSS_RESPONSE,)
    assert parser.state_name == "resync"


def test_gap_between_messages_resyncs_at_the_next_byte() -> None:
    parser = new_parser()
    assert gap_msg(parser, 100) is None
    assert [x.status_code for x in feed_all(parser, [m.NOT_FOUND_404])] == [404]


# -- resynchronisation ----------------------------------------------------------------------------


def test_mid_stream_start_resyncs_at_the_next_message() -> None:
    parser = new_parser()
    parser.receive(b"dy>tail of a body</body></html>\r\n" + m.ERROR_500 + m.NOT_FOUND_404, 0)
    with pytest.raises(ParseError):
        parser.next_message()
    parser.resync()
    msgs = []
    while (msg := parser.next_message()) is not None:
        msgs.append(msg)
    assert [x.status_code for x in msgs] == [500, 404]


def test_resync_without_a_newline_discards_and_waits() -> None:
    parser = new_parser(C2S)
    parser.receive(b"\x00\x01\x02binary", 0)
    with pytest.raises(ParseError):
        parser.next_message()
    parser.resync()
    assert parser.next_message() is None
    assert parser.buffered == 0
    parser.receive(b"more\nGET / HTTP/1.1\r\n\r\n", 0)
    msg = parser.next_message()
    assert msg is not None and msg.uri == b"/"


# -- timestamps and early hand-out ----------------------------------------------------------------


def test_message_time_is_the_segment_holding_its_first_byte() -> None:
    parser = new_parser()
    parser.receive(m.ERROR_500 + m.NOT_FOUND_404[:10], 100)
    first = parser.next_message()
    assert first is not None and first.ts_ns == 100
    assert parser.next_message() is None
    parser.receive(m.NOT_FOUND_404[10:], 200)
    second = parser.next_message()
    assert second is not None and second.ts_ns == 100
    parser.receive(m.NOT_FOUND_404, 300)
    third = parser.next_message()
    assert third is not None and third.ts_ns == 300


def test_take_in_progress_hands_out_a_request_once() -> None:
    parser = new_parser(C2S)
    feed_all(parser, [b"PUT /big HTTP/1.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n0123"])
    early = parser.take_in_progress()
    assert early is not None and early.method == b"PUT" and early.body_bytes == 4
    assert parser.take_in_progress() is None
    # The rest of the body is still framed, but the request is not emitted a second time.
    msgs = feed_all(parser, [b"x" * 96 + b"GET / HTTP/1.1\r\n\r\n"])
    assert [x.uri for x in msgs] == [b"/"]


def test_repeated_header_lines_parse_alike_and_credentials_are_not_remembered() -> None:
    from agent.protocols.http import head

    request = (b"GET /a HTTP/1.1\r\nHost: cache.test\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
               b"X-Api-Key: k-123\r\nCookie: s=1\r\nAccept:  */* \t\r\n\r\n")
    first = one(request, direction=C2S)
    again = one(request, direction=C2S)  # its lines are remembered now
    assert first == again
    assert first.headers["accept"] == b"*/*" and first.headers["x-api-key"] == b"k-123"
    assert b"Host: cache.test" in head._LINE_CACHE
    remembered = b"".join(head._LINE_CACHE)
    assert [secret for secret in (b"dXNlcjpwYXNz", b"k-123", b"s=1") if secret in remembered] == []
