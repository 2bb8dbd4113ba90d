"""TNS sessions fed python-oracledb's own bytes (from the listener capture) and built packets, three ways."""

from __future__ import annotations

import struct
from typing import Any

from agent import metrics
from agent.protocols.base import Transaction
from agent.protocols.tns.fields import NOTE_ENCRYPTED, NOTE_NO_REPLY
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream
from tests.protocols.tns import listener as db
from tests.protocols.tns import wire as w
from tests.protocols.tns.streams import streams

DESCRIPTOR = (b"(DESCRIPTION=(ADDRESS=(PROTOCOL=tcp)(HOST=db.example)(PORT=1521))(CONNECT_DATA=(SID=PROD)"
              b"(CID=(PROGRAM=sqlplus)(HOST=ws7)(USER=ann))))")


def tns(steps: list[Step], **options: Any) -> list[Transaction]:
    return assert_same_three_ways("tns", steps, server_port=1521, options=options)


def actions(txns: list[Transaction]) -> list[tuple[str, str]]:
    return [(t.fields["event"]["action"], t.status) for t in txns]


def test_real_client_streams_three_ways() -> None:
    refused, badpass, redirect, moved, resent = (tns(s) for s in streams())
    assert actions(refused) == [("tns.connect", "Error")]
    assert refused[0].fields["tns"]["refuse"]["user_reason"] == 34
    assert actions(badpass) == [("tns.connect", "Error")]
    assert badpass[0].fields["tns"]["error_code"] == 1017
    assert actions(redirect) == [("tns.connect", "OK")]
    assert actions(moved) == [("tns.connect", "OK"), ("tns.query", "Error"), ("tns.query", "OK"),
                              ("tns.query", "OK"), ("tns.query", "OK"), ("tns.commit", "OK")]
    query = moved[1]
    assert query.fields["query"] == "select * from missing_table where id = :1"
    assert query.fields["tns"] == {"function": "OALL8", "cursor_id": 1, "rows": 0, "error_code": 942,
                                   "error_message": "ORA-00942: table or view does not exist"}
    assert query.end_ns is not None and query.end_ns > query.ts_ns
    assert query.fields["user"] == {"name": "scott"}
    assert actions(resent)[1:] == [("tns.query", "OK"), ("tns.rollback", "OK")]
    assert resent[0].fields["tns"]["resends"] == 1


def test_connect_data_inline_and_a_refusal() -> None:
    steps = [Step(C2S, w.connect(DESCRIPTOR, version=314), 1), Step(S2C, w.refuse(db.REFUSE_TEXT.replace(
        b"12514", b"12505"), user_reason=4, system_reason=0), 2)]
    [txn] = tns(steps)
    connect = txn.fields["tns"]["connect"]
    assert connect == {"sid": "PROD", "host": "db.example", "port": 1521, "protocol": "tcp", "program": "sqlplus",
                       "client_host": "ws7", "os_user": "ann"}
    assert txn.fields["query"] == "CONNECT PROD" and txn.fields["tns"]["version"] == 314
    assert txn.fields["tns"]["error_code"] == 12505 and "SID given" in txn.fields["tns"]["error_message"]
    assert (txn.ts_ns, txn.end_ns) == (1, 2)
    assert (txn.client_bytes, txn.server_bytes) == (len(steps[0].data), len(steps[1].data))


def test_redirect_with_inline_data() -> None:
    target = b"(ADDRESS=(PROTOCOL=TCP)(HOST=10.0.0.9)(PORT=1599))"
    [txn] = tns([Step(C2S, w.connect(DESCRIPTOR), 1), Step(S2C, w.redirect(target + b"\0" + DESCRIPTOR, True), 2)])
    assert txn.fields["tns"]["redirect"] == {"address": target.decode(), "host": "10.0.0.9", "port": 1599}


def session(payloads: list[tuple[Any, bytes]], version: int = 319) -> list[Step]:
    """An accepted connect, then TTC payloads in DATA packets (4-byte lengths from v315)."""
    large = version >= 315
    steps = [Step(C2S, w.connect(DESCRIPTOR), 1), Step(S2C, w.accept(version), 2)]
    for i, (direction, payload) in enumerate(payloads):
        steps.append(Step(direction, w.data(payload, large), 10 + i))
    return steps


def oall8(sql: bytes, cursor: int = 0) -> bytes:
    """An OALL8 call as python-oracledb writes it at TTC field version 12.2 EXT1 and later."""
    body = (w.ub(0x8021) + w.ub(cursor) + b"\x01" + w.ub(len(sql)) + b"\x01" + w.ub(13) + b"\x00\x00" + w.ub(0)
            + w.ub(1) + w.ub(0x7FFFFFFF) + b"\x00" + w.ub(0) + bytes(5) + b"\x00" + w.ub(0) + w.ub(0)
            + b"\x00\x01\x00" + w.ub(0) + b"\x00" + w.ub(0) + w.ub(0) + b"\x00" + w.ub(0) + b"\x00"
            + b"\x00" + w.ub(0) + b"\x00" + w.ub(0) + b"\x00" + b"\x00" + w.ub(0))
    return b"\x03\x5e\x05" + body + w.chunked(sql) + w.ub(1) + bytes(12)


