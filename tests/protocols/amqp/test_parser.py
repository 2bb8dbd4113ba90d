"""AMQP framing, method decoding and transactions on literal bytes, fed whole, byte by byte and at random cuts.

The byte strings and expectations come from Packetbeat's amqp_test.go
(UnknownMethod, FrameSize, PartialFrameSize, WrongShortStringSize, the method
tests, PublishMessage, DeliverMessage, MessagePropertiesFields, MaxBodyLength,
HideArguments, GetTable, TableInception, ArrayFields, WrongTable,
ChannelCloseErrorMethod, ConnectionCloseNoError, MultipleBodyFrames), plus
pktbeat's per-channel pairing and limits.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.protocols.amqp.parser import MAX_FRAME_BYTES, AmqpParser, ParserSettings
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.amqp import frames as f

PORT = 5672
H = bytes.fromhex


def three_ways(steps: list[Step], **options: Any) -> list[Any]:
    return assert_same_three_ways("amqp", steps, options=options, server_port=PORT)


def parse(data: bytes, **options: Any) -> tuple[list[Any], dict[str, int]]:
    parser = AmqpParser(Direction.TO_SERVER, ParserSettings(**options))
    return parser.feed(data, 1), parser.counters


def only(data: bytes, **options: Any) -> Any:
    msgs, _ = parse(data, **options)
    assert len(msgs) == 1, msgs
    return msgs[0]


# -- framing ---------------------------------------------------------------------------


def test_unknown_method_is_skipped_and_counted() -> None:
    msgs, counters = parse(H("0100010000000f006e000c0000075465737447657401ce") + f.method(1, 60, 80, bytes(9)))
    assert [m.method for m in msgs] == ["basic.ack"] and counters == {"unknown_methods": 1}


def test_incomplete_frames_wait() -> None:
    assert parse(H("0100000000000c000a001fffff000200")) == ([], {})
    assert parse(H("414d515000060606010000000000")) == ([], {})  # a protocol header, then a partial frame


def test_wrong_short_string_size() -> None:
    bad_header = H("02000100000019003c000000000000000000058000ac746578742f706c61696ece")
    msgs, counters = parse(bad_header)
    assert msgs == [] and counters == {"orphan_content_frames": 1}  # no method before it
    publish = f.method(1, 60, 40, b"\x00\x00" + f.shortstr("") + f.shortstr("q") + b"\x00")
    msgs, counters = parse(publish + bad_header + f.body(1, b"hello") + f.method(1, 60, 80, bytes(9)))
    assert [m.method for m in msgs] == ["basic.ack"]
    assert counters == {"malformed_frames": 1, "incomplete_content": 1, "orphan_content_frames": 1}


def test_frame_structure_errors_raise() -> None:
    with pytest.raises(ParseError, match="0xCE"):
        parse(H("0100010000000400280033cf"))
    with pytest.raises(ParseError, match="unknown frame type"):
        parse(H("0900010000000400280033ce"))


def test_protocol_header_and_heartbeats_are_skipped() -> None:
    msgs, counters = parse(f.PROTOCOL_HEADER + f.frame(8, 0, b"") + f.method(1, 60, 80, bytes(9)))
    assert [m.method for m in msgs] == ["basic.ack"] and counters == {}


# -- method arguments ------------------------------------------------------------------


def test_queue_declaration() -> None:
    msg = only(H("0100010000001a0032000a00000e546869732069732061205445535418" "00000000ce"))
    assert (msg.method, msg.request, msg.size) == ("queue.declare", "This is a TEST", 34)
    assert msg.fields == {"queue": "This is a TEST", "passive": False, "durable": False, "exclusive": False,
                          "auto-delete": True, "no-wait": True}


def test_exchange_declaration() -> None:
    msg = only(H("0100010000001c0028000a00000a6c6f67735f746f70696305746f7069630200000000ce"))
    assert (msg.method, msg.request) == ("exchange.declare", "logs_topic")
    assert msg.fields == {"exchange": "logs_topic", "exchange-type": "topic", "passive": False, "durable": True,
                          "no-wait": False}
    empty_type = only(f.method(1, 40, 10, b"\x00\x00" + f.shortstr("x") + f.shortstr("") + b"\x00"))
    assert empty_type.fields["exchange-type"] == "direct"


def test_basic_consume() -> None:
    msg = only(H("01000100000028003c001400000e4957616e74546f436f6e73756d650d6d6973746572436f6e73756d65"
                 "0300000000ce"))
    assert (msg.method, msg.request) == ("basic.consume", "IWantToConsume")
    assert msg.fields == {"queue": "IWantToConsume", "consumer-tag": "misterConsume", "no-local": True,
                          "no-ack": True, "exclusive": False, "no-wait": False}


def test_exchange_deletion_and_bind() -> None:
    msg = only(H("010001000000100028001400000844656c6574654d6501ce"))
    assert (msg.method, msg.request, msg.fields) == ("exchange.delete", "DeleteMe",
                                                     {"exchange": "DeleteMe", "if-unused": True, "no-wait": False})
    msg = only(H("0100010000001c0028001e0000057465737431057465737432044d5346540000000000ce"))
    assert (msg.method, msg.request) == ("exchange.bind", "test2 test1")
    assert msg.fields == {"destination": "test1", "source": "test2", "routing-key": "MSFT", "no-wait": False}


def test_channel_error_fields() -> None:
    msg = only(H("0100010000009000140028019685505245434f4e444954494f4e5f4641494c4544202d20696e6571756976616c"
                 "656e742061726720276175746f5f64656c6574652720666f722065786368616e676520277465737445786368616e"
                 "67652720696e2076686f737420272f273a207265636569766564202774727565272062757420637572726"
                 "56e74206973202766616c7365270028000ace"))
    assert msg.method == "channel.close"
    assert msg.fields == {"reply-code": 406, "class-id": 40, "method-id": 10, "reply-text": (
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange 'testExchange' in vhost '/': "
        "received 'true' but current is 'false'")}


def test_basic_nack() -> None:
    msg = only(H("0100010000000d003c0078000000000000000102ce"))
    assert (msg.method, msg.fields) == ("basic.nack", {"delivery-tag": 1, "multiple": False, "requeue": True})


GET_TABLE = H("010001000000890032000a00000a5465737448656164657218000000730974696d657374616d70540000000055f7e40903"
              "6269746205076465636696d616c440500ec49050568656c6c6f530000001f4869206461726c696e6720c3aac3aac3aac3"
              "aac3aac3aac3aae697a5e69cac06646f75626c656440453e100cbd7da405666c6f61746641"
              "24cccd04626f6f6c7401ce".replace("6465636696d616c", "646563696d616c"))


def test_get_table() -> None:
    msg = only(GET_TABLE)
    assert (msg.method, msg.request) == ("queue.declare", "TestHeader")
    assert (msg.fields["durable"], msg.fields["no-wait"], msg.fields["auto-delete"], msg.fields["exclusive"]) == (
        False, True, True, False)
    assert msg.fields["arguments"] == {"timestamp": "September 15 09:25:29 2015", "bit": 5, "decimal": "154.85189",
                                       "hello": "Hi darling êêêêêêê日本", "double": 42.4848648, "float": 10.3,
                                       "bool": True}
    assert msg.notes == ()


def test_table_inception() -> None:
    msg = only(H("010001000000860028000a000005746573743105746f706963020000006f09696e63657074696f6e460000005006"
                 "696e636570315300000006445245414d5306696e6365703253000000064d4152494f4e056c696d626f460000002106"
                 "6c696d626f315300000004436f6262066c696d626f32530000000553616974"
                 "6f06626967496e746c00071afd498d0000ce"))
    assert msg.method == "exchange.declare" and msg.fields["exchange"] == "test1" and msg.notes == ()
    assert msg.fields["arguments"] == {"bigInt": 2000000000000000, "inception": {
        "incep1": "DREAMS", "incep2": "MARION", "limbo": {"limbo1": "Cobb", "limbo2": "Saito"}}}


def test_array_fields() -> None:
    msg = only(H("010001000000260028000a000005746573743105746f706963020000000f05617272617978000000040a007dd2ce"))
    assert msg.fields["arguments"] == {"array": "[10, 0, 125, 210]"} and msg.notes == ()
    msg = only(H("010001000000b60028000a000005746573743105746f706963020000009f0474657374530000001061206c6f74206f"
                 "6620617272617973210a6172726179666c6f6174410000001b64404540000000000064403ccccccccccccd6440"
                 "40a66666666666096172726179626f6f6c410000000a740174007400740174010b6172726179737472696e6741"
                 "00000030530000000441414141530000000442424242530000001 9d090d0bdd0bdd0b020d09ad0b0d180d0b5d0bd"
                 "d0b8d0bdd0b0ce".replace(" ", "")))
    assert msg.fields["arguments"] == {
        "test": "a lot of arrays!", "arrayfloat": {"0": 42.5, "1": 28.8, "2": 33.3},
        "arraybool": {"0": True, "1": False, "2": False, "3": True, "4": True},
        "arraystring": {"0": "AAAA", "1": "BBBB", "2": "Анна Каренина"}}


def test_wrong_tables_are_notes() -> None:
    too_big = GET_TABLE[:25] + b"\x00\x00\x00\xda" + GET_TABLE[29:]
    nonsense = H("010001000000890032000a00000a5465737448656164657218000000730974696d657374616d7054004400005521e4"
                 "09036269743705076400036 96d616c447600ec49180568036c6c0b536400001f480a2064076e6c696e0520c3aac3aac3"
                 "4613aac3aac3aa01aae697a5e69cac3c780b75626c6564a4453e100cbd7da4320a6c0b090b664124cc1904626f6f6c"
                 "7401ce".replace(" ", ""))
    for data in (too_big, nonsense):
        msg = only(data)
        assert "arguments" not in msg.fields and msg.notes == ("Failed to parse additional arguments",)


@pytest.mark.parametrize("arguments", [
    "ffffffff",  # a table longer than the frame: the 32-bit offset must not wrap
    "0000000605616e6f746853",  # a long string whose length is missing
    "0000000a0161" "53ffffffff" "41",  # a long string of 4 GiB
    "0000000a0161" "41fffffff0" "00",  # an array of 4 GiB
    "0000000a0161" "46fffffff0" "00",  # a nested table of 4 GiB
    "0000000a0161" "78ffffffff" "00",  # a byte array of 4 GiB
    "000000030161" "5a",  # an unknown field type
])
def test_overflowing_lengths_are_notes(arguments: str) -> None:
    msg = only(f.queue_declare(1, "q", 0x10, H(arguments)))
    assert msg.notes == ("Failed to parse additional arguments",) and "arguments" not in msg.fields


def test_non_finite_floats_are_text() -> None:
    entries = (f.shortstr("nan") + b"d" + bytes.fromhex("7ff8000000000000") + f.shortstr("inf") + b"f"
               + bytes.fromhex("7f800000") + f.shortstr("low") + b"d" + bytes.fromhex("fff0000000000000"))
    msg = only(f.queue_declare(1, "q", 0x10, f.table(entries)))
    assert msg.fields["arguments"] == {"nan": "NaN", "inf": "+Inf", "low": "-Inf"}


def test_empty_table_at_the_end() -> None:
    msg = only(f.queue_declare(1, "q", 0x10, b"\x00\x00\x00\x00"))
    assert "arguments" not in msg.fields and msg.notes == ()
    msg = only(f.method(1, 50, 10, b"\x00\x00" + f.shortstr("q") + b"\x10"))  # no table at all
    assert msg.fields["queue"] == "q" and msg.notes == ()


# -- transactions ------------------------------------------------------------------------


def test_exchange_unbind_transaction() -> None:
    (txn,) = three_ways([Step(C2S, H("0100010000001c00280028000005746573743105746573743204" "4d5346540000000000ce"), 1),
                         Step(S2C, H("0100010000000400280033ce"), 2)], send_request=True)
    assert (txn.fields["method"], txn.fields["request"], txn.status) == (
        "exchange.unbind", "exchange.unbind test2 test1", "OK")
    assert txn.fields["amqp"] == {"destination": "test1", "source": "test2", "routing-key": "MSFT",
                                  "no-wait": False}
    assert txn.fields["event"] == {"action": "amqp.exchange.unbind"}
    assert (txn.client_bytes, txn.server_bytes, txn.ts_ns, txn.end_ns) == (36, 12, 1, 2)


PUBLISH = [H("0100010000001b003c002800000a6c6f67735f746f70696308414d51507465737400ce"),
           H("02000100000019003c0000000000000000001c80000a746578742f706c61696ece"),
           H("0300010000001c48656c6c6f204461726c696e672049276d20686f6d6520616761696ece")]


def test_publish_message() -> None:
    (txn,) = three_ways([Step(C2S, frame, i) for i, frame in enumerate(PUBLISH)], send_request=True)
    assert (txn.fields["method"], txn.fields["request"], txn.status) == (
        "basic.publish", "Hello Darling I'm home again", "OK")
    assert txn.fields["amqp"] == {"content-type": "text/plain", "exchange": "logs_topic", "routing-key": "AMQPtest",
                                  "immediate": False, "mandatory": False}
    assert (txn.client_bytes, txn.server_bytes, txn.end_ns) == (28, None, None)  # the body size


def test_deliver_message() -> None:
    steps = [Step(S2C, H("01000100000034003c003c0d6d6973746572436f6e73756d650000000000000002000c7465737445786368"
                         "616e67650b7465737444656c6976657272ce".replace("7272ce", "72ce")), 1),
             Step(S2C, H("02000100000019003c0000000000000000000580000a746578742f706c61696ece"), 2),
             Step(S2C, H("030001000000056b696b6f6fce"), 3)]
    (txn,) = three_ways(steps, send_request=True, send_response=True)
    assert (txn.fields["method"], txn.fields["response"], txn.fields["request"]) == ("basic.deliver", "kikoo", "")
    assert txn.fields["amqp"] == {"consumer-tag": "misterConsume", "delivery-tag": 2, "redelivered": False,
                                  "exchange": "testExchange", "routing-key": "testDeliver",
                                  "content-type": "text/plain"}
    assert (txn.client_bytes, txn.server_bytes) == (None, 5)


def test_message_properties_fields() -> None:
    data = H("01000100000013003c00280000000a54657374486561646572" "00ce02000100000061003c0000000000000000001ab8e00a"
             "746578742f706c61696e0000002203796f70530000000468696869036e696c56066e756d6265726440444000000000000"
             "2060a656c206d656e73616a650000000055f81dc00c6c6f7665206d657373616765ce0300010000001a546573742068"
             "65616465722066696c656473" "20666f7265766572ce")
    msg = only(data)
    assert msg.method == "basic.publish" and msg.body == b"Test header fileds forever"
    assert msg.fields == {"routing-key": "TestHeader", "mandatory": False, "immediate": False,
                          "content-type": "text/plain", "delivery-mode": "persistent", "priority": 6,
                          "message-id": "el mensaje", "type": "love message",
                          "timestamp": "September 15 13:31:44 2015",
                          "headers": {"yop": "hihi", "nil": None, "number": 40.5}}


def test_async_methods_publish_at_once() -> None:
    (delete,) = three_ways([Step(C2S, H("010001000000120032002800000a5465737454686f6d617304ce"), 1)], send_request=True)
    assert (delete.fields["method"], delete.fields["request"]) == ("queue.delete", "queue.delete TestThomas")
    assert delete.fields["amqp"] == {"queue": "TestThomas", "if-unused": False, "if-empty": False, "no-wait": True}
    (reject,) = three_ways([Step(C2S, H("0100010000000d003c005a000000000000000101ce"), 1)],
                           send_request=True, send_response=True)
    assert (reject.fields["request"], reject.status, reject.fields["amqp"]["multiple"]) == (
        "basic.reject 1", "Error", True)
    assert reject.fields["response"] == ""
    (ack,) = three_ways([Step(C2S, f.method(1, 60, 80, bytes(7) + b"\x05\x01"), 1)])
    assert ack.fields["amqp"] == {"delivery-tag": 5, "multiple": True} and ack.status == "OK"


def test_get_empty_and_get() -> None:
    (empty,) = three_ways([Step(C2S, H("01000100000013003c004600000b526f626269654b65616e6501ce"), 1),
                           Step(S2C, H("01000100000005003c004800ce"), 2)], send_request=True, send_response=True)
    assert (empty.fields["method"], empty.fields["request"], empty.fields["response"], empty.status) == (
        "basic.get-empty", "basic.get RobbieKeane", "OK", "OK")
    get_ok = H("0100010000001a003c00470000000000000001000007546573744765740000 0001ce02000100000019003c000000000000"
               "0000001280000a746578742f706c61696ece03000100000012476574206d6520696620796f752064617265ce"
               .replace(" ", ""))
    (txn,) = three_ways([Step(C2S, H("0100010000000f003c0046000007546573744765740" "1ce"), 1), Step(S2C, get_ok, 2)],
                        send_request=True, send_response=True)
    assert (txn.fields["method"], txn.fields["request"], txn.fields["response"], txn.status) == (
        "basic.get", "basic.get TestGet", "Get me if you dare", "OK")
    assert txn.fields["amqp"]["message-count"] == 1 and txn.fields["amqp"]["queue"] == "TestGet"
    assert (txn.client_bytes, txn.server_bytes) == (23, 18)


def test_max_body_length() -> None:
    data = H("01000100000010003c002800000007546573744d61780" "0ce02000100000019003c0000000000000000001680000a746578742f"
             "706c61696ece0300010000001649276d2061207665727920626967206d657373616765ce")
    (txn,) = three_ways([Step(C2S, data, 1)], send_request=True, max_body_length=10)
    assert txn.fields["request"] == "I'm a very [...]" and "exchange" not in txn.fields["amqp"]
    data = H("01000100000010003c002800000007546573744d61780" "0ce02000100000018003c0000000000000000003a800009696d6167"
             "652f676966ce0300010000003a" + "41" * 58 + "ce")
    (txn,) = three_ways([Step(C2S, data, 1)], send_request=True, max_body_length=10)
    assert txn.fields["request"] == "65 65 65 65 65 65 65 65 65 65 [...]"
    assert txn.fields["amqp"]["content-type"] == "image/gif" and txn.client_bytes == 58


def test_hide_arguments_and_headers() -> None:
    declare = H("0100010000004d0032000a00000a546573744865616465721800000037" "04626f6f6c74010362697462050568656c6c6f53"
                "0000001f4869206461726c696e6720c3aac3aac3aac3aac3aac3aac3aae697a5e69cacce")
    (txn,) = three_ways([Step(C2S, declare, 1)], send_request=True, parse_headers=False, parse_arguments=False)
    assert txn.fields["request"] == "queue.declare TestHeader" and "arguments" not in txn.fields["amqp"]
    assert (txn.fields["amqp"]["durable"], txn.fields["amqp"]["auto-delete"]) == (False, True)
    publish = H("01000100000013003c00280000000a54657374486561646572" "00ce02000100000026003c0000000000000000001a98800a"
                "746578742f706c61696e02060a656c206d656e73616a65ce0300010000001a5465737420686561646572206669656c6473"
                "20666f7265766572ce")
    (txn,) = three_ways([Step(C2S, publish, 1)], send_request=True, parse_headers=False, parse_arguments=False)
    assert txn.fields["amqp"] == {"routing-key": "TestHeader", "mandatory": False, "immediate": False}
    assert txn.fields["request"].startswith("84 101 115 116 ")  # no content-type: printed as byte values
    (txn,) = three_ways([Step(C2S, declare, 1)])  # both parsed by default
    assert txn.fields["amqp"]["arguments"] == {"bool": True, "bit": 5, "hello": "Hi darling êêêêêêê日本"}


def test_recover() -> None:
    (txn,) = three_ways([Step(C2S, H("01000100000005003c006e01ce"), 1), Step(S2C, H("01000100000004003c006fce"), 2)],
                        send_request=True)
    assert (txn.fields["method"], txn.fields["request"], txn.fields["amqp"]) == (
        "basic.recover", "basic.recover", {"requeue": True})


def test_channel_close_error_then_close_ok() -> None:
    close = f.close(1, 406, "PRECONDITION_FAILED", 40, 10)
    (txn,) = three_ways([Step(S2C, close, 1), Step(C2S, H("0100010000000400280033ce"), 2)])
    assert (txn.fields["method"], txn.status, txn.notes) == ("channel.close", "Error", [])
    assert txn.fields["amqp"]["reply-code"] == 406 and txn.server_bytes == len(close)


def test_close_error_without_close_ok_is_published_when_idle() -> None:
    (txn,) = three_ways([Step(S2C, f.close(1, 404, "NOT_FOUND", 50, 20), 1)])
    assert txn.status == "Error" and txn.notes == ["Close-ok method not received by sender"]


def test_passive_declare_refused_by_channel_close_is_its_own_event() -> None:
    declare = f.queue_declare(1, "missing", 0x01)
    close = f.close(1, 404, "NOT_FOUND - no queue 'missing' in vhost '/'", 50, 10)
    steps = [Step(C2S, declare, 1), Step(S2C, close, 2), Step(C2S, f.close_ok(1), 3)]
    refused, closed = three_ways(steps, send_request=True, send_response=True)
    assert (refused.fields["method"], refused.status, refused.ts_ns, refused.end_ns) == ("queue.declare", "Error", 1, 2)
    amqp = refused.fields["amqp"]
    assert (amqp["queue"], amqp["passive"]) == ("missing", True)
    assert (amqp["reply-code"], amqp["reply-text"]) == (404, "NOT_FOUND - no queue 'missing' in vhost '/'")
    assert refused.fields["request"] == "queue.declare missing"
    assert refused.fields["response"] == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (refused.client_bytes, refused.server_bytes) == (len(declare), len(close))
    assert (closed.fields["method"], closed.status, closed.fields["amqp"]["reply-code"]) == ("channel.close", "Error",
                                                                                             404)
    assert closed.ts_ns == 2 and closed.end_ns == 3


def test_refused_method_dropped_as_packetbeat_does() -> None:
    steps = [Step(C2S, f.queue_declare(1, "missing", 0x01), 1), Step(S2C, f.close(1, 404, "NOT_FOUND", 50, 10), 2),
             Step(C2S, f.close_ok(1), 3)]
    counters = metrics.register("test.amqp")
    before = counters["unmatched_requests"]
    txns = run_stream("amqp", steps, options={"publish_refused_methods": False}, server_port=PORT)
    assert [(t.fields["method"], t.status) for t in txns] == [("channel.close", "Error")]
    assert counters["unmatched_requests"] == before + 1


def test_connection_close_refuses_the_waiting_methods_of_every_channel() -> None:
    steps = [Step(C2S, f.queue_declare(1, "one"), 1), Step(C2S, f.method(2, 50, 40, b"\x00\x00" + f.shortstr("two")
                                                                        + b"\x00"), 2),
             Step(S2C, f.close(0, 541, "INTERNAL_ERROR"), 3), Step(C2S, f.close_ok(0), 4)]
    one, two, closed = three_ways(steps)
    assert [(t.fields["method"], t.status) for t in (one, two, closed)] == [
        ("queue.declare", "Error"), ("queue.delete", "Error"), ("connection.close", "Error")]
    assert one.fields["amqp"]["reply-code"] == two.fields["amqp"]["reply-code"] == 541
    assert two.fields["amqp"]["reply-text"] == "INTERNAL_ERROR"


def test_a_normal_close_refuses_nothing() -> None:
    steps = [Step(C2S, f.queue_declare(1, "one"), 1), Step(C2S, f.close(1, 200, "bye"), 2),
             Step(S2C, f.close_ok(1), 3)]
    assert three_ways(steps) == []


def test_connection_close_no_error() -> None:
    steps = [Step(C2S, H("01000000000012000a003200c8076b74687862616900000000ce"), 1),
             Step(S2C, H("01000000000004000a0033ce"), 2)]
    (txn,) = three_ways(steps, hide_connection_information=False)
    assert (txn.fields["method"], txn.status, txn.notes) == ("connection.close", "OK", [])
    assert txn.fields["amqp"]["reply-code"] == 200
    assert three_ways(steps) == []  # a normal close is connection information


def test_multiple_body_frames() -> None:
    first = H("0100010000000e003c00280000000568656c6c6f00ce02000100000021003c0000000000000000002a80400a746578742f"
              "706c61696e0000000056a22873ce030001000000202a2a2a68656c6c6f2049206c696b6520746f207075626c6973682062"
              "6967206dce")
    (txn,) = three_ways([Step(C2S, first, 1), Step(C2S, H("0300010000000a657373616765732a2a2ace"), 2)],
                        send_request=True)
    assert txn.fields["request"] == "***hello I like to publish big messages***"
    assert txn.fields["amqp"]["timestamp"] == "January 22 13:02:43 2016"


CONNECTION = [
    Step(C2S, f.PROTOCOL_HEADER, 1),
    Step(S2C, f.method(0, 10, 10, b"\x00\x09" + f.table(f.shortstr("product") + b"S" + f.longstr("RabbitMQ"))
                       + f.longstr("PLAIN AMQPLAIN") + f.longstr("en_US")), 2),
    Step(C2S, f.method(0, 10, 11, f.table(b"") + f.shortstr("PLAIN") + f.longstr(b"\x00guest\x00guest")
                       + f.shortstr("en_US")), 3),
    Step(S2C, f.method(0, 10, 30, H("07ff000200000000")), 4),
    Step(C2S, f.method(0, 10, 31, H("07ff000200000000")), 5),
    Step(C2S, f.method(0, 10, 40, f.shortstr("/") + b"\x00\x00"), 6),
    Step(S2C, f.method(0, 10, 41, b"\x00"), 7),
    Step(C2S, f.method(1, 20, 10, b"\x00"), 8),
    Step(S2C, f.method(1, 20, 11, b"\x00\x00\x00\x00"), 9),
    Step(C2S, f.method(1, 60, 10, H("00000000000a00")), 10),
    Step(S2C, f.method(1, 60, 11), 11),
    Step(C2S, f.queue_declare(1, "jobs"), 12),
    Step(S2C, f.queue_declare_ok(1, "jobs", 3, 1), 13),
    Step(C2S, f.close(1, 200, "Normal shutdown"), 14),
    Step(S2C, f.close_ok(1), 15),
    Step(C2S, f.close(0, 200, "Goodbye"), 16),
    Step(S2C, f.close_ok(0), 17),
]


def test_connection_information_is_hidden_by_default() -> None:
    counters = metrics.register("test.amqp")
    before = dict(counters)
    (txn,) = three_ways(CONNECTION)
    assert txn.fields["method"] == "queue.declare"
    assert txn.fields["amqp"] == {"queue": "jobs", "passive": False, "durable": False, "exclusive": False,
                                  "auto-delete": False, "no-wait": False, "message-count": 3, "consumer-count": 1}
    assert counters["unmatched_requests"] == before.get("unmatched_requests", 0)
    assert counters["unmatched_responses"] == before.get("unmatched_responses", 0)


def test_connection_information_shown() -> None:
    txns = three_ways(CONNECTION, hide_connection_information=False, send_request=True)
    assert [t.fields["method"] for t in txns] == [
        "connection.start", "connection.tune", "connection.open", "channel.open", "basic.qos", "queue.declare",
        "channel.close", "connection.close"]
    start = txns[0].fields["amqp"]
    assert start == {"version-major": 0, "version-minor": 9, "mechanisms": "PLAIN AMQPLAIN", "locales": "en_US",
                     "server-properties": {"product": "RabbitMQ"}, "mechanism": "PLAIN", "locale": "en_US"}
    assert txns[1].fields["amqp"] == {"channel-max": 2047, "frame-max": 131072, "heartbeat": 0}
    assert txns[2].fields["request"] == "connection.open" and txns[2].fields["amqp"] == {"virtual-host": "/"}
    assert txns[4].fields["amqp"] == {"prefetch-size": 0, "prefetch-count": 10, "global": False}
    assert all(t.status == "OK" for t in txns)


def test_channels_are_paired_independently() -> None:
    steps = [Step(C2S, f.queue_declare(1, "one"), 1), Step(C2S, f.queue_declare(2, "two"), 2),
             Step(S2C, f.queue_declare_ok(2, "two", 2), 3), Step(S2C, f.queue_declare_ok(1, "one", 1), 4)]
    two, one = three_ways(steps)
    assert (two.fields["amqp"]["queue"], two.fields["amqp"]["message-count"]) == ("two", 2)
    assert (one.fields["amqp"]["queue"], one.fields["amqp"]["message-count"], one.end_ns) == ("one", 1, 4)


def test_second_request_replaces_the_first() -> None:
    steps = [Step(C2S, f.queue_declare(1, "first"), 1), Step(C2S, f.queue_declare(1, "second"), 2),
             Step(S2C, f.queue_declare_ok(1, "second"), 3)]
    (txn,) = three_ways(steps)
    assert txn.fields["amqp"]["queue"] == "second" and txn.ts_ns == 2


def test_basic_return_is_an_error_with_its_body() -> None:
    returned = (f.method(1, 60, 50, b"\x01\x38" + f.shortstr("NO_ROUTE") + f.shortstr("logs") + f.shortstr("nowhere"))
                + f.header(1, 4, 0x8000, f.shortstr("application/json")) + f.body(1, b"{}{}"))
    (txn,) = three_ways([Step(S2C, returned, 1)], send_response=True)
    assert (txn.fields["method"], txn.status, txn.fields["response"]) == ("basic.return", "Error", "{}{}")
    assert txn.fields["amqp"] == {"exchange": "logs", "routing-key": "nowhere", "reply-code": 312,
                                  "reply-text": "NO_ROUTE", "content-type": "application/json"}


def test_empty_body_completes_on_the_header() -> None:
    (txn,) = three_ways([Step(C2S, f.publish(1, "", "q", b""), 1)], send_request=True)
    assert txn.fields["request"] == "" and txn.client_bytes is None


def test_user_id_property() -> None:
    props = f.shortstr("alice")
    data = (f.method(1, 60, 40, b"\x00\x00" + f.shortstr("") + f.shortstr("q") + b"\x00")
            + f.header(1, 2, 0x0010, props) + f.body(1, b"hi"))
    (txn,) = three_ways([Step(C2S, data, 1)])
    assert txn.fields["user"] == {"id": "alice"} and txn.fields["amqp"]["user-id"] == "alice"


# -- loss and limits -------------------------------------------------------------------------


def test_gap_resynchronises_on_the_next_frame() -> None:
    steps = [Step(C2S, f.queue_declare(1, "lost")[:10], 1), Step(C2S, gap=30, ts_ns=2),
             Step(C2S, b"\x07garbage\x00\x00", 3), Step(C2S, f.queue_declare(1, "found"), 4),
             Step(S2C, f.queue_declare_ok(1, "found"), 5)]
    (txn,) = run_stream("amqp", steps, server_port=PORT)
    assert txn.fields["amqp"]["queue"] == "found"


def test_oversized_method_frame_is_skipped_unbuffered() -> None:
    parser = AmqpParser(Direction.TO_SERVER, ParserSettings())
    size = MAX_FRAME_BYTES + 10
    assert parser.feed(b"\x01\x00\x01" + size.to_bytes(4, "big"), 1) == []
    chunk = bytes(256 << 10)
    sent = 0
    while sent + len(chunk) <= size:
        parser.feed(chunk, 2)
        sent += len(chunk)
        assert len(parser._buf) - parser._pos < 16
    msgs = parser.feed(bytes(size - sent) + b"\xce" + f.queue_declare(1, "next"), 3)
    assert [m.fields["queue"] for m in msgs] == ["next"] and parser.counters == {"oversized_frames": 1}


def test_large_header_frame_is_joined_once() -> None:
    headers = f.table(b"".join(f.shortstr(f"h{i}") + b"S" + f.longstr("v" * 100) for i in range(5000)))
    data = (f.method(1, 60, 40, b"\x00\x00" + f.shortstr("") + f.shortstr("q") + b"\x00")
            + f.header(1, 2, 0x2000, headers) + f.body(1, b"hi"))
    parser = AmqpParser(Direction.TO_SERVER, ParserSettings())
    out = []
    for at in range(0, len(data), 1448):
        out += parser.feed(data[at:at + 1448], at)
        assert len(parser._buf) - parser._pos <= 1448  # segments wait in a list until the frame is complete
    (msg,) = out
    assert len(msg.fields["headers"]) == 5000 and msg.body == b"hi"


def test_large_body_is_streamed() -> None:
    parser = AmqpParser(Direction.TO_SERVER, ParserSettings(max_body_length=4))
    total = 4 << 20
    parser.feed(f.method(1, 60, 40, b"\x00\x00" + f.shortstr("") + f.shortstr("q") + b"\x00")
                + f.header(1, total, 0x8000, f.shortstr("text/plain")), 1)
    frame = 128 << 10
    out = []
    for _ in range(total // frame):
        out += parser.feed(f.body(1, b"x" * frame), 2)
        assert len(parser._buf) - parser._pos == 0
    (msg,) = out
    assert (msg.body, msg.body_size) == (b"xxxx", total)
