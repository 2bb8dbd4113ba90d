"""The RESP parser on literal bytes: Packetbeat's Go vectors and RESP3, fed whole, byte by byte and split.

Every message is also fed followed by the start of another one, which must
stay buffered (not consumed, not emitted).
"""

from __future__ import annotations

import itertools
import random

import pytest

from agent.protocols.redis.parser import MAX_INLINE_BYTES, RespMessage, RespParser, split_inline
from agent.transport.session import ParseError
from agent.transport.types import Direction

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT


def feed_all(direction: Direction, chunks: list[bytes], max_text: int | None = None) -> tuple[list[RespMessage],
                                                                                               RespParser]:
    parser = RespParser(direction) if max_text is None else RespParser(direction, max_text=max_text)
    out: list[RespMessage] = []
    for i, chunk in enumerate(chunks):
        out += parser.feed(chunk, 1000 + i)
    return out, parser


def three_ways(direction: Direction, data: bytes, **kw: int) -> list[RespMessage]:
    """Whole, bytewise and random splits give the same messages (timestamps aside); returns the whole run's."""
    whole, parser = feed_all(direction, [data], **kw)
    assert parser.idle
    bytewise, _ = feed_all(direction, [data[i:i + 1] for i in range(len(data))], **kw)
    strip = [(m.size, m.kind, m.text, m.args, m.nargs, m.is_error, m.truncated, m.replicated) for m in whole]
    assert [(m.size, m.kind, m.text, m.args, m.nargs, m.is_error, m.truncated, m.replicated)
            for m in bytewise] == strip
    rng = random.Random(len(data))
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 5))) if len(data) > 1 else []
        bounds = [0, *cuts, len(data)]
        parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
        split, _ = feed_all(direction, parts, **kw)
        assert [(m.size, m.kind, m.text, m.args, m.nargs, m.is_error, m.truncated, m.replicated)
                for m in split] == strip
    # Trailing data: the start of another message stays buffered.
    trailing = b"*2\r\n$3\r\nGET\r\n" if direction is C2S else b"$5\r\nhel"
    with_tail, parser = feed_all(direction, [data + trailing], **kw)
    assert [m.text for m in with_tail] == [m.text for m in whole]
    assert not parser.idle  # a partial message is pending, nothing more was emitted
    return whole


def one(direction: Direction, data: bytes) -> RespMessage:
    messages = three_ways(direction, data)
    assert len(messages) == 1
    assert messages[0].size == len(data)
    return messages[0]


# -- Packetbeat's Go vectors (redis_test.go) -----------------------------------------


def test_no_args_request() -> None:
    msg = one(C2S, b"*1\r\n$4\r\nINFO\r\n")
    assert msg.text == "INFO" and msg.args == (b"INFO",) and msg.nargs == 1


def test_array_request() -> None:
    msg = one(C2S, b"*3\r\n$3\r\nSET\r\n$4\r\nkey1\r\n$5\r\nHello\r\n")
    assert msg.text == "SET key1 Hello"
    assert msg.args == (b"SET", b"key1", b"Hello")


def test_two_word_command_request() -> None:
    msg = one(C2S, b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$1\r\n*\r\n")
    assert msg.text == "CONFIG GET *"


def test_array_response_with_nil_and_int() -> None:
    msg = one(S2C, b"*4\r\n$3\r\nfoo\r\n$-1\r\n$3\r\nbar\r\n:23\r\n")
    assert msg.text == "[foo, nil, bar, 23]"


def test_nested_array_with_nil_array() -> None:
    msg = one(S2C, b"*3\r\n*-1\r\n+foo\r\n*2\r\n:1\r\n+bar\r\n")
    assert msg.text == "[nil, foo, [1, bar]]"


@pytest.mark.parametrize(("data", "text"), [
    (b"+OK\r\n", "OK"),
    (b"$-1\r\n", "nil"),
    (b"$0\r\n\r\n", ""),
    (b"$5\r\n12345\r\n", "12345"),
    (b"$7\r\n123\r\n45\r\n", "123\r\n45"),  # a bulk string may hold CRLF
    (b"*0\r\n", "[]"),
    (b":-42\r\n", "-42"),
])
def test_scalar_replies(data: bytes, text: str) -> None:
    msg = one(S2C, data)
    assert msg.text == text and not msg.is_error


def test_error_reply() -> None:
    msg = one(S2C, b"-ERR Operation against a key holding the wrong kind of value\r\n")
    assert msg.is_error and msg.text == "ERR Operation against a key holding the wrong kind of value"


def test_message_in_two_passes() -> None:
    parser = RespParser(C2S)
    assert parser.feed(b"*3\r\n$3\r\nSET\r\n$4\r\n", 1) == []
    (msg,) = parser.feed(b"key1\r\n$5\r\nHello\r\n", 2)
    assert msg.text == "SET key1 Hello" and msg.size == 34 and msg.ts_ns == 1


# -- RESP3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "text", "kind"), [
    (b"_\r\n", "nil", "_"),
    (b"#t\r\n", "true", "#"),
    (b"#f\r\n", "false", "#"),
    (b",3.14\r\n", "3.14", ","),
    (b",inf\r\n", "inf", ","),
    (b"(3492890328409238509324850943850943825024385\r\n", "3492890328409238509324850943850943825024385", "("),
    (b"=15\r\ntxt:Some string\r\n", "Some string", "="),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", "{first: 1, second: 2}", "%"),
    (b"~3\r\n+a\r\n+b\r\n:1\r\n", "[a, b, 1]", "~"),
    (b"*2\r\n%1\r\n+k\r\n_\r\n~0\r\n", "[{k: nil}, []]", "*"),
])
def test_resp3_types(data: bytes, text: str, kind: str) -> None:
    msg = one(S2C, data)
    assert (msg.text, msg.kind) == (text, kind)


