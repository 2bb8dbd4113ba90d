"""Packetbeat's MongoDB pcaps through the CLI."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.helpers.replay import corpus, replay


def events(name: str, port: int = 27017, **options: Any) -> tuple[list[dict[str, Any]], str]:
    found, log = replay(corpus(name), [{"type": "mongodb", "ports": [port], **options}])
    assert all(e["type"] == "mongodb" for e in found)
    return found, log


def test_find_one_with_send_options() -> None:
    (event,), _ = events("mongo_one_row.pcap", send_request=True, send_response=True)
    assert (event["method"], event["resource"], event["status"]) == ("find", "test.restaurants", "OK")
    assert (event["source"]["bytes"], event["destination"]["bytes"]) == (50, 514)
    assert event["request"] == "test.restaurants.find().limit(1)"
    assert len(event["response"].splitlines()) == 1 and event["response"].startswith('{"_id":"')
    assert event["mongodb"]["numberReturned"] == 1 and event["event"]["duration"] > 0


def test_document_limits() -> None:
    (unlimited,), _ = events("mongodb_more_rows.pcap", send_response=True, max_docs=0)
    assert len(unlimited["response"].splitlines()) == 101
    (limited,), _ = events("mongodb_more_rows.pcap", send_response=True)
    lines = limited["response"].splitlines()
    assert len(lines) == 11 and lines[-1] == "[...]"
    (short,), _ = events("mongodb_more_rows.pcap", send_response=True, max_doc_length=10)
    assert all(len(line) == 14 and line.endswith(" ...") for line in short["response"].splitlines()[:-1])


def test_mongodb_3_session_commands() -> None:
    found, _ = events("mongo_3.0_session.pcap")
    methods = Counter(e["method"] for e in found)
    assert (methods["insert"], methods["update"], methods["findandmodify"], methods["listCollections"],
            methods["delete"], methods["find"]) == (2, 1, 1, 5, 1, 3)
    update = next(e for e in found if e["method"] == "update")
    assert update["resource"] == "test.restaurants" and update["query"] == 'test.restaurants.update({"ordered":true})'


def test_duplicate_key_write_error() -> None:
    (event,), _ = events("mongodb_insert_duplicate_key.pcap")
    assert (event["method"], event["status"]) == ("insert", "Error")
    assert '"code":11000' in event["mongodb"]["error"]


def test_reply_before_request() -> None:
    (event,), _ = events("mongodb_reply_request_reply.pcap")
    assert event["event"]["duration"] >= 0 and event["method"] == "buildinfo"


def test_op_msg_and_unknown_opcodes() -> None:
    found, log = events("mongodb_op_msg_opcode.pcap", port=9991)
    assert "Unknown operation code" not in log
    assert {e["method"] for e in found} == {"replSetHeartbeat", "ismaster"}
    assert all(e["mongodb"]["opcodeName"] == "OP_MSG" for e in found)
    found, log = events("mongodb_invalid_opcode_2269.pcap")
    assert log.count("Unknown operation code: 2269") == 1
    assert len(found) == 3 and all(e["status"] == "Error" for e in found)
