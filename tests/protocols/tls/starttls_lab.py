"""Real servers that switch a connection to TLS part-way, in namespace b of a veth pair; clients run in a.

- PostgreSQL 15 with `ssl=on`, psql with `sslmode=require` (SSLRequest, 'S', TLS);
- MariaDB with a certificate, mysql-connector-python with SSL (SSL request packet, TLS);
- slapd (OpenLDAP), `ldapsearch -ZZ` (StartTLS extended operation, TLS);
- exim4, swaks `--tls` (EHLO, STARTTLS, 220, TLS);
- a small HTTP proxy (CONNECT, 200, TLS to nginx behind it), curl `--proxy`.

Names resolve through /etc/netns/<namespace>/hosts (`ip netns exec` mounts it
over /etc/hosts), so every client sends its server's name in SNI, as it would
in production.  `Lab.case(name)` is the client run of one case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.netns import Namespace, VethPair
from tests.helpers.nginx import nginx_conf

DOMAIN = "pktbeat.test"
PG_HOST, MYSQL_HOST, LDAP_HOST, MAIL_HOST = (f"db.{DOMAIN}", f"mysql.{DOMAIN}", f"ldap.{DOMAIN}", f"mx.{DOMAIN}")
PROXY_HOST, WEB_HOST = f"proxy.{DOMAIN}", f"www.{DOMAIN}"
PG_PORT, MYSQL_PORT, LDAP_PORT, SMTP_PORT, PROXY_PORT, WEB_PORT = 5432, 3306, 389, 587, 3128, 8443
PG_BIN = Path("/usr/lib/postgresql/15/bin")
EXIM = shutil.which("exim4") or "/usr/sbin/exim4"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"

# case -> (server port, what the client runs)
CASES = ("pgsql", "mysql", "ldap", "smtp", "connect")
PORTS = {"pgsql": PG_PORT, "mysql": MYSQL_PORT, "ldap": LDAP_PORT, "smtp": SMTP_PORT, "connect": PROXY_PORT}
SNI = {"pgsql": PG_HOST, "mysql": MYSQL_HOST, "ldap": LDAP_HOST, "smtp": MAIL_HOST, "connect": WEB_HOST}


def missing_tools() -> list[str]:
    wanted = {"postgres": str(PG_BIN / "postgres"), "psql": "psql", "mariadbd": "mariadbd",
              "mariadb-install-db": "mariadb-install-db", "slapd": SLAPD, "ldapsearch": "ldapsearch", "exim4": EXIM,
              "swaks": "swaks", "nginx": "nginx", "curl": "curl", "openssl": "openssl", "tcpdump": "tcpdump",
              "runuser": "runuser"}
    return [name for name, path in wanted.items() if shutil.which(path) is None and not os.access(path, os.X_OK)]


@contextlib.contextmanager
def hosts_file(ns: Namespace, entries: dict[str, str]) -> Iterator[None]:
    """Names for processes in `ns` (ip netns exec bind-mounts /etc/netns/<ns>/hosts over /etc/hosts)."""
    directory = Path("/etc/netns") / ns.name
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in entries.items())]
    (directory / "hosts").write_text("\n".join(lines) + "\n")
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def make_certificate(tmp: Path) -> None:
    """One EC certificate for every server name (quick to make, small in the pcaps)."""
    names = ",".join(f"DNS:{n}" for n in SNI.values())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "30", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"),
                    "-subj", f"/O=pktbeat test/CN={DOMAIN}", "-addext", f"subjectAltName={names}"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(tmp / "key.pem", 0o644)


@dataclass
class Lab:
    pair: VethPair
    tmp: Path

    def case(self, name: str) -> Callable[[], None]:
        return getattr(self, f"_{name}")  # type: ignore[no-any-return]

    # -- clients ------------------------------------------------------------------

    def _pgsql(self) -> None:
        out = self.pair.a.run(["psql", "-X", "-At", f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres "
                               "sslmode=require", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
        assert out.stdout.strip() == "t", out.stdout

    def _mysql(self) -> None:
        # mysql-connector-python, not the mariadb client: Connector/C sends no SNI.
        script = (f"import mysql.connector\nconn = mysql.connector.connect(host={MYSQL_HOST!r}, port={MYSQL_PORT}, "
                  "user='root', password='', use_pure=True, ssl_disabled=False, ssl_verify_cert=False)\n"
                  "cur = conn.cursor()\ncur.execute(\"SHOW STATUS LIKE 'Ssl_version'\")\nprint(cur.fetchall())\n")
        out = self.pair.a.run([sys.executable, "-c", script])
        assert "TLS" in out.stdout, out.stdout

    def _ldap(self) -> None:
        out = self.pair.a.run(["env", "LDAPTLS_REQCERT=never", "ldapsearch", "-ZZ", "-x", "-LLL",
                               "-H", f"ldap://{LDAP_HOST}:{LDAP_PORT}", "-b", "", "-s", "base", "supportedLDAPVersion"])
        assert "supportedLDAPVersion: 3" in out.stdout, out.stdout

    def _smtp(self) -> None:
        out = self.pair.a.run(["swaks", "--server", f"{MAIL_HOST}:{SMTP_PORT}", "--ehlo", f"client.{DOMAIN}",
                               "--tls", "--tls-sni", MAIL_HOST, "--from", "alice@example.com",
                               "--to", f"bob@{DOMAIN}", "--header", "Subject: over TLS", "--body", "secret body"],
                              timeout=60)
        assert "250 OK id=" in out.stdout or "250 OK" in out.stdout, out.stdout[-2000:]

    def _connect(self) -> None:
        out = self.pair.a.run(["curl", "-sS", "--max-time", "10", "-k", "--proxy", f"http://{PROXY_HOST}:{PROXY_PORT}",
                               f"https://{WEB_HOST}:{WEB_PORT}/hello"])
        assert out.stdout == "hello through the proxy\n", out.stdout
        refused = self.pair.a.run(["curl", "-sS", "--max-time", "10", "-k", "--proxy",
                                   f"http://{PROXY_HOST}:{PROXY_PORT}", f"https://{WEB_HOST}:25/"], check=False)
        assert refused.returncode != 0


@contextlib.contextmanager
def lab(pair: VethPair, tmp: Path) -> Iterator[Lab]:
    """Every server running in namespace b, names resolvable in both namespaces."""
    b_ip = pair.b_ip
    names = {name: b_ip for name in SNI.values()}
    names[WEB_HOST] = "127.0.0.1"  # the proxy reaches nginx on b's loopback
    client_names = {name: b_ip for name in (*SNI.values(), PROXY_HOST)}
    make_certificate(tmp)
    with hosts_file(pair.a, client_names), hosts_file(pair.b, names):
        prepare = [_prepare_postgres(tmp), _prepare_mariadb(tmp)]
        for proc in prepare:
            assert proc.wait(timeout=180) == 0, f"server set-up failed: {proc.args}"
        _start_postgres(pair, tmp)
        _start_mariadb(pair, tmp)
        _start_slapd(pair, tmp)
        _start_exim(pair, tmp)
        _start_proxy_and_nginx(pair, tmp)
        for port in PORTS.values():
            pair.b.wait_port(port, host=b_ip, timeout=90)
        pair.b.wait_port(WEB_PORT, host="127.0.0.1")
        yield Lab(pair, tmp)


# -- servers ---------------------------------------------------------------------------


def _prepare_postgres(tmp: Path) -> subprocess.Popen[bytes]:
    os.chmod(tmp, 0o755)
    data = tmp / "pgdata"
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    return subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                             "-A", "trust", "-U", "postgres", "--no-sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start_postgres(pair: VethPair, tmp: Path) -> None:
    data = tmp / "pgdata"
    for name in ("cert.pem", "key.pem"):
        shutil.copy(tmp / name, data / name)
        shutil.chown(data / name, "postgres", "postgres")
        os.chmod(data / name, 0o600)
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("hostssl all all 0.0.0.0/0 trust\n")
    pair.b.popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                  "-c", f"listen_addresses={pair.b_ip}", "-c", f"port={PG_PORT}",
                  "-c", f"unix_socket_directories={data}",
                  "-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "ssl=on",
                  "-c", f"ssl_cert_file={data / 'cert.pem'}", "-c", f"ssl_key_file={data / 'key.pem'}"],
                 log=tmp / "postgres.log")


def _prepare_mariadb(tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["mariadb-install-db", f"--datadir={tmp / 'mydata'}", "--user=root",
                             "--auth-root-authentication-method=normal", "--skip-test-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start_mariadb(pair: VethPair, tmp: Path) -> None:
    pair.b.popen(["mariadbd", "--no-defaults", f"--datadir={tmp / 'mydata'}", f"--socket={tmp}/mysql.sock",
                  f"--bind-address={pair.b_ip}", f"--port={MYSQL_PORT}", "--user=root", "--skip-grant-tables",
                  f"--pid-file={tmp}/mysql.pid", "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
                  "--skip-log-bin", f"--tmpdir={tmp}", f"--ssl-cert={tmp / 'cert.pem'}",
                  f"--ssl-key={tmp / 'key.pem'}"], log=tmp / "mariadb.log")


def _start_slapd(pair: VethPair, tmp: Path) -> None:
    conf = tmp / "slapd.conf"
    conf.write_text(textwrap.dedent(f"""
        pidfile {tmp}/slapd.pid
        argsfile {tmp}/slapd.args
        TLSCertificateFile {tmp}/cert.pem
        TLSCertificateKeyFile {tmp}/key.pem
        """))
    pair.b.popen([SLAPD, "-d", "0", "-f", str(conf), "-h", f"ldap://{pair.b_ip}:{LDAP_PORT}/"],
                 log=tmp / "slapd.log")


EXIM_CONF = """
primary_hostname = {host}
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {tmp}/spool
log_file_path = {tmp}/eximlog/%slog
pid_file_path = {tmp}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = {ip}
queue_only = true
tls_advertise_hosts = *
tls_certificate = {tmp}/cert.pem
tls_privatekey = {tmp}/key.pem
host_lookup =
rfc1413_hosts =
keep_environment =
domainlist local_domains = {domain}
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  accept  domains = +local_domains
  deny    message = relay not permitted