def test_blob_error_is_an_error() -> None:
    msg = one(S2C, b"!21\r\nSYNTAX invalid syntax\r\n")
    assert msg.is_error and msg.text == "SYNTAX invalid syntax"


def test_attribute_is_dropped_but_counted() -> None:
    data = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n"
    msg = one(S2C, data)
    assert msg.text == "[2039123, 9543892]" and msg.kind == "*"
    # Inside an aggregate too: the attribute is not an element.
    assert one(S2C, b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n").text == "[1, 2]"


def test_push_message() -> None:
    msg = one(S2C, b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
    assert msg.kind == ">" and msg.args[0] == b"message" and msg.text == "[message, news, hello]"


# -- requests ------------------------------------------------------------------------------


def test_inline_commands() -> None:
    messages = three_ways(C2S, b"PING\r\nset greeting \"hello world\"\r\n\r\nGET 'it\\'s'\n")
    assert [m.text for m in messages] == ["PING", "set greeting hello world", "GET it's"]
    assert [m.kind for m in messages] == ["inline"] * 3
    assert messages[1].args == (b"set", b"greeting", b"hello world")


def test_split_inline_escapes() -> None:
    assert split_inline(b'SET k "a\\x41\\n"') == [b"SET", b"k", b"aA\n"]
    assert split_inline(b"  a   b ") == [b"a", b"b"]


def test_empty_and_null_multibulk_requests_are_ignored() -> None:
    messages = three_ways(C2S, b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n")
    assert [m.text for m in messages] == ["PING"]


# -- limits and malformed input -----------------------------------------------------------


def test_large_bulk_is_streamed_and_truncated() -> None:
    value = b"x" * 50_000
    data = b"$50000\r\n" + value + b"\r\n"
    msg = three_ways(S2C, data, max_text=1000)[0]
    assert msg.truncated and msg.text == "x" * 1000 + "..." and msg.size == len(data)


def test_many_elements_are_truncated_but_counted() -> None:
    data = b"*1000\r\n" + b":1\r\n" * 1000
    (msg,) = RespParser(S2C, max_text=100).feed(data, 0)
    assert msg.truncated and msg.nargs == 1000 and len(msg.text) < 200 and msg.size == len(data)


def test_buffer_stays_small_while_a_bulk_streams() -> None:
    parser = RespParser(S2C)
    parser.feed(b"$100000000\r\n", 0)
    for _ in range(100):
        parser.feed(b"y" * 65536, 0)
        assert parser.buffered == 0


@pytest.mark.parametrize("data", [
    b"?what\r\n",
    b"$abc\r\n",
    b"$-2\r\n",
    b"*-5\r\n",
    b"$3\r\nabcXY",
    b"#x\r\n",
    b"=3\r\n" + b"abc" + b"zz",
    b"*99999999999\r\n",
])
def test_malformed_replies_raise_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        RespParser(S2C).feed(data, 0)
    assert info.value.protocol == "redis" and info.value.direction is S2C


def test_nesting_is_bounded() -> None:
    with pytest.raises(ParseError, match="nested"):
        RespParser(S2C).feed(b"*1\r\n" * 100, 0)


def test_lines_are_bounded() -> None:
    parser = RespParser(C2S)
    with pytest.raises(ParseError, match="longer than"):
        parser.feed(b"a" * (MAX_INLINE_BYTES + 10), 0)
    with pytest.raises(ParseError, match="longer than"):
        RespParser(S2C).feed(b"+" + b"z" * (2 << 20), 0)


# -- replication ------------------------------------------------------------------------------


def test_fullresync_snapshot_then_command_stream() -> None:
    rdb = b"REDIS0011" + bytes(range(256)) * 4
    data = (b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n\n\n"
            + f"${len(rdb)}\r\n".encode() + rdb
            + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n")
    messages = three_ways(S2C, data)
    assert [m.kind for m in messages] == ["+", "rdb", "*", "*"]
    assert [m.replicated for m in messages] == [False, False, True, True]
    assert messages[1].size == len(rdb) + len(f"${len(rdb)}\r\n")


def test_diskless_snapshot_with_eof_mark() -> None:
    mark = b"0123456789abcdef0123456789abcdef01234567"
    data = (b"+FULLRESYNC abc 0\r\n$EOF:" + mark + b"\r\n" + b"\x00snapshot" * 100 + mark
            + b"*1\r\n$4\r\nPING\r\n")
    messages = three_ways(S2C, data)
    assert [(m.kind, m.replicated) for m in messages] == [("+", False), ("rdb", False), ("*", True)]


def test_sync_snapshot_needs_the_hint() -> None:
    parser = RespParser(S2C)
    parser.expect_snapshot()
    (rdb, cmd) = parser.feed(b"$5\r\nREDIS*1\r\n$4\r\nPING\r\n", 0)
    assert rdb.kind == "rdb" and cmd.replicated
