"""The memcache parser on literal bytes (Packetbeat's text_test.go and binary_test.go vectors), three ways.

Each message is fed whole, byte by byte, in random pieces, and followed by
the start of another message (which must stay pending).
"""

from __future__ import annotations

import itertools
import random

import pytest

from agent.protocols.memcache import codes
from agent.protocols.memcache.fields import message_fields
from agent.protocols.memcache.parser import (
    McMessage,
    McParser,
    ParserOptions,
    merge_replies,
    parse_udp_header,
    parse_udp_message,
)
from agent.protocols.stream import Gap
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.protocols.memcache.messages import (
    GET,
    INCR,
    QUIT,
    QUITQ,
    SET,
    STAT,
    VERSION,
    binary,
    u32,
    u64,
    udp_frame,
)

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT
KEEP = ParserOptions(max_values=-1, parse_unknown=True)  # the Go tests' parser keeps values


def parse_all(direction: Direction, chunks: list[bytes], options: ParserOptions = KEEP) -> tuple[list[McMessage],
                                                                                                McParser]:
    parser = McParser(direction, options)
    out: list[McMessage] = []
    for i, chunk in enumerate(chunks):
        out += parser.feed(chunk, 100 + i)
    return out, parser


def strip(messages: list[McMessage]) -> list[tuple[object, ...]]:
    return [(m.size, m.command, m.keys, m.values, m.byte_count, m.value, m.stats, m.notes, m.done) for m in messages]