def test_two_byte_lengths_before_v315_and_a_marker_mid_call() -> None:
    steps = session([(C2S, oall8(b"delete from t")), (S2C, db.error(0, "", rowcount=3))], version=314)
    steps.insert(3, Step(C2S, w.marker(1, large=False), 5))
    _, delete = tns(steps)
    assert (delete.fields["method"], delete.fields["tns"]["rows"]) == ("DELETE", 3)


def test_a_call_spanning_packets_and_an_answer_in_pieces() -> None:
    sql = b"select " + b"a, " * 5000 + b"b from wide"
    call = oall8(sql)
    answer = b"\x10" + bytes(3000) + db.error(1403, "ORA-01403: no data found", rowcount=2)
    steps = session([(C2S, call[:8000]), (C2S, call[8000:]), (S2C, answer[:1500]), (S2C, answer[1500:])])
    _, select = tns(steps)
    assert select.fields["query"] == sql.decode() and select.status == "OK"  # 1403 ends a fetch
    assert select.fields["tns"]["rows"] == 2 and select.end_ns == 13
    assert select.client_bytes == 2 * 8 + 2 * 2 + len(call) and select.server_bytes == 8 * 2 + 2 * 2 + len(answer)


def test_reexecute_carries_the_sql_of_its_cursor() -> None:
    reexecute = b"\x03\x04\x06" + w.ub(7) + w.ub(1) + w.ub(0) + w.ub(0)
    steps = session([(C2S, oall8(b"update t set x = 1")), (S2C, db.error(0, "", rowcount=1).replace(
        b"\x01\x01\x00", b"\x01\x07\x00", 1)), (C2S, reexecute), (S2C, db.error(0, "", rowcount=4))])
    _, first, again = tns(steps)
    assert first.fields["tns"]["cursor_id"] == 7
    assert (again.fields["query"], again.fields["tns"]["function"], again.fields["tns"]["rows"]) == (
        "update t set x = 1", "OEXEC", 4)


def test_native_network_encryption_is_flagged_and_nothing_more() -> None:
    client_ano = ttc_ano(algorithm=None)
    server_ano = ttc_ano(algorithm=17)
    steps = session([(C2S, client_ano), (S2C, server_ano), (C2S, bytes(range(200))), (S2C, bytes(300))])
    [connect] = tns(steps)
    assert connect.fields["tns"]["encrypted"] is True and connect.notes == [NOTE_ENCRYPTED]
    # ANO without an encryption algorithm chosen: the session goes on in clear
    steps = session([(C2S, client_ano), (S2C, ttc_ano(algorithm=0)), (C2S, oall8(b"select 1 from dual")),
                     (S2C, db.error(0, "", rowcount=1))])
    connect, query = tns(steps)
    assert connect.fields["tns"]["encrypted"] is False and query.fields["query"] == "select 1 from dual"


def ttc_ano(algorithm: int | None) -> bytes:
    """An ANO packet with an encryption service; its one-byte algorithm sub-packet when given."""
    subs = struct.pack(">HH", 4, 5) + b"\x13\x00\x00\x00"
    count = 1
    if algorithm is not None:
        subs += struct.pack(">HH", 1, 2) + bytes([algorithm])
        count = 2
    service = struct.pack(">HHI", 2, count, 0) + subs
    body = struct.pack(">IHB", 0x13000000, 1, 0) + service
    return b"\xde\xad\xbe\xef" + struct.pack(">H", 6 + len(body)) + body


def test_connection_ending_before_the_answer() -> None:
    steps = session([(C2S, oall8(b"insert into t values (1)"))])
    _, insert = tns(steps)
    assert insert.notes == [NOTE_NO_REPLY] and insert.status == "Error" and insert.end_ns is None


def test_gap_resynchronises_on_a_packet_boundary() -> None:
    steps = session([(C2S, oall8(b"select 1 from dual")), (S2C, db.error(0, "", rowcount=1))])
    steps += [Step(C2S, gap=500, ts_ns=30), Step(C2S, b"\x99" * 40, 31),
              Step(C2S, w.data(oall8(b"select 2 from dual")), 32), Step(S2C, w.data(db.error(0, "", rowcount=1)), 33)]
    counters = metrics.register("test.tns")
    before = counters["parse_errors"]
    txns = run_stream("tns", steps, server_port=1521)
    assert [t.fields.get("query") for t in txns] == ["CONNECT PROD", "select 1 from dual", "select 2 from dual"]
    assert counters["parse_errors"] == before


def test_trailing_bytes_stay_buffered() -> None:
    steps = session([(C2S, oall8(b"select 1 from dual")), (S2C, db.error(0, "", rowcount=1))])
    steps[-1] = Step(S2C, steps[-1].data + b"\x00\x00\x00", 11)  # the start of the next packet's header
    txns = run_stream("tns", steps, server_port=1521)
    assert [t.fields.get("query") for t in txns] == ["CONNECT PROD", "select 1 from dual"]