"""


def _start_exim(pair: VethPair, tmp: Path) -> None:
    for sub in ("spool", "eximlog"):
        (tmp / sub).mkdir()
        shutil.chown(tmp / sub, "Debian-exim", "Debian-exim")
    conf = tmp / "exim.conf"
    conf.write_text(EXIM_CONF.format(host=MAIL_HOST, tmp=tmp, port=SMTP_PORT, ip=pair.b_ip, domain=DOMAIN))
    pair.b.popen([EXIM, "-C", str(conf), "-bdf", "-q30m"], log=tmp / "exim.out")


PROXY = r"""
import socket, sys, threading

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

def handle(client):
    head = b""
    while b"\r\n\r\n" not in head:
        data = client.recv(4096)
        if not data:
            return
        head += data
    method, target = head.split(b" ")[:2]
    host, _, port = target.rpartition(b":")
    if method != b"CONNECT" or port != b"%d":
        client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        client.close()
        return
    upstream = socket.create_connection((host.decode(), int(port)))
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    pipe(upstream, client)

server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

NGINX_HTTP = """
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        location / {{ return 200 "hello through the proxy\\n"; }}
    }}
"""


def _start_proxy_and_nginx(pair: VethPair, tmp: Path) -> None:
    http = NGINX_HTTP.format(tmp=tmp, port=WEB_PORT, host=WEB_HOST)
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, http, main="worker_processes 1;", error_level="error"))
    pair.b.popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], log=tmp / "nginx.out")
    (tmp / "proxy.py").write_text(PROXY % WEB_PORT)
    pair.b.popen([sys.executable, str(tmp / "proxy.py"), pair.b_ip, str(PROXY_PORT)], log=tmp / "proxy.log")
    time.sleep(0.1)