def three_ways(direction: Direction, data: bytes, options: ParserOptions = KEEP) -> list[McMessage]:
    whole, parser = parse_all(direction, [data], options)
    assert parser.idle
    assert strip(parse_all(direction, [data[i:i + 1] for i in range(len(data))], options)[0]) == strip(whole)
    rng = random.Random(len(data))
    cuts = sorted(rng.sample(range(1, len(data)), min(5, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    assert strip(parse_all(direction, [data[a:b] for a, b in itertools.pairwise(bounds)],
                           options)[0]) == strip(whole)
    tail = b"get more" if direction is C2S else b"VALUE k 0 "
    with_tail, parser = parse_all(direction, [data + tail], options)
    assert strip(with_tail) == strip(whole) and not parser.idle
    return whole


def one(direction: Direction, data: bytes, options: ParserOptions = KEEP) -> McMessage:
    (msg,) = three_ways(direction, data, options)
    assert msg.size == len(data)
    return msg


# -- text protocol ---------------------------------------------------------------------------


def test_quit() -> None:
    assert one(C2S, b"quit\r\n").command.is_quit
    msg = one(C2S, b"quit noreply\r\n")
    assert msg.noreply and msg.command.is_quit


def test_unknown_command_needs_parseunknown() -> None:
    msg = one(C2S, b"unknown command\r\n")
    assert message_fields(msg) == {"line": "unknown command", "command": "UNKNOWN", "type": "UNKNOWN"}
    with pytest.raises(ParseError, match="unknown memcache command"):
        McParser(C2S, ParserOptions()).feed(b"unknown command\r\n", 0)


def test_simple_get_and_value_reply() -> None:
    msg = one(C2S, b"get k\r\n")
    assert message_fields(msg) == {"command": "get", "type": "Load", "keys": ["k"]}
    reply = three_ways(S2C, b"VALUE k 0 5 10\r\nvalue\r\n")[0]
    assert reply.cas == 10 and reply.keys == ("k",) and not reply.done
    fields = message_fields(reply)
    assert fields["command"] == "VALUE" and fields["bytes"] == 5 and fields["cas_unique"] == 10
    assert fields["values"] == ["dmFsdWU="]  # base64, as Packetbeat marshals []byte


def test_multi_get_split_mid_keys() -> None:
    assert one(C2S, b"get a b c d\r\n").keys == ("a", "b", "c", "d")
    parser = McParser(C2S, KEEP)
    assert parser.feed(b"get a b ", 0) == []
    (msg,) = parser.feed(b"c d\r\n", 1)
    assert msg.keys == ("a", "b", "c", "d") and msg.ts_ns == 0


def test_failing_get() -> None:
    with pytest.raises(ParseError, match="no keys"):
        McParser(C2S, KEEP).feed(b"get\r\n", 0)


def test_set_and_stored() -> None:
    msg = one(C2S, b"set k 2 102 5\r\nvalue\r\n")
    assert (msg.noreply, msg.keys, msg.flags, msg.exptime, msg.byte_count, msg.values) == (
        False, ("k",), 2, 102, 5, (b"value",))
    assert message_fields(msg) == {"command": "set", "type": "Store", "count_values": 1, "values": "dmFsdWU=",
                                   "keys": ["k"], "flags": 2, "exptime": 102, "bytes": 5, "noreply": False}
    stored = one(S2C, b"STORED\r\n")
    assert message_fields(stored) == {"command": "STORED", "type": "Success"}
    assert one(C2S, b"set k 2 102 5 noreply\r\nvalue\r\n").noreply


def test_set_value_split_across_packets() -> None:
    parser = McParser(C2S, KEEP)
    assert parser.feed(b"set k 2 102 10\r\nvalue", 0) == []
    (msg,) = parser.feed(b"value\r\n", 1)
    assert msg.values == (b"valuevalue",) and msg.byte_count == 10
    (busy,) = McParser(S2C).feed(b"BUSY ...\r\n", 2)
    assert message_fields(busy) == {"command": "BUSY", "type": "Fail", "error_msg": "..."}


def test_values_are_not_kept_by_default() -> None:
    msg = one(C2S, b"set k 0 0 5\r\nvalue\r\n", ParserOptions())
    assert msg.values == () and msg.count_values == 1
    assert "values" not in message_fields(msg)
    cut = one(C2S, b"set k 0 0 5\r\nvalue\r\n", ParserOptions(max_values=1, max_bytes_per_value=3))
    assert cut.values == (b"val",)


def test_cas() -> None:
    msg = one(C2S, b"cas k 2 102 5 1234\r\nvalue\r\n")
    assert msg.cas == 1234 and message_fields(msg)["cas_unique"] == 1234


def test_slabs_commands() -> None:
    msg = one(C2S, b"slabs reassign -1 2\r\n")
    assert message_fields(msg) == {"command": "slabs reassign", "type": "SlabCtrl", "source_class": -1,
                                   "dest_class": 2}
    assert one(C2S, b"slabs unknown -1 2\r\n").command is codes.UNKNOWN_COMMAND
    for value, name in ((0, "standby"), (1, "slow"), (2, "aggressive"), (7, "7")):
        assert message_fields(one(C2S, b"slabs automove %d\r\n" % value))["automove"] == name


def test_counters() -> None:
    msg = one(C2S, b"incr cnt 2\r\n")
    assert message_fields(msg) == {"command": "incr", "type": "Counter", "keys": ["cnt"], "delta": 2,
                                   "noreply": False}
    reply = one(S2C, b"12\r\n")
    assert message_fields(reply) == {"command": "<counter_op_res>", "type": "Counter", "value": 12}


def test_stats() -> None:
    assert message_fields(one(C2S, b"stats abc\r\n"))["raw_args"] == "abc"
    assert message_fields(one(C2S, b"stats\r\n"))["raw_args"] == ""
    replies = three_ways(S2C, b"STAT abc 5\r\nSTAT pid 77\r\nEND\r\n")
    assert [r.stats for r in replies[:2]] == [(("abc", "5"),), (("pid", "77"),)]
    merged = merge_replies(merge_replies(replies[0], replies[1], 0), replies[2], 0)  # type: ignore[arg-type]
    assert merged is not None and merged.done and merged.stats == (("abc", "5"), ("pid", "77"))


def test_errors_and_version_reply() -> None:
    assert message_fields(one(S2C, b"ERROR\r\n")) == {"command": "ERROR", "type": "Fail"}
    assert message_fields(one(S2C, b"CLIENT_ERROR bad data chunk\r\n"))["error_msg"] == "bad data chunk"
    assert message_fields(one(S2C, b"TOUCHED\r\n"))["command"] == "TOCHED"  # Packetbeat's spelling
    assert message_fields(one(S2C, b"VERSION 1.6.18\r\n"))["version"] == "1.6.18"


@pytest.mark.parametrize("data", [
    b"set k 0 0\r\n", b"set k x 0 5\r\nvalue\r\n", b"set k 0 0 5 bogus\r\nvalue\r\n", b"set k 0 0 3\r\nabcXY",
    b"incr k\r\n", b"\r\n",
])
def test_malformed_text_requests(data: bytes) -> None:
    with pytest.raises(ParseError):
        McParser(C2S).feed(data, 0)


def test_line_is_bounded() -> None:
    with pytest.raises(ParseError, match="longer than"):
        McParser(C2S).feed(b"get " + b"k" * 300_000, 0)


def test_large_value_is_streamed() -> None:
    parser = McParser(C2S, ParserOptions(max_values=1))
    assert parser.feed(b"set big 0 0 50000000\r\n", 0) == []
    chunk = b"x" * 50_000
    for _ in range(1000):
        assert parser.feed(chunk, 0) == [] and parser.buffered == 0
    (msg,) = parser.feed(b"\r\n", 1)
    assert msg.byte_count == 50_000_000 and len(msg.values[0]) == 1 << 20  # kept: MAX_VALUE_BYTES


# -- binary protocol -----------------------------------------------------------------------------


def test_binary_quit_and_quiet_quit() -> None:
    msg = one(C2S, binary(QUIT))
    assert msg.command.is_quit and not msg.quiet
    assert one(C2S, binary(QUITQ)).quiet


def test_binary_unknown_opcode() -> None:
    msg = one(C2S, binary(0xFF))
    assert message_fields(msg)["command"] == "UNKNOWN" and message_fields(msg)["opcode"] == ""


def test_binary_get() -> None:
    msg = one(C2S, binary(GET, key=b"key"))
    assert message_fields(msg) == {"command": "get", "type": "Load", "opcode": "Get", "opcode_value": 0, "opaque": 0,
                                   "keys": ["key"], "quiet": False, "vbucket": 0}
    msg = one(C2S, binary(GET, cas=1234, extras=u32(1), value=b"value"))
    fields = message_fields(msg)
    assert fields["cas_unique"] == 1234 and fields["quiet"] is False and msg.status == 0


def test_binary_set_any_split() -> None:
    data = binary(SET, extras=u32(0x1F2F) + u32(0x11223344), key=b"key", value=b"value")
    msg = one(C2S, data)
    assert (msg.keys, msg.flags, msg.exptime, msg.byte_count, msg.values) == (("key",), 0x1F2F, 0x11223344, 5,
                                                                              (b"value",))
    fields = message_fields(msg)
    assert (fields["command"], fields["opcode"], fields["flags"], fields["exptime"]) == ("set", "Set", 0x1F2F,
                                                                                        0x11223344)
    parser = McParser(C2S, KEEP)
    assert parser.feed(data[0:16], 0) == [] and parser.feed(data[16:28], 0) == [] \
        and parser.feed(data[28:37], 0) == []
    assert len(parser.feed(data[37:], 0)) == 1


def test_binary_counters() -> None:
    msg = one(C2S, binary(INCR, extras=u64(5) + u64(1) + u32(0x11223344), key=b"key"))
    fields = message_fields(msg)
    assert (fields["command"], fields["opcode"], fields["delta"], fields["initial"], fields["exptime"]) == (
        "incr", "Increment", 5, 1, 0x11223344)
    reply = one(S2C, binary(INCR, request=False, value=bytes([1, 2, 3, 4, 5, 6, 7, 8])))
    fields = message_fields(reply)
    assert fields["status"] == "Success" and fields["value"] == 0x0102030405060708 and "count_values" not in fields


def test_binary_version_and_stat_replies() -> None:
    version = one(S2C, binary(VERSION, request=False, value=b"1.2.3"))
    assert version.values == () and message_fields(version)["version"] == "1.2.3"
    stat = one(S2C, binary(STAT, request=False, key=b"statKey", value=b"1000"))
    assert stat.stats == (("statKey", "1000"),) and not stat.done
    assert one(S2C, binary(STAT, request=False)).done  # the empty terminator


def test_binary_invalid_stat_reply() -> None:
    with pytest.raises(ParseError, match="no keys"):
        McParser(S2C).feed(binary(STAT, request=False, value=b"abc"), 0)


def test_binary_error_reply_keeps_its_text() -> None:
    msg = one(S2C, binary(GET, request=False, status=1, value=b"Not found"))
    fields = message_fields(msg)
    assert fields["status"] == "Key not found" and fields["status_code"] == 1 and fields["bytes"] == 9


def test_binary_bad_lengths() -> None:
    bad = bytearray(binary(SET, extras=u32(0) + u32(0), key=b"k", value=b"v"))
    bad[8:12] = (1).to_bytes(4, "big")  # body shorter than extras + key
    with pytest.raises(ParseError, match="shorter than"):
        McParser(C2S).feed(bytes(bad), 0)


def test_gap_inside_a_value_is_skipped_and_noted() -> None:
    parser = McParser(C2S, KEEP)
    parser.feed(b"set k 0 0 100\r\n" + b"a" * 10, 0)
    assert parser.gap(50, 1) == Gap([], True)
    (msg,) = parser.feed(b"b" * 40 + b"\r\n", 1)
    assert msg.notes == ("Packet loss while capturing the request",) and msg.bytes_lost == 50
    assert msg.size == len(b"set k 0 0 100\r\n") + 52 and msg.count_values == 1
    assert not McParser(C2S).gap(10, 1).in_sync  # between messages: not recoverable


# -- UDP ---------------------------------------------------------------------------------------


def test_udp_header() -> None:
    header = parse_udp_header(udp_frame(10, 1, 4, b"x"), C2S)
    assert (header.request_id, header.seq, header.count) == (10, 1, 4)
    for bad, reason in ((b"\x00\x01\x00", "needs 8 bytes"), (udp_frame(1, 0, 0, b""), "count 0"),
                        (udp_frame(1, 0, 1025, b""), "count 1025"), (udp_frame(1, 4, 4, b""), "out of range")):
        with pytest.raises(ParseError, match=reason):
            parse_udp_header(bad, C2S)


def test_udp_message_merges_replies() -> None:
    msg = parse_udp_message(b"VALUE a 0 1\r\nx\r\nVALUE b 0 2\r\nyy\r\nEND\r\n", S2C, 5, KEEP)
    assert msg.done and msg.keys == ("a", "b") and msg.byte_count == 3 and msg.values == (b"x", b"yy")
    with pytest.raises(ParseError, match="incomplete"):
        parse_udp_message(b"VALUE a 0 10\r\nx", S2C, 5, KEEP)
