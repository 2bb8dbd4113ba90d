"""TLS plaintext live: real TLS servers and clients in two namespaces, the same requests in cleartext and over TLS.

nginx (HTTP/1.1 on a cleartext port; HTTP/1.1 and HTTP/2 on a TLS port),
redis-server (a cleartext port and a --tls-port), postgres (ssl=on: psql
chooses with sslmode) and mariadbd (the client chooses with --ssl) run in
namespace b with throwaway certificates; curl (--http1.1 and --http2), a
Python ssl/http.client client, redis-cli, psql and mariadb run in namespace
a, where the agent (two workers) captures the veth with
packetbeat.tls_plaintext on. Every request's TLS event has the method, path
and status (or query and status) of the same request in cleartext, the
connection's TLS handshake fields, and says its payload came from the TLS
library; curl --http2's are HTTP/2 streams. Both ends of each connection
call OpenSSL: each request still gives one event.

Then the switch: with tls_plaintext off no uprobe is in any process (the
int3 a uprobe writes at SSL_write is not there), with it on it is, also in
a program started later in another mount namespace whose libssl is another
file, and after the agent's SIGTERM it is gone again.  A configured library
that is not OpenSSL's libssl is one warning line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import live_agent, live_available
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.nginx import nginx_conf

pytestmark = [pytest.mark.live, pytest.mark.server]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
LIBSSL = "/lib/x86_64-linux-gnu/libssl.so.3"
# Uprobes see every process on the host, and the kernel sends the plaintext of connections on these ports:
# ports of this test run only, so that other programs' TLS traffic (this test run elsewhere at the same time)
# does not reach this run's agent and its counters.
_BASE = 20000 + (os.getpid() % 4000) * 10
HTTP_PORT, HTTPS_PORT = _BASE, _BASE + 1
REDIS_PORT, REDIS_TLS_PORT = _BASE + 2, _BASE + 3
PG_PORT, MYSQL_PORT = _BASE + 4, _BASE + 5
PROTOCOLS = [{"type": "http", "ports": [HTTP_PORT]}, {"type": "tls", "ports": [HTTPS_PORT, REDIS_TLS_PORT]},
             {"type": "redis", "ports": [REDIS_PORT]}, {"type": "pgsql", "ports": [PG_PORT]},
             {"type": "mysql", "ports": [MYSQL_PORT]}]
SETTINGS = {"packetbeat.tls_plaintext": {"enabled": True, "ports": {"http": [HTTPS_PORT], "redis": [REDIS_TLS_PORT]}}}
PY_CLIENT = textwrap.dedent("""
    import http.client, ssl, sys
    host, port, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tls"
    if tls:
        conn = http.client.HTTPSConnection(host, port, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port)
    for path in ("/py/one.txt", "/py/missing"):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        print(response.status)
    # One SSL_write of 300 kB: more than the kernel copies of one call (16 x 16 kB), the rest is a gap.
    conn.request("POST", "/py/upload", body=b"x" * 300000)
    response = conn.getresponse()
    response.read()
    print(response.status)
    """)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=pktbeat.test", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def _nginx_conf(root: Path, listen: str, cert: Path, key: Path) -> str:
    return nginx_conf(root, textwrap.dedent(f"""
            types {{ text/plain txt; }}
            server {{
                listen {listen}:{HTTP_PORT};
                listen {listen}:{HTTPS_PORT} ssl http2;
                ssl_certificate {cert};
                ssl_certificate_key {key};
                root {root}/www;
            }}
        """))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    reason = live_available()
    if reason:
        pytest.skip(reason)
    if not (PG_BIN / "postgres").exists() or not os.path.exists(LIBSSL):
        pytest.skip("postgresql 15 or OpenSSL 3 is not installed")
    nginx, redis, mariadbd = _binary("nginx"), _binary("redis-server"), _binary("mariadbd")
    _binary("mariadb-install-db")
    with tempfile.TemporaryDirectory(prefix="pktbeat-tlsp-") as tmp, veth_pair("pbs") as pair:
        root = Path(tmp)
        os.chmod(root, 0o755)
        cert, key = _certificate(root)
        os.chmod(key, 0o644)
        (root / "www" / "py").mkdir(parents=True)
        (root / "www" / "index.txt").write_text("hello\n")
        (root / "www" / "py" / "one.txt").write_text("one\n" * 5000)  # larger than one TLS record
        (root / "nginx.conf").write_text(_nginx_conf(root, pair.b_ip, cert, key))
        pair.b.popen([nginx, "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")],
                     log=root / "nginx.out")
        pair.b.popen([redis, "--port", str(REDIS_PORT), "--tls-port", str(REDIS_TLS_PORT), "--bind", pair.b_ip,
                      "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no",
                      "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(root)],
                     log=root / "redis.log")
        data = root / "pg"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        mydata = root / "mydata"
        install_mysql = subprocess.Popen(["mariadb-install-db", f"--datadir={mydata}", "--user=root",
                                          "--auth-root-authentication-method=normal", "--skip-test-db"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        for name in ("server.crt", "server.key"):
            shutil.copy(root / name, data / name)
            shutil.chown(data / name, "postgres", "postgres")
            os.chmod(data / name, 0o600)
        pair.b.popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                      "-c", f"listen_addresses={pair.b_ip}", "-c", f"port={PG_PORT}",
                      "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c", "ssl=on"],
                     log=root / "pg.log")
        assert install_mysql.wait(timeout=120) == 0, "mariadb-install-db failed"
        pair.b.popen([mariadbd, "--no-defaults", f"--datadir={mydata}", f"--socket={root}/mysql.sock",
                      f"--bind-address={pair.b_ip}", f"--port={MYSQL_PORT}", "--user=root", "--skip-grant-tables",
                      f"--pid-file={root}/mysql.pid", "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
                      "--skip-log-bin", f"--tmpdir={root}", f"--ssl-cert={cert}", f"--ssl-key={key}"],
                     log=root / "mariadb.log")
        for port in (HTTP_PORT, HTTPS_PORT, REDIS_PORT, REDIS_TLS_PORT):
            pair.b.wait_port(port, pair.b_ip)
        pair.b.wait_port(PG_PORT, pair.b_ip, timeout=60)
        pair.b.wait_port(MYSQL_PORT, pair.b_ip, timeout=60)
        (root / "client.py").write_text(PY_CLIENT)
        yield {"pair": pair, "root": root, "cert": cert}


def _run(pair: VethPair, args: list[str]) -> None:
    proc = pair.a.run(args, check=False, timeout=60)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-2000:]}"


def _traffic(pair: VethPair, root: Path, tls: bool) -> None:
    """The same requests in cleartext or over TLS."""
    ip = pair.b_ip
    curl = [_binary("curl"), "-sS", "-k", "-o", "/dev/null"]
    base = f"https://{ip}:{HTTPS_PORT}" if tls else f"http://{ip}:{HTTP_PORT}"
    _run(pair, [*curl, "--http1.1", f"{base}/index.txt"])
    _run(pair, [*curl, "--http1.1", f"{base}/nothing-here"])
    # HTTP/2 over TLS (ALPN h2); in cleartext curl asks for h2c by Upgrade, which nginx ignores: HTTP/1.1.
    _run(pair, [*curl, "--http2", f"{base}/index.txt", "-o", "/dev/null", f"{base}/h2-missing"])
    _run(pair, [sys.executable, str(root / "client.py"), ip, str(HTTPS_PORT if tls else HTTP_PORT),
                "tls" if tls else "plain"])
    redis_cli = [_binary("redis-cli"), "-h", ip, "-p", str(REDIS_TLS_PORT if tls else REDIS_PORT)]
    if tls:
        redis_cli += ["--tls", "--insecure"]
    _run(pair, [*redis_cli, "SET", "tls-key", "value"])
    _run(pair, [*redis_cli, "GET", "tls-key"])
    sslmode = "require" if tls else "disable"
    _run(pair, [_binary("psql"), "-X", f"host={ip} port={PG_PORT} user=postgres dbname=postgres sslmode={sslmode}",
                "-c", "SELECT 42 AS answer"])
    # MariaDB's client: --ssl sends the SSL request, then TLS (not verifying the throwaway certificate).
    _run(pair, [_binary("mariadb"), "-h", ip, "-P", str(MYSQL_PORT), "-u", "root",
                "--ssl" if tls else "--skip-ssl", "-e", "SELECT 42 AS answer"])


def _worker_totals(log: str) -> dict[str, int]:
    """The workers' counters at exit (the agent logs their sums on one line)."""
    line = next(line for line in log.splitlines() if "worker counters at exit:" in line)
    totals: dict[str, int] = {}
    for item in line.split("at exit:", 1)[1].split(","):
        name, _, value = item.strip().partition("=")
        if value.isdigit():
            totals[name] = int(value)
    return totals


