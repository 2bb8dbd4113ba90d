"""MariaDB from Debian in a namespace, queried from another: the events pktbeat publishes for real clients.

Clients: the `mariadb` CLI (text queries, and `--compress`), and
mysql-connector-python with `cursor(prepared=True)` (server-side prepared
statements, COM_STMT_PREPARE/EXECUTE/CLOSE) and `compress=True`.  Traffic
is captured live on namespace a's veth (`capture_events`).
"""

from __future__ import annotations

import contextlib
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

PORT = 3306


def _skip_reason() -> str | None:
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        return "mariadb-server is not installed"
    return live_available()


@contextlib.contextmanager
def mariadb_server() -> Iterator[VethPair]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="pktbeat-mariadb-") as tmp, veth_pair("pbm") as pair:
        datadir = Path(tmp) / "data"
        subprocess.run(["mariadb-install-db", f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        pair.b.popen(["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={tmp}/sock",
                      f"--bind-address={pair.b_ip}", f"--port={PORT}", "--user=root", "--skip-grant-tables",
                      f"--pid-file={tmp}/pid", "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
                      "--skip-log-bin", f"--tmpdir={tmp}"], log=Path(tmp) / "server.log")
        pair.b.wait_port(PORT, host=pair.b_ip, timeout=60)
        yield pair


def cli(pair: VethPair, sql: str, *extra: str, check: bool = True) -> str:
    proc = pair.a.run(["mariadb", "--no-defaults", "-h", pair.b_ip, "-P", str(PORT), "-u", "root", "--skip-ssl",
                       *extra, "-e", sql], timeout=60, check=check)
    return proc.stdout


def connector(pair: VethPair, body: str, **options: Any) -> None:
    """Run `body` with `conn` connected by mysql-connector-python (pure Python) from namespace a."""
    script = (f"import mysql.connector\nconn = mysql.connector.connect(host={pair.b_ip!r}, port={PORT}, "
              f"user='root', password='', use_pure=True, ssl_disabled=True, **{options!r})\n"
              + textwrap.dedent(body))
    pair.a.run([sys.executable, "-c", script], timeout=60)


def capture(pair: VethPair, traffic: Any, **options: Any) -> list[dict[str, Any]]:
    protocols = [{"type": "mysql", "ports": [PORT], "send_request": True, "send_response": True, **options}]
    events = capture_events(pair, traffic, protocols)
    return [e for e in events if e.get("type") == "mysql"]


def by_query(events: list[dict[str, Any]], query: str, method: str | None = None) -> dict[str, Any]:
    found = [e for e in events if e.get("query") == query and (method is None or e["method"] == method)]
    assert found, f"no event for {query!r} in {[e.get('query') for e in events]}"
    return found[-1]


def test_text_queries_from_the_cli() -> None:
    with mariadb_server() as pair:
        def traffic(p: VethPair) -> None:
            cli(p, "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, "
                   "name VARCHAR(20), price DOUBLE)")
            cli(p, "INSERT INTO shop.items (name, price) VALUES ('apple', 1.5), ('pear', NULL), ('plum', 3)")
            cli(p, "SELECT id, name, price FROM shop.items ORDER BY id")
            cli(p, "SELECT * FROM shop.missing", check=False)
            cli(p, "SELECT 1; SELECT 2")

        events = capture(pair, traffic, all_commands=True)
    insert = by_query(events, "INSERT INTO shop.items (name, price) VALUES ('apple', 1.5), ('pear', NULL), "
                              "('plum', 3)")
    assert insert["method"] == "INSERT" and insert["mysql"]["affected_rows"] == 3
    assert insert["mysql"]["insert_id"] == 1
    select = by_query(events, "SELECT id, name, price FROM shop.items ORDER BY id")
    assert select["status"] == "OK" and select["path"] == "shop.items"
    assert select["mysql"]["num_rows"] == 3 and select["mysql"]["num_fields"] == 3
    assert select["response"] == "id,name,price\n1,apple,1.5\n2,pear,NULL\n3,plum,3\n"
    assert select["destination"]["bytes"] > 0 and select["event"]["duration"] > 0
    missing = by_query(events, "SELECT * FROM shop.missing")
    assert missing["status"] == "Error" and missing["mysql"]["error_code"] == 1146
    assert missing["mysql"]["error_message"] == "42S02: Table 'shop.missing' doesn't exist"
    assert by_query(events, "SELECT 1")["mysql"]["num_rows"] == 1
    methods = {e["method"] for e in events}
    assert "QUIT" in methods  # every CLI run ends with COM_QUIT


def test_server_side_prepared_statements_from_connector() -> None:
    with mariadb_server() as pair:
        cli(pair, "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), "
                  "price DOUBLE, added DATETIME); INSERT INTO shop.items VALUES (1, 'apple', 1.5, "
                  "'2024-05-06 07:08:09'), (2, 'pear', 2.25, NULL)")

        def traffic(p: VethPair) -> None:
            connector(p, '''
                cur = conn.cursor(prepared=True)
                for ident in (1, 2):
                    cur.execute("SELECT name, price, added FROM shop.items WHERE id = ? AND name <> ?",
                                (ident, "zzz"))
                    cur.fetchall()
                cur.execute("UPDATE shop.items SET price = ? WHERE id = ?", (9.75, 2))
                conn.commit()
                cur.close()
                conn.close()
            ''')

        events = capture(pair, traffic, all_commands=True)
    sql = "SELECT name, price, added FROM shop.items WHERE id = ? AND name <> ?"
    prepares = [e for e in events if e["method"] == "PREPARE" and e["query"] == sql]
    executes = [e for e in events if e["method"] == "SELECT" and e["query"] == sql]
    assert prepares and len(executes) == 2
    assert [e["params"] for e in executes] == [["1", "zzz"], ["2", "zzz"]]
    assert all(e["mysql"]["num_rows"] == 1 and e["path"] == "shop.items" for e in executes)
    assert executes[0]["response"] == "name,price,added\napple,1.5,2024-05-06 07:08:09\n"
    update = by_query(events, "UPDATE shop.items SET price = ? WHERE id = ?", "UPDATE")
    assert update["params"] == ["9.75", "2"] and update["mysql"]["affected_rows"] == 1
    closes = [e for e in events if e["method"] == "STMT_CLOSE"]
    assert {e["query"] for e in closes} >= {sql, "UPDATE shop.items SET price = ? WHERE id = ?"}


def test_compressed_protocol_cli_and_connector() -> None:
    with mariadb_server() as pair:
        def traffic(p: VethPair) -> None:
            cli(p, "SELECT REPEAT('ab', 500) AS big, 42 AS answer", "--compress")
            connector(p, '''
                cur = conn.cursor(prepared=True)
                cur.execute("SELECT ? + 1 AS n", (41,))
                cur.fetchall()
                conn.close()
            ''', compress=True)

        events = capture(pair, traffic)
    big = by_query(events, "SELECT REPEAT('ab', 500) AS big, 42 AS answer")
    assert big["mysql"]["num_rows"] == 1 and big["response"].endswith(",42\n")
    assert big["response"].split("\n")[1].startswith("abab")
    execute = [e for e in events if e["query"] == "SELECT ? + 1 AS n" and e["method"] == "SELECT"]
    assert execute and execute[0]["params"] == ["41"] and execute[0]["response"] == "n\n42\n"
