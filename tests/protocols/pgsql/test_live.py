"""PostgreSQL 15 from Debian in a namespace, queried from another: the events pktbeat publishes for real clients.

Clients: `psql` (simple query protocol, several statements in one Query,
errors, notices, COPY) and psycopg 3 (extended protocol with server-side
binding, `prepare=True` named statements, executemany).  Traffic is
captured live on namespace a's veth (`capture_events`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events, live_available
from tests.helpers.netns import VethPair, veth_pair

pytestmark = [pytest.mark.server, pytest.mark.live]

PORT = 5432
BIN = Path("/usr/lib/postgresql/15/bin")


def _skip_reason() -> str | None:
    if not (BIN / "postgres").exists() or shutil.which("psql") is None or shutil.which("runuser") is None:
        return "postgresql 15 is not installed"
    return live_available()


@contextlib.contextmanager
def postgres_server() -> Iterator[VethPair]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="pktbeat-pg-") as tmp, veth_pair("pbp") as pair:
        os.chmod(tmp, 0o755)
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        pair.b.popen(["runuser", "-u", "postgres", "--", str(BIN / "postgres"), "-D", str(data),
                      "-c", f"listen_addresses={pair.b_ip}", "-c", f"port={PORT}",
                      "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c", "shared_buffers=16MB",
                      "-c", "ssl=off"], log=Path(tmp) / "server.log")
        pair.b.wait_port(PORT, host=pair.b_ip, timeout=60)
        yield pair


def psql(pair: VethPair, sql: str, check: bool = True) -> str:
    proc = pair.a.run(["psql", "-X", "-h", pair.b_ip, "-p", str(PORT), "-U", "postgres", "-d", "postgres",
                       "-v", "ON_ERROR_STOP=0", "-c", sql], timeout=60, check=check)
    return proc.stdout


def psycopg_run(pair: VethPair, body: str) -> None:
    script = (f"import psycopg\nconn = psycopg.connect(host={pair.b_ip!r}, port={PORT}, user='postgres', "
              f"dbname='postgres', sslmode='disable', autocommit=True)\n" + textwrap.dedent(body))
    pair.a.run([sys.executable, "-c", script], timeout=60)


def capture(pair: VethPair, traffic: Any, **options: Any) -> list[dict[str, Any]]:
    protocols = [{"type": "pgsql", "ports": [PORT], "send_request": True, "send_response": True, **options}]
    return [e for e in capture_events(pair, traffic, protocols) if e.get("type") == "pgsql"]


def find(events: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    found = [e for e in events if e.get("query") == query]
    assert found, f"no event for {query!r} in {[e.get('query') for e in events]}"
    return found


def test_psql_simple_queries_errors_notices_and_copy() -> None:
    with postgres_server() as pair:
        def traffic(p: VethPair) -> None:
            psql(p, "CREATE TABLE items (id int PRIMARY KEY, name text); "
                    "INSERT INTO items VALUES (1, 'apple'), (2, 'pe,ar'), (3, NULL)")
            psql(p, "SELECT id, name FROM items ORDER BY id")
            psql(p, "INSERT INTO items VALUES (1, 'again')", check=False)
            psql(p, "COMMIT")
            psql(p, "\\copy items TO STDOUT")
            psql(p, "\\copy items FROM STDIN", check=False)

        events = capture(pair, traffic)
    create, insert = find(events, "CREATE TABLE items (id int PRIMARY KEY, name text)")[0], \
        find(events, "INSERT INTO items VALUES (1, 'apple'), (2, 'pe,ar'), (3, NULL)")[0]
    assert create["method"] == "CREATE" and insert["method"] == "INSERT"
    assert insert["source"]["bytes"] == create["source"]["bytes"]  # one Query message, two statements
    [select] = find(events, "SELECT id, name FROM items ORDER BY id")
    assert select["pgsql"] == {"num_rows": 3, "num_fields": 2}
    assert select["response"] == 'id,name\n1,apple\n2,"pe,ar"\n3,\n'
    assert select["event"]["duration"] > 0 and select["destination"]["bytes"] > 0
    [dup] = find(events, "INSERT INTO items VALUES (1, 'again')")
    assert dup["status"] == "Error"
    assert dup["pgsql"]["error_code"] == "23505" and dup["pgsql"]["error_severity"] == "ERROR"
    assert "duplicate key value" in dup["pgsql"]["error_message"]
    [commit] = find(events, "COMMIT")
    assert commit["status"] == "OK"
    assert commit["error"]["message"] == "WARNING 25P01: there is no transaction in progress"
    [copy_out] = find(events, "COPY  items TO STDOUT")
    assert copy_out["method"] == "COPY" and copy_out["pgsql"]["num_rows"] == 3
    assert copy_out["response"].startswith("1\tapple\n")


def test_psycopg_extended_protocol_prepared_statements() -> None:
    with postgres_server() as pair:
        psql(pair, "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(6,2))")

        def traffic(p: VethPair) -> None:
            psycopg_run(p, '''
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)",
                                    [(1, "apple", "1.50"), (2, "pear", "2.25")])
                    for ident in (1, 2, 1):
                        cur.execute("SELECT name, price FROM items WHERE id = %s", (ident,), prepare=True)
                        cur.fetchall()
                    try:
                        cur.execute("SELECT nonexistent FROM items WHERE id = %s", (1,))
                    except psycopg.errors.UndefinedColumn:
                        pass
                conn.close()
            ''')

        events = capture(pair, traffic)
    inserts = find(events, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)")
    assert [e["params"] for e in inserts] == [["1", "apple", "1.50"], ["2", "pear", "2.25"]]
    selects = find(events, "SELECT name, price FROM items WHERE id = $1")
    assert len(selects) == 3
    assert [e["params"] for e in selects] == [["1"], ["2"], ["1"]]
    assert all(e["pgsql"] == {"num_rows": 1, "num_fields": 2} and e["status"] == "OK" for e in selects)
    assert selects[1]["response"] == "name,price\npear,2.25\n"
    [error] = find(events, "SELECT nonexistent FROM items WHERE id = $1")
    assert error["status"] == "Error" and error["pgsql"]["error_code"] == "42703"