def _summary(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event["type"]
    if kind == "http":
        http = event["http"]
        return (kind, http["request"]["method"], event["url"]["path"], http["response"]["status_code"])
    return (kind, event.get("method"), event.get("query"), event.get("status"))


def _maps_libssl(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libssl.so.3" in maps.read()


def _inode_of_libssl(pid: int) -> int:
    with open(f"/proc/{pid}/maps") as maps:
        return next(int(line.split()[4]) for line in maps if "libssl.so.3" in line)


def _uprobe_in(pid: int, path: str, symbol: str = "SSL_write") -> bool:
    """Whether a uprobe sits on `symbol` in process `pid`: the kernel writes int3 (0xcc) at its first byte."""
    from agent.capture.tlsprobes import _symbol_offsets

    offset = _symbol_offsets(path, [symbol])[symbol]
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == os.path.realpath(path):
                start, _ = (int(x, 16) for x in parts[0].split("-"))
                file_off = int(parts[2], 16)
                if "x" in parts[1]:
                    length = int(parts[0].split("-")[1], 16) - start
                    if file_off <= offset < file_off + length:
                        with open(f"/proc/{pid}/mem", "rb") as mem:
                            mem.seek(start + offset - file_off)
                            return mem.read(1) == b"\xcc"
    raise AssertionError(f"{symbol} of {path} is not mapped executable in {pid}")


def test_tls_requests_match_cleartext(servers: dict[str, Any]) -> None:
    pair: VethPair = servers["pair"]
    # Two workers: a connection's plaintext must reach the worker that decodes its packets (its handshake),
    # or its events would lack the tls fields.
    with live_agent(pair.a, [pair.a_if], PROTOCOLS, {**SETTINGS, "packetbeat.interfaces.workers": 2}) as agent:
        _traffic(pair, servers["root"], tls=False)
        _traffic(pair, servers["root"], tls=True)
        time.sleep(0.5)
        assert agent.stop() == 0, agent.log()[-3000:]
    events = [e for e in agent.events() if e.get("type") in ("http", "redis", "pgsql", "mysql")
              and e["destination"]["ip"] == pair.b_ip]
    over_tls = [e for e in events if e.get("pktbeat", {}).get("payload", {}).get("source") == "tls_library"]
    plain = [e for e in events if "pktbeat" not in e]
    assert len(plain) + len(over_tls) == len(events)
    assert {e["destination"]["port"] for e in plain} == {HTTP_PORT, REDIS_PORT, PG_PORT, MYSQL_PORT}
    assert {e["destination"]["port"] for e in over_tls} == {HTTPS_PORT, REDIS_TLS_PORT, PG_PORT, MYSQL_PORT}
    # One event per request, although both ends of every connection call OpenSSL.
    assert sorted(map(_summary, over_tls)) == sorted(map(_summary, plain)), (plain, over_tls)
    kinds = {e["type"] for e in over_tls}
    assert kinds == {"http", "redis", "pgsql", "mysql"}, kinds
    # Every event has its connection's handshake: PostgreSQL's and MySQL's too, decoded on the wire after their
    # SSL requests.
    for event in over_tls:
        tls = event["tls"]
        assert tls["established"] is True and tls["version_protocol"] == "tls", tls
        assert tls["version"] in ("1.2", "1.3") and tls["cipher"], tls
        assert "detailed" not in tls
    http_tls = [e for e in over_tls if e["type"] == "http"]
    assert len(http_tls) == 7
    assert all(e["process"]["name"] in ("nginx",) for e in http_tls)
    # curl --http2: HTTP/2 streams, on the connection whose ALPN chose h2; the others stay HTTP/1.1.
    h2 = sorted((e["url"]["path"], e["http"]["response"]["status_code"]) for e in http_tls
                if e["http"]["version"] == "2" and e["tls"].get("next_protocol") == "h2")
    assert h2 == [("/h2-missing", 404), ("/index.txt", 200)], [(e["http"], e["tls"]) for e in http_tls]
    assert all(e["url"]["scheme"] == "https" for e in http_tls)
    assert all(e["http"]["version"] == "1.1" for e in plain if e["type"] == "http")
    # Eight connections, each followed from its client's end; the only lost bytes are the 300 kB write's tail.
    log = agent.log()
    totals = _worker_totals(log)
    assert totals["tls_plaintext.connections"] == 8 and totals["tls_plaintext.gap_bytes"] == 37856, totals
    per_worker = next(line for line in log.splitlines() if "records per worker at exit:" in line)
    assert "0=0," not in per_worker and not per_worker.endswith("=0"), per_worker  # both workers had connections
    big = [e for e in http_tls if e["url"]["path"] == "/py/one.txt"]
    assert big and big[0]["http"]["response"]["body"]["bytes"] == 20000, big


def test_no_uprobe_when_off_and_none_left_after_sigterm(servers: dict[str, Any]) -> None:
    pair: VethPair = servers["pair"]
    sleeper = pair.a.popen([sys.executable, "-c", "import ssl, time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _maps_libssl(sleeper.pid):
            time.sleep(0.05)
        assert not _uprobe_in(sleeper.pid, LIBSSL)
        with live_agent(pair.a, [pair.a_if], PROTOCOLS, {}) as agent:
            assert not _uprobe_in(sleeper.pid, LIBSSL), "tls_plaintext is off: no uprobe may be attached"
            assert agent.stop() == 0
        libcrypto = os.path.realpath("/lib/x86_64-linux-gnu/libcrypto.so.3")
        copy = servers["root"] / "libssl-copy.so.3"
        shutil.copy(LIBSSL, copy)
        settings = {"packetbeat.tls_plaintext": {**SETTINGS["packetbeat.tls_plaintext"], "libraries": [libcrypto]}}
        with live_agent(pair.a, [pair.a_if], PROTOCOLS, settings) as agent:
            assert agent.wait_for("library file(s) probed", timeout=20), agent.log()[-2000:]
            assert _uprobe_in(sleeper.pid, LIBSSL)
            # A program in its own mount namespace, whose libssl.so.3 is another file (as in a container).
            script = (f"mount --bind {copy} {os.path.realpath(LIBSSL)} && "
                      f"exec {sys.executable} -c 'import ssl, time; time.sleep(60)'")
            contained = pair.a.popen(["unshare", "--mount", "sh", "-c", script])
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not _maps_libssl(contained.pid):
                    time.sleep(0.05)
                assert _inode_of_libssl(contained.pid) != os.stat(LIBSSL).st_ino
                while time.monotonic() < deadline and not _uprobe_in(contained.pid, LIBSSL):
                    time.sleep(0.05)
                assert _uprobe_in(contained.pid, LIBSSL), agent.log()[-2000:]
            finally:
                contained.kill()
                contained.wait()
            assert agent.stop() == 0, agent.log()[-3000:]
        assert not _uprobe_in(sleeper.pid, LIBSSL), "a uprobe outlived the agent"
        warnings = [line for line in agent.log().splitlines() if "not OpenSSL's libssl" in line]
        assert len(warnings) == 1 and libcrypto in warnings[0], warnings
    finally:
        sleeper.kill()
        sleeper.wait()
