"""Thrift TBinary parsing and pairing on literal bytes, fed whole, byte by byte and at random cuts.

The byte strings and expectations are those of Packetbeat's thrift_test.go
(readString, readMessageBegin, readField, messageParser, the ParseSimple*,
OneWay*, Mismatch, NoReply, Obfuscate, Exception, ParametersNames,
ExceptionName and GapInStream tests), plus the limits pktbeat adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.protocols.thrift.parser import (
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    ParserSettings,
    ThriftParser,
)
from agent.protocols.thrift.values import go_float, go_quote, render_string
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.thrift import messages as m

PORT = 9090


def three_ways(steps: list[Step], **options: Any) -> list[Any]:
    return assert_same_three_ways("thrift", steps, options=options, server_port=PORT)


def params_of(field_hex: str, **options: Any) -> str:
    """thrift.params of a call whose only argument is the literal field `field_hex`."""
    call = m.message("test", bytes.fromhex(field_hex) + b"\x00")
    (txn,) = three_ways([Step(C2S, call, 1), Step(S2C, m.message("test", b"\x00", mtype=2), 2)], **options)
    return str(txn.fields["thrift"]["params"])


def return_of(reply_hex: str, method: str, **options: Any) -> dict[str, Any]:
    call = m.message(method, b"\x00")
    (txn,) = three_ways([Step(C2S, call, 1), Step(S2C, bytes.fromhex(reply_hex), 2)], **options)
    return dict(txn.fields["thrift"])


# -- values (readString, readField) -------------------------------------------------


@pytest.mark.parametrize(("field_hex", "options", "value"), [
    ("08000100000001", {}, "1"),
    ("0600010001", {}, "1"),
    ("0a00010000000000000001", {}, "1"),
    ("0400013ff3333333333333", {}, "1.2"),
    ("02000101", {}, "true"),
    ("02000100", {}, "false"),
    ("0b00010000000568656c6c6f", {}, '"hello"'),
    ("0b00010000000568656c6c6f", {"string_max_size": 3}, '"hel..."'),
    ("0b00010000000568106c6c6f", {}, '"h\\x10llo"'),
    ("0b000100000000", {}, '""'),
    ("0b000100000008ab0c1d281a000000", {}, "ab0c1d281a000000"),
    ("0f00010600000003000100020003", {}, "[1, 2, 3]"),
    ("0f00010600000003000100020003", {"collection_max_size": 1}, "[1, ...]"),
    ("0f00010600000000", {}, ""),  # Packetbeat prints an empty list as nothing at all
    ("0e00010600000003000100020003", {}, "{1, 2, 3}"),
    ("0e00010600000003000100020003", {"collection_max_size": 2}, "{1, 2, ...}"),
    ("0d00010b0600000003000000016100010000000163000300000001620002", {}, '{"a": 1, "c": 3, "b": 2}'),
    ("0d00010b0600000003000000016100010000000163000300000001620002", {"collection_max_size": 2},
     '{"a": 1, "c": 3, ...}'),
    ("0d00010b0600000000", {}, "{}"),
    ("0c000108000100000001080002000000000800030000000400", {}, "(1: 1, 2: 0, 3: 4)"),
    ("0c000108000100000001080002000000000800030000000400", {"collection_max_size": 2}, "(1: 1, 2: 0, ...)"),
    ("0c0001080001000000010b00020000000568656c6c6f00", {}, '(1: 1, 2: "hello")'),
    ("0c0001080001000000010c0002080001000000010b00020000000568656c6c6f0000", {},
     '(1: 1, 2: (1: 1, 2: "hello"))'),
    ("0c0001080001000000010e0002060000000300010002000300", {}, "(1: 1, 2: {1, 2, 3})"),
    ("0b00010000000568656c6c6f", {"obfuscate_strings": True}, '"*"'),
    ("03000181", {}, "129"),  # bytes, i16 and i32 print unsigned, as Packetbeat prints them
    ("0600018000", {}, "32768"),
    ("080001ffffffff", {}, "4294967295"),
    ("0a0001ffffffffffffffff", {}, "-1"),
])
def test_field_values(field_hex: str, options: dict[str, Any], value: str) -> None:
    assert params_of(field_hex, **options) == f"(1: {value})"


def test_string_cut_inside_a_utf8_character_prints_hex() -> None:
    raw = "éé".encode()
    assert params_of("0b0001" + m.string(raw).hex(), string_max_size=3) == f"(1: {(raw[:3] + b'...').hex()})"


def test_go_renderings() -> None:
    assert go_quote("h\x10llo") == '"h\\x10llo"'
    assert go_quote('a"b\\c\n\t\x7f\u00a0\u200b') == '"a\\"b\\\\c\\n\\t\\x7f\\u00a0\\u200b"'
    assert go_quote("日本") == '"日本"'
    assert [go_float(v) for v in (2.5, 2.0, 1e21, 1e-7, -0.0, float("inf"), float("nan"))] == [
        "2.5", "2", "1000000000000000000000", "0.0000001", "-0", "+Inf", "NaN"]
    assert render_string(b"", False, True) == '""'  # empty strings stay "" even when obfuscated


# -- message headers (readMessageBegin) ----------------------------------------------


def parse(data: bytes, direction: Direction = Direction.TO_SERVER, **options: Any) -> list[Any]:
    return ThriftParser(direction, ParserSettings(**options)).feed(data, 1)


def test_message_begin_strict_and_old_style() -> None:
    (msg,) = parse(bytes.fromhex("800100010000000470696e670000000000"))
    assert (msg.method, msg.type, msg.seqid, msg.fields) == ("ping", 1, 0, ())
    (msg,) = parse(bytes.fromhex("800100010000000470696e670000000100"))
    assert msg.seqid == 1
    (msg,) = parse(bytes.fromhex("0000000470696e67010000000000"))  # no version: name, type, seqid
    assert (msg.method, msg.type, msg.seqid) == ("ping", 1, 0)
    # A declared name one byte longer than what is there: incomplete, not an error.
    assert parse(bytes.fromhex("800100010000000570696e6700000001")) == []
    assert parse(bytes.fromhex("0000000570696e670100000000")) == []


def test_bad_headers_are_parse_errors() -> None:
    for data in (bytes.fromhex("800200010000000470696e670000000000"),  # version 2
                 bytes.fromhex("800100090000000470696e670000000000"),  # message type 9
                 bytes.fromhex("80010001ffffffff70696e670000000000")):  # negative name length
        with pytest.raises(ParseError):
            parse(data)


# -- replies (messageParser) ---------------------------------------------------------


def test_reply_values() -> None:
    assert return_of("8001000200000005616464313600000000060000000200", "add16") == {
        "params": "()", "return_value": "2"}
    assert return_of("800100020000000b6563686f5f737472696e67000000000b000000000005"
                     "68656c6c6f00", "echo_string")["return_value"] == '"hello"'
    assert return_of("80010002000000096563686f5f6c697374000000000f00000600000003000100"
                     "02000300", "echo_list")["return_value"] == "[1, 2, 3]"
    assert return_of("80010002000000086563686f5f6d6170000000000d00000b06000000030000000161000100000001"
                     "6300030000000162000200", "echo_map")["return_value"] == '{"a": 1, "c": 3, "b": 2}'
    assert return_of("800100020000000963616c63756c617465000000000800000000000500", "calculate") == {
        "params": "()", "return_value": "5"}
    assert return_of("800100020000000b6563686f5f62696e617279000000000b000000000008ab0c1d281a00000000",
                     "echo_binary")["return_value"] == "ab0c1d281a000000"


def test_exception_reply() -> None:
    (txn,) = three_ways([Step(C2S, m.CALCULATE_CALL, 1), Step(S2C, m.CALCULATE_EXCEPTION, 2)],
                        send_request=True, send_response=True)
    assert txn.status == "Error"
    assert txn.fields["thrift"] == {"params": "(1: 1, 2: (1: 1, 2: 0, 3: 4))", "return_value": "",
                                    "exceptions": '(1: (1: 4, 2: "Cannot divide by 0"))'}
    assert txn.fields["response"] == 'Exceptions: (1: (1: 4, 2: "Cannot divide by 0"))'
    assert txn.fields["request"] == txn.fields["query"] == "calculate(1: 1, 2: (1: 1, 2: 0, 3: 4))"


def test_application_exception_message() -> None:
    body = m.struct_(m.field(m.T_STRING, 1, m.string("Internal error")), m.field(m.T_I32, 2, m.i32(6)))
    (txn,) = three_ways([Step(C2S, m.PING_CALL, 1), Step(S2C, m.message("ping", body, mtype=3), 2)])
    assert txn.status == "Error"
    assert txn.fields["thrift"]["exceptions"] == '(1: "Internal error", 2: 6)'


# -- transactions --------------------------------------------------------------------


def test_simple_tbinary() -> None:
    (txn,) = three_ways([Step(C2S, m.PING_CALL, 1_000), Step(S2C, m.PING_REPLY, 3_000)])
    assert txn.fields == {"method": "ping", "path": "", "query": "ping()",
                          "thrift": {"params": "()", "return_value": ""}}
    assert (txn.client_bytes, txn.server_bytes, txn.ts_ns, txn.end_ns, txn.status) == (17, 17, 1_000, 3_000, "OK")


def test_simple_tframed_whole_split_and_interleaved() -> None:
    req, rep = m.ADD_CALL_FRAMED, m.ADD_REPLY_FRAMED
    orders = [
        [Step(C2S, req, 1), Step(S2C, rep, 2)],
        [Step(C2S, req[:9], 1), Step(C2S, req[9:], 2), Step(S2C, rep[:12], 3), Step(S2C, rep[12:], 4)],
        [Step(C2S, req[:9], 1), Step(S2C, rep[:12], 2), Step(C2S, req[9:], 3), Step(S2C, rep[12:], 4)],
    ]
    for steps in orders:
        (txn,) = three_ways(steps, transport_type="framed")
        assert txn.fields["thrift"] == {"params": "(1: 1, 2: 1)", "return_value": "2"}
        assert (txn.client_bytes, txn.server_bytes) == (0x1E, 0x17)  # the frame sizes


def test_oneway_call_then_fin() -> None:
    (txn,) = three_ways([Step(C2S, m.ZIP_CALL_FRAMED, 1, fin=True)], transport_type="framed")
    assert txn.fields["thrift"] == {"params": "()"}  # no return_value: no reply
    assert txn.server_bytes is None and txn.end_ns is None


def test_two_calls_the_first_was_oneway() -> None:
    zip_, add = three_ways([Step(C2S, m.ZIP_CALL_FRAMED, 1), Step(C2S, m.ADD_CALL_FRAMED, 2),
                            Step(S2C, m.ADD_REPLY_FRAMED, 3)], transport_type="framed")
    assert (zip_.fields["method"], zip_.fields["thrift"]) == ("zip", {"params": "()"})
    assert (add.fields["method"], add.fields["thrift"]["return_value"]) == ("add", "2")


def test_oneway_message_type_is_published_at_once() -> None:
    call = m.message("zip", b"\x00", mtype=4)
    (txn,) = three_ways([Step(C2S, call, 1)])
    assert txn.fields["method"] == "zip" and "return_value" not in txn.fields["thrift"]


def test_reply_to_another_call_gives_no_transaction() -> None:
    assert three_ways([Step(C2S, m.ZIP_CALL_FRAMED, 1), Step(S2C, m.ADD_REPLY_FRAMED, 2)],
                      transport_type="framed") == []
    # Same name, other sequence id: not this call's reply either.
    assert three_ways([Step(C2S, m.PING_CALL, 1), Step(S2C, m.message("ping", b"\x00", mtype=2, seqid=7), 2)]) == []


def test_no_reply_capture() -> None:
    steps = [Step(C2S, m.ADD_CALL_FRAMED, 1), Step(S2C, m.ADD_REPLY_FRAMED, 2)] * 2
    txns = three_ways(steps, transport_type="framed", capture_reply=False)
    assert [t.fields["thrift"] for t in txns] == [{"params": "(1: 1, 2: 1)", "return_value": ""}] * 2
    # Unframed: the reply's body is not read; the direction waits for the next call.
    plain = [Step(C2S, m.message("add", bytes.fromhex("08000100000001080002000000010" + "0")), 1),
             Step(S2C, m.message("add", bytes.fromhex("080000000000020" + "0"), mtype=2), 2)] * 2
    txns = three_ways(plain, capture_reply=False)
    assert [t.fields["thrift"]["return_value"] for t in txns] == ["", ""]


def test_obfuscated_strings() -> None:
    (txn,) = three_ways([Step(C2S, m.ECHO_STRING_CALL_FRAMED, 1), Step(S2C, m.ECHO_STRING_REPLY_FRAMED, 2)],
                        transport_type="framed", obfuscate_strings=True)
    assert txn.fields["thrift"] == {"params": '(1: "*")', "return_value": '"*"'}


def test_send_request_and_response_are_off_by_default() -> None:
    (txn,) = three_ways([Step(C2S, m.PING_CALL, 1), Step(S2C, m.PING_REPLY, 2)])
    assert "request" not in txn.fields and "response" not in txn.fields


# -- IDL names -----------------------------------------------------------------------


@pytest.fixture
def calculator_idl(tmp_path: Path) -> str:
    path = tmp_path / "test.thrift"
    path.write_text("""
        exception InvalidOperation {
          1: i32 what,
          2: string why
        }
        service Test {
           i32 add(1:i32 num1, 2: i32 num2),
           i32 calculate(1:i32 logid, 2:Work w) throws (1:InvalidOperation ouch),
        }
    """)
    return str(path)


def test_parameter_names(calculator_idl: str) -> None:
    (txn,) = three_ways([Step(C2S, m.ADD_CALL_FRAMED, 1), Step(S2C, m.ADD_REPLY_FRAMED, 2)],
                        transport_type="framed", idl_files=[calculator_idl])
    assert txn.fields["thrift"] == {"params": "(num1: 1, num2: 1)", "service": "Test", "return_value": "2"}
    assert (txn.fields["path"], txn.fields["query"]) == ("Test", "add(num1: 1, num2: 1)")


def test_exception_names(calculator_idl: str) -> None:
    (txn,) = three_ways([Step(C2S, m.CALCULATE_CALL, 1), Step(S2C, m.CALCULATE_EXCEPTION, 2)],
                        idl_files=[calculator_idl])
    assert txn.fields["thrift"] == {"params": "(logid: 1, w: (1: 1, 2: 0, 3: 4))", "service": "Test",
                                    "return_value": "", "exceptions": '(ouch: (1: 4, 2: "Cannot divide by 0"))'}


# -- loss ------------------------------------------------------------------------------


def test_gap_in_the_reply_keeps_the_call(calculator_idl: str) -> None:
    cut = m.CALCULATE_EXCEPTION[:-11]  # the last bytes are lost
    (txn,) = three_ways([Step(C2S, m.CALCULATE_CALL, 1), Step(S2C, cut, 2), Step(S2C, gap=11, ts_ns=3)],
                        idl_files=[calculator_idl])
    assert txn.fields["thrift"] == {"params": "(logid: 1, w: (1: 1, 2: 0, 3: 4))", "service": "Test",
                                    "return_value": ""}
    assert txn.notes == ["Packet loss while capturing the response"] and txn.status == "OK"


def test_gap_in_the_call_gives_no_transaction(calculator_idl: str) -> None:
    steps = [Step(C2S, bytes.fromhex("800100010000000963616c63756c6174"), 1), Step(C2S, gap=5, ts_ns=2),
             Step(S2C, m.CALCULATE_EXCEPTION, 3)]
    assert three_ways(steps, idl_files=[calculator_idl]) == []


def test_the_stream_resumes_after_a_gap() -> None:
    steps = [Step(C2S, m.PING_CALL[:5], 1), Step(C2S, gap=12, ts_ns=2),
             Step(C2S, m.CALCULATE_CALL, 3), Step(S2C, m.message("calculate", b"\x08\x00\x00\x00\x00\x00\x05\x00",
                                                                 mtype=2), 4)]
    (txn,) = three_ways(steps)
    assert txn.fields["thrift"]["return_value"] == "5"


# -- limits ------------------------------------------------------------------------------


def test_too_many_struct_fields_is_an_error() -> None:
    body = m.struct_(*(m.field(m.T_I32, i, m.i32(i)) for i in range(1, 4)))
    call = m.message("many", body)
    with pytest.raises(ParseError, match="more than 2 fields"):
        parse(call, drop_after_n_struct_fields=2)
    assert run_stream("thrift", [Step(C2S, call, 1), Step(S2C, m.message("many", b"\x00", mtype=2), 2)],
                      options={"drop_after_n_struct_fields": 2}, server_port=PORT) == []


def test_top_level_fields_past_collection_max_size() -> None:
    body = m.struct_(*(m.field(m.T_I32, i, m.i32(i)) for i in range(1, 5)))
    assert params_of(body[:-1].hex(), collection_max_size=2) == "(1: 1, 2: 2, ...)"


@pytest.mark.parametrize("payload", [
    "0b0001ffffffff",  # negative string length
    "0f000106ffffffff",  # negative list size
    "0d00010b06ffffffff",  # negative map size
    "0f00011100000001",  # list of an unknown type
    "11000100",  # unknown field type
])
def test_malformed_values_are_parse_errors(payload: str) -> None:
    with pytest.raises(ParseError):
        parse(m.message("bad", bytes.fromhex(payload)))


def test_nesting_is_bounded() -> None:
    nested = bytes.fromhex("0f0001") + bytes.fromhex("0f00000001") * 70
    with pytest.raises(ParseError, match="nested deeper"):
        parse(m.message("deep", nested))


def test_large_string_is_streamed_not_buffered() -> None:
    parser = ThriftParser(Direction.TO_SERVER, ParserSettings())
    size = 3 << 20
    head = m.message("blob", m.field(m.T_STRING, 1, m.string(b"")))[:-4] + m.i32(size)
    assert parser.feed(head, 1) == []
    chunk = b"x" * 65536
    for _ in range(size // len(chunk)):
        assert parser.feed(chunk, 2) == []
        assert parser.buf.unread < 1024  # nothing accumulates
    (msg,) = parser.feed(b"\x00", 3)
    assert msg.fields[0].value == '"' + "x" * 200 + '..."' and msg.size == len(head) + size + 1


def test_message_size_limit_on_the_socket_transport() -> None:
    parser = ThriftParser(Direction.TO_SERVER, ParserSettings())
    head = m.message("blob", m.field(m.T_STRING, 1, m.string(b"")))[:-4] + m.i32(MAX_MESSAGE_BYTES + 10)
    parser.feed(head, 1)
    chunk = bytes(1 << 20)
    with pytest.raises(ParseError, match="larger than"):
        for _ in range(MAX_MESSAGE_BYTES // len(chunk) + 2):
            parser.feed(chunk, 2)


def test_oversized_frames_are_skipped_unread() -> None:
    parser = ThriftParser(Direction.TO_SERVER, ParserSettings(framed=True))
    size = MAX_FRAME_BYTES + 100
    assert parser.feed(m.i32(size), 1) == []
    chunk = bytes(1 << 20)
    sent = 0
    while sent + len(chunk) <= size:
        assert parser.feed(chunk, 2) == []
        sent += len(chunk)
    (msg,) = parser.feed(bytes(size - sent) + m.ADD_CALL_FRAMED, 3)
    assert msg.method == "add" and parser.oversized_frames == 1


def test_frame_and_message_must_agree() -> None:
    short_frame = m.framed(m.PING_CALL)[:3] + bytes([len(m.PING_CALL) - 1]) + m.PING_CALL
    with pytest.raises(ParseError, match="longer than its frame"):
        parse(short_frame, framed=True)
    # A frame longer than its message: the rest of the frame is skipped.
    padded = m.i32(len(m.PING_CALL) + 3) + m.PING_CALL + b"abc" + m.framed(m.PING_CALL)
    assert [msg.method for msg in parse(padded, framed=True)] == ["ping", "ping"]
