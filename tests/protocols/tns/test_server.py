"""python-oracledb (thin mode, Oracle's own client code) against the test listener, captured live by pktbeat.

The listener (listener.py) refuses, redirects, asks for a resend and
accepts; behind it a stand-in database authenticates (O5LOGON) and answers
calls.  No Oracle server can be installed here: what a real listener and
database send is only as true as that stand-in, which implements what the
client requires.  tcpdump records the same traffic; its replay must give
the same events.  PKTBEAT_REGENERATE_PCAPS=1 copies the capture to
tests/protocols/tns/pcaps/ for test_pcaps.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import live_agent, live_available, start_tcpdump
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.replay import ROOT, replay

pytestmark = [pytest.mark.server, pytest.mark.live]

PCAPS = Path(__file__).parent / "pcaps"
PROTOCOLS: list[dict[str, Any]] = [{"type": "tns", "ports": [1521, 1522], "send_request": True}]
LONG_SQL = "insert into audit_log (id, note) values (:1, '" + "x" * 9000 + "')"

CLIENT = r"""
import sys, oracledb
ip = sys.argv[1]
def attempt(service, password="tiger"):
    try:
        return oracledb.connect(user="scott", password=password, dsn=f"{ip}:1521/{service}", tcp_connect_timeout=5)
    except oracledb.Error as exc:
        print(service, exc.args[0].full_code)
attempt("NOSUCH")
attempt("ORCL", password="wrong")
conn = attempt("MOVED")
cur = conn.cursor()
try:
    cur.execute("select * from missing_table where id = :1", [5])
except oracledb.DatabaseError as exc:
    print("query", exc.args[0].full_code)
for n in (1, 2, 3):
    cur.execute("update accounts set balance = balance - :1 where id = 7", [n])
conn.commit()
conn.close()
conn = attempt("RESENDME")
conn.cursor().execute(sys.argv[2], [1])
conn.rollback()
conn.close()
"""


@pytest.fixture(scope="module")
def listener() -> Iterator[VethPair]:
    reason = live_available()
    if reason:
        pytest.skip(reason)
    with veth_pair("pbo") as pair:
        pair.b.popen([sys.executable, "-m", "tests.protocols.tns.listener", pair.b_ip, "1521", "1522"], cwd=str(ROOT))
        pair.b.wait_port(1521, host=pair.b_ip)
        pair.b.wait_port(1522, host=pair.b_ip)
        yield pair


def by_connection(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for event in (e for e in events if e.get("type") == "tns"):  # in the order they were published
        out.setdefault((event["client"]["port"], event["server"]["port"]), []).append(event)
    return list(out.values())


def test_python_oracledb_against_the_listener(listener: VethPair, tmp_path: Path) -> None:
    pair = listener
    pcap = tmp_path / "tns.pcap"
    dumper = start_tcpdump(pair.a, pair.a_if, pcap, "tcp port 1521 or tcp port 1522")
    with live_agent(pair.a, [pair.a_if], PROTOCOLS) as agent:
        out = pair.a.run([sys.executable, "-c", CLIENT, pair.b_ip, LONG_SQL], timeout=60).stdout.split("\n")
        time.sleep(0.5)
        assert agent.stop() == 0, agent.log()[-3000:]
    dumper.stop()
    assert out[:3] == ["NOSUCH DPY-6005", "ORCL ORA-01017", "query ORA-00942"]  # DPY-6005: cannot connect
    live = agent.events()
    if os.environ.get("PKTBEAT_REGENERATE_PCAPS"):
        PCAPS.mkdir(exist_ok=True)
        shutil.copy(pcap, PCAPS / "oracledb_sessions.pcap")
    check(by_connection(live), pair)
    replayed, _ = replay(pcap, PROTOCOLS)
    ours = [[comparable(e) for e in c] for c in by_connection(replayed)]
    theirs = [[comparable(e) for e in c] for c in by_connection(live)]
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert len(mine) == len(other)
        for a, b in zip(mine, other, strict=True):
            assert {k: a[k] for k in a if a[k] != b.get(k)} == {k: b[k] for k in b if b[k] != a.get(k)}


# Only the live agent knows the processes (and which addresses are local: network.direction).
VOLATILE = ("@timestamp", "event", "ecs", "agent", "host", "@metadata", "network", "process")


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in VOLATILE}
    for side in ("source", "destination", "client", "server"):
        if side in out:
            out[side] = {k: v for k, v in out[side].items() if k != "process"}
    return out


def check(connections: list[list[dict[str, Any]]], pair: VethPair) -> None:
    refused, badpass, redirect, moved, resent = connections
    [event] = refused
    tns = event["tns"]
    assert (event["status"], tns["outcome"], tns["error_code"]) == ("Error", "refused", 12514)
    assert tns["error_message"].startswith("TNS-12514: TNS:listener does not currently know of service")
    assert tns["refuse"]["reason"].startswith("(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12514)")
    connect = tns["connect"]
    assert (connect["service_name"], connect["host"], connect["port"]) == ("NOSUCH", pair.b_ip, 1521)
    assert connect["program"] == sys.executable and connect["os_user"] == "root"
    assert tns["version"] == 319 and event["query"] == "CONNECT NOSUCH"
    assert event["request"].startswith("(DESCRIPTION=") and len(event["request"]) > 230  # sent in a DATA packet

    [logon] = badpass
    assert (logon["status"], logon["tns"]["outcome"], logon["tns"]["error_code"]) == ("Error", "accepted", 1017)
    assert logon["tns"]["error_message"] == "ORA-01017: invalid username/password; logon denied"
    assert logon["user"]["name"] == "scott" and logon["tns"]["server"]["banner"].startswith("Oracle Database 19c")
    assert logon["tns"]["client"] == {"driver": "python-oracledb thn : 26.1.0", "version": "26.1.0.0.0"}

    [hop] = redirect
    assert (hop["status"], hop["tns"]["outcome"]) == ("OK", "redirected")
    assert hop["tns"]["redirect"]["host"] == pair.b_ip and hop["tns"]["redirect"]["port"] == 1522

    connect_event, failed, *updates, commit = moved
    assert connect_event["tns"]["outcome"] == "accepted" and connect_event["server"]["port"] == 1522
    assert connect_event["tns"]["accept"] == {"version": 319, "sdu": 8192} and connect_event["status"] == "OK"
    assert connect_event["tns"]["encrypted"] is False
    assert (failed["method"], failed["status"], failed["query"]) == (
        "SELECT", "Error", "select * from missing_table where id = :1")
    assert (failed["tns"]["error_code"], failed["tns"]["function"]) == (942, "OALL8")
    assert failed["event"]["duration"] > 0
    assert [(u["method"], u["tns"]["function"], u["tns"]["rows"]) for u in updates] == [
        ("UPDATE", "OALL8", 1), ("UPDATE", "OEXEC", 1), ("UPDATE", "OEXEC", 1)]
    assert {u["query"] for u in updates} == {"update accounts set balance = balance - :1 where id = 7"}
    assert (commit["method"], commit["status"]) == ("COMMIT", "OK")

    assert len(resent) == 3, [(e['event']['action'], e.get('query', '')[:40], e.get('error')) for e in resent]
    connect_event, long_insert, rollback = resent
    assert connect_event["tns"]["resends"] == 1 and connect_event["tns"]["outcome"] == "accepted"
    assert long_insert["query"] == LONG_SQL and long_insert["method"] == "INSERT"  # spans several TNS packets
    assert long_insert["source"]["bytes"] > 9000
    assert rollback["method"] == "ROLLBACK"
