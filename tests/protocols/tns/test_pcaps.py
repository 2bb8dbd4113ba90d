"""python-oracledb's sessions with the test listener (captured by test_server.py) through the CLI."""

from __future__ import annotations

from typing import Any

from tests.helpers.replay import replay
from tests.protocols.tns.streams import PCAP

PROTOCOLS: list[dict[str, Any]] = [{"type": "tns", "ports": [1521, 1522], "send_response": True}]


def test_capture_through_the_cli() -> None:
    events, _ = replay(PCAP, PROTOCOLS)
    connects = [e for e in events if e["event"]["action"] == "tns.connect"]
    assert [(e["tns"]["outcome"], e["status"]) for e in connects] == [
        ("refused", "Error"), ("accepted", "Error"), ("redirected", "OK"), ("accepted", "OK"), ("accepted", "OK")]
    assert [e["tns"]["connect"]["service_name"] for e in connects] == ["NOSUCH", "ORCL", "MOVED", "MOVED", "RESENDME"]
    assert connects[1]["tns"]["error_code"] == 1017 and connects[1]["user"]["name"] == "scott"
    assert connects[4]["tns"]["resends"] == 1
    queries = [e for e in events if e["event"]["action"] == "tns.query"]
    assert [(q["method"], q["status"], q["tns"].get("error_code")) for q in queries] == [
        ("SELECT", "Error", 942), ("UPDATE", "OK", None), ("UPDATE", "OK", None), ("UPDATE", "OK", None),
        ("INSERT", "OK", None)]
    assert queries[0]["response"] == "ORA-00942: table or view does not exist"
    assert all(q["event"]["duration"] > 0 and q["server"]["port"] == 1522 for q in queries[:4])
    assert [e["method"] for e in events if e["event"]["action"] in ("tns.commit", "tns.rollback")] == [
        "COMMIT", "ROLLBACK"]
