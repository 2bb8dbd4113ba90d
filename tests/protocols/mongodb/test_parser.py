"""MongoDB framing and opcodes on literal bytes: Packetbeat's Go tests and fixtures, hardening, OP_COMPRESSED."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from agent.protocols.mongodb.fields import to_json
from agent.protocols.mongodb.parser import (
    MAX_DECODE_BYTES,
    NOTE_TOO_LARGE,
    MongoMessage,
    MongoParser,
    decode_document,
    opcode_name,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.protocols.mongodb.messages import (
    OP_DELETE,
    OP_GET_MORE,
    OP_INSERT,
    OP_KILL_CURSORS,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    OP_UPDATE,
    compressed,
    cstr,
    doc,
    fixture,
    i32,
    i64,
    message,
    op_msg,
    op_query,
    op_reply,
)

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT


def parse(direction: Direction, chunks: list[bytes], want: bool = True) -> tuple[list[MongoMessage], MongoParser]:
    parser = MongoParser(direction, want_documents=want)
    out: list[MongoMessage] = []
    for i, chunk in enumerate(chunks):
        out += parser.feed(chunk, 10 + i)
    return out, parser


def key(m: MongoMessage) -> tuple[Any, ...]:
    return (m.size, m.request_id, m.response_to, m.opcode, m.flags, m.body, m.sections, m.documents, m.notes,
            m.number_returned, m.full_collection_name)


def three_ways(direction: Direction, data: bytes) -> list[MongoMessage]:
    whole, parser = parse(direction, [data])
    assert parser.idle
    assert [key(m) for m in parse(direction, [data[i:i + 1] for i in range(len(data))])[0]] == [key(m) for m in whole]
    rng = random.Random(len(data))
    cuts = sorted(rng.sample(range(1, len(data)), min(6, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    split = parse(direction, [data[a:b] for a, b in itertools.pairwise(bounds)])[0]
    assert [key(m) for m in split] == [key(m) for m in whole]
    tailed, parser = parse(direction, [data + message(OP_QUERY, b"\x00" * 40)[:20]])
    assert [key(m) for m in tailed] == [key(m) for m in whole] and not parser.idle
    return whole


def one(direction: Direction, data: bytes) -> MongoMessage:
    (msg,) = three_ways(direction, data)
    assert msg.size == len(data) and not msg.notes, msg.notes
    return msg


# -- Packetbeat's Go tests ------------------------------------------------------------------------


def test_message_not_started_or_not_finished_waits() -> None:
    assert parse(C2S, [b"\x00"])[0] == []
    assert parse(C2S, [i32(100)])[0] == []


def test_simple_legacy_op_msg() -> None:
    msg = one(C2S, message(1000, cstr("a message")))
    assert msg.text == "a message"


@pytest.mark.parametrize(("req", "res"), [("1req", "1res"), ("2req", "2res"), ("3req", "3res")])
def test_op_msg_fixtures(req: str, res: str) -> None:
    request = one(C2S, fixture(req))
    reply = one(S2C, fixture(res))
    assert request.opcode == reply.opcode == OP_MSG and reply.response_to == request.request_id
    assert request.body is not None and request.body["find"] == "inventory" and request.body["$db"] == "testdb"
    assert reply.body is not None and reply.body["ok"] == 1.0
    to_json(reply.body)  # renders (Packetbeat marshals the documents to JSON)


def test_op_msg_fixture_skip_and_limit() -> None:
    body = one(C2S, fixture("3req")).body
    assert body is not None and (body["skip"], body["limit"]) == (1, 5)


def test_unknown_opcode_is_skipped_by_length() -> None:
    (msg,) = three_ways(C2S, message(5555, b""))
    assert not msg.known and msg.opcode == 5555
    assert opcode_name(5555) == "(value=5555)" and opcode_name(1) == "OP_REPLY"


@pytest.mark.parametrize("length", [-2147483648, 10, 0, 48_000_001])
def test_bad_message_lengths_are_framing_errors(length: int) -> None:
    with pytest.raises(ParseError, match="out of range"):
        MongoParser(C2S).feed(i32(length) + i32(1) + i32(0) + i32(OP_REPLY), 0)


def query_with_doc_length(raw_len: bytes, tail: bytes) -> bytes:
    return message(OP_QUERY, i32(0) + cstr("db.$cmd") + i32(0) + i32(1) + raw_len + tail)


@pytest.mark.parametrize(("data", "reason"), [
    (query_with_doc_length(b"\xff\xff\xff\xff", b"\x00" * 5), "too small"),
    (query_with_doc_length(i32(0), b""), "too small"),
    (message(OP_REPLY, i32(0) + i64(0) + i32(0) + i32(-1)), "numberReturned -1"),
    (message(OP_REPLY, i32(0) + i64(0) + i32(0) + i32(0x3FFFFFFF) + bytes([5, 0, 0, 0, 0])), "numberReturned"),
    (message(OP_MSG, i32(0) + b"\x01" + i32(-1) + cstr("docs")), "sequence size -1"),
    (message(OP_MSG, i32(0) + b"\x01" + i32(1_000_000) + cstr("docs")), "sequence size 1000000"),
    (message(OP_QUERY, i32(0) + cstr("db.c") + i32(0) + i32(1) + i32(6) + b"\x00"), "out of bounds"),
    (message(OP_MSG, i32(0) + b"\x07"), "unknown section kind 7"),
    (message(OP_KILL_CURSORS, i32(0) + i32(5) + i64(1)), "numberOfCursorIDs 5"),
])
def test_bad_content_is_rejected_with_a_note(data: bytes, reason: str) -> None:
    (msg,) = three_ways(C2S, data)
    assert msg.body is None and msg.number_returned is None and msg.size == len(data)
    assert len(msg.notes) == 1 and "could not be decoded" in msg.notes[0] and reason in msg.notes[0]


def test_valid_op_reply() -> None:
    msg = one(S2C, op_reply([{}], response_to=1))
    assert msg.number_returned == 1 and msg.body == {}


# -- opcodes -------------------------------------------------------------------------------------------


def test_op_query_with_selector() -> None:
    msg = one(C2S, op_query("test.col", {"me": "you"}, skip=3, limit=2, fields={"a": 1}))
    assert (msg.full_collection_name, msg.number_to_skip, msg.number_to_return) == ("test.col", 3, 2)
    assert msg.body == {"me": "you"} and msg.return_fields == {"a": 1}


def test_op_reply_documents_kept_only_when_wanted() -> None:
    data = op_reply([{"a": i} for i in range(5)], cursor_id=42, starting_from=7)
    msg = one(S2C, data)
    assert (msg.cursor_id, msg.starting_from, msg.number_returned, len(msg.documents)) == (42, 7, 5, 5)
    (lean,), _ = parse(S2C, [data], want=False)
    assert lean.documents == () and lean.body == {"a": 0}  # the first document: for $err / writeErrors


def test_legacy_writes() -> None:
    update = one(C2S, message(OP_UPDATE, i32(0) + cstr("db.c") + i32(0) + doc({"a": 1}) + doc({"$set": {"b": 2}})))
    assert (update.selector, update.update) == ({"a": 1}, {"$set": {"b": 2}})
    insert = one(C2S, message(OP_INSERT, i32(0) + cstr("db.c") + doc({"x": 1}) + doc({"x": 2})))
    assert [decode_document(d) for d in insert.documents] == [{"x": 1}, {"x": 2}]
    delete = one(C2S, message(OP_DELETE, i32(0) + cstr("db.c") + i32(0) + doc({"x": 1})))
    assert delete.selector == {"x": 1}
    more = one(C2S, message(OP_GET_MORE, i32(0) + cstr("db.c") + i32(10) + i64(99)))
    assert (more.number_to_return, more.cursor_id) == (10, 99)
    kill = one(C2S, message(OP_KILL_CURSORS, i32(0) + i32(2) + i64(5) + i64(6)))
    assert kill.cursor_ids == (5, 6)


def test_op_msg_sections_checksum_and_more_to_come() -> None:
    data = op_msg({"insert": "c", "$db": "d"}, sequences=(("documents", [{"_id": 1}, {"_id": 2}]),),
                  checksum=True, flags=2)
    msg = one(C2S, data)
    assert msg.more_to_come and msg.body == {"insert": "c", "$db": "d"}
    assert msg.sections[0].identifier == "documents" and len(msg.sections[0].documents) == 2


@pytest.mark.parametrize("compressor", [0, 1, 2, 3])
def test_op_compressed(compressor: int) -> None:
    original = op_msg({"find": "c", "filter": {"x": 1}, "$db": "d"}, request_id=9)
    msg = one(C2S, compressed(original, compressor))
    assert msg.compressed and msg.opcode == OP_MSG and msg.request_id == 9
    assert msg.body == {"find": "c", "filter": {"x": 1}, "$db": "d"}
    assert opcode_name(msg.opcode, msg.compressed) == "OP_MSG (OP_COMPRESSED)"


@pytest.mark.parametrize(("compressor", "declared"), [(2, 10), (3, 10), (1, 10), (2, MAX_DECODE_BYTES + 1), (9, 50)])
def test_op_compressed_is_bounded(compressor: int, declared: int) -> None:
    """A body that inflates past its declared size (a zip bomb) or an unknown compressor is not decoded."""
    original = op_msg({"find": "c", "filter": {"pad": "z" * 5000}, "$db": "d"})
    if compressor == 9:
        data = compressed(original, 0)
        data = data[:24] + bytes([9]) + data[25:]
    else:
        data = compressed(original, compressor, declared=declared)
    (msg,) = three_ways(C2S, data)
    assert msg.body is None and "could not be decoded" in msg.notes[0]


@pytest.mark.parametrize("declared", [0, 14])
def test_zstd_frame_claiming_a_huge_content_size_is_not_allocated(declared: int) -> None:
    """A zstd frame header may claim any content size; only the declared uncompressed size counts."""
    from agent.protocols.mongodb.parser import BadContent, decompress

    hostile = b"(\xb5/\xfd\xe6" + b"\x00" * 8 + b"\x00\x01"  # frame header: a content size of ~2**56 bytes
    with pytest.raises(BadContent):
        decompress(3, hostile, declared)


def test_oversized_message_is_counted_past_not_buffered() -> None:
    size = MAX_DECODE_BYTES + 1000
    header = i32(size) + i32(5) + i32(0) + i32(OP_MSG)
    parser = MongoParser(C2S)
    assert parser.feed(header, 0) == []
    sent = 16
    while sent < size - 65536:
        assert parser.feed(b"\x00" * 65536, 0) == []
        sent += 65536
        assert parser.idle is False and parser.buf.unread == 0
    (msg,) = parser.feed(b"\x00" * (size - sent) + op_msg({"ping": 1, "$db": "a"}, request_id=6)[:10], 1)
    assert msg.notes == (NOTE_TOO_LARGE,) and msg.request_id == 5 and msg.size == size


def test_gap_inside_a_message_is_counted_past() -> None:
    data = op_msg({"find": "c", "filter": {"pad": "z" * 3000}, "$db": "d"}, request_id=4)
    parser = MongoParser(C2S)
    parser.feed(data[:100], 0)
    assert parser.gap(1000, 1).in_sync
    (msg,) = parser.feed(data[1100:], 1)
    assert msg.request_id == 4 and msg.notes == ("Packet loss while capturing the request",) and msg.body is None
    fresh = MongoParser(C2S)
    assert not fresh.gap(10, 1).in_sync  # nothing known about the bytes lost


def test_resync_rejects_unknown_opcodes() -> None:
    parser = MongoParser(C2S)
    parser.reset()  # as after an error: strict until a good message
    with pytest.raises(ParseError, match="resynchronising"):
        parser.feed(message(4321, b"xx"), 0)
    parser.reset()
    (msg,) = parser.feed(op_msg({"ping": 1}), 0)
    assert msg.known and not parser.strict
