"""Process attribution live: real clients and servers in two namespaces, the agent on one namespace's veth.

curl -> nginx, psql -> postgres and redis-cli -> redis-server: every
transaction names the client process (source.process) and the server
process (destination.process, repeated in process) by the pid the test
started, their name and executable.  Then 5000 connections from children
that exit at once, and the feature turned off by a BTF file that is not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import live_agent, live_available
from tests.helpers.netns import Namespace, VethPair, veth_pair
from tests.protocols.http.test_live import NGINX_PORT, _nginx_conf

pytestmark = [pytest.mark.live, pytest.mark.server]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
REDIS_PORT = 6379
PROTOCOLS = [{"type": "http", "ports": [NGINX_PORT]}, {"type": "pgsql", "ports": [PG_PORT]},
             {"type": "redis", "ports": [REDIS_PORT]}, {"type": "dns", "ports": [53]}]


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """nginx, postgres and redis-server in namespace b; their pids and binaries."""
    reason = live_available()
    if reason:
        pytest.skip(reason)
    if not (PG_BIN / "postgres").exists():
        pytest.skip("postgresql 15 is not installed")
    nginx, redis, dnsmasq = _binary("nginx"), _binary("redis-server"), _binary("dnsmasq")
    with tempfile.TemporaryDirectory(prefix="pktbeat-procs-") as tmp, veth_pair("pbq") as pair:
        root = Path(tmp)
        os.chmod(root, 0o755)
        (root / "www").mkdir()
        (root / "www" / "index.html").write_text("hello\n")
        (root / "nginx.conf").write_text(_nginx_conf(root, pair.b_ip))
        nginx_proc = pair.b.popen([nginx, "-e", str(root / "error.log"), "-p", str(root), "-c",
                                   str(root / "nginx.conf")], log=root / "nginx.out")
        redis_proc = pair.b.popen([redis, "--port", str(REDIS_PORT), "--bind", pair.b_ip, "--save", "",
                                   "--appendonly", "no", "--protected-mode", "no", "--dir", str(root)],
                                  log=root / "redis.log")
        dnsmasq_proc = pair.b.popen([dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                     "--port=53", f"--listen-address={pair.b_ip}", "--bind-interfaces",
                                     "--pid-file=", "--user=root", "--group=root",
                                     "--host-record=host.example.test,192.0.2.10"], log=root / "dnsmasq.log")
        data = root / "pg"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        pair.b.popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                      "-c", f"listen_addresses={pair.b_ip}", "-c", f"port={PG_PORT}",
                      "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c", "ssl=off"],
                     log=root / "pg.log")
        for port in (NGINX_PORT, REDIS_PORT):
            pair.b.wait_port(port, pair.b_ip)
        pair.b.wait_port(53, pair.b_ip, udp=True)
        pair.b.wait_port(PG_PORT, pair.b_ip, timeout=60)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        yield {"pair": pair, "root": root, "nginx": (nginx_proc.pid, nginx), "redis": (redis_proc.pid, redis),
               "postgres": (postmaster, str(PG_BIN / "postgres")), "dnsmasq": (dnsmasq_proc.pid, dnsmasq)}


def _start(ns: Namespace, args: list[str]) -> subprocess.Popen[bytes]:
    """A client in `ns`; `ip netns exec` execs it, so the pid is the client's own."""
    return subprocess.Popen(ns.exec_args(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")


def _assert_process(part: dict[str, Any], pid: int | None, name: str, executable: str, ppid: int | None = None
                    ) -> None:
    proc = part.get("process")
    assert proc is not None, f"no process in {part}"
    if pid is not None:
        assert proc["pid"] == pid, proc
    if ppid is not None:
        assert proc["pid"] == ppid or proc["ppid"] == ppid, proc
    assert proc["name"] == name, proc
    assert _same_file(proc["executable"], executable), proc
    assert proc["start"].endswith("Z") and proc["user"]["id"].isdigit(), proc


def test_clients_and_servers_are_attributed(servers: dict[str, Any]) -> None:
    pair: VethPair = servers["pair"]
    curl, psql, redis_cli, dig = _binary("curl"), _binary("psql"), _binary("redis-cli"), _binary("dig")
    clients: dict[str, int] = {}
    flows = {"packetbeat.flows": {"timeout": "30s", "period": "30s"}}
    with live_agent(pair.a, [pair.a_if], PROTOCOLS, flows) as agent:
        for name, args in (
            ("curl", [curl, "-sS", "-o", "/dev/null", f"http://{pair.b_ip}:{NGINX_PORT}/index.html"]),
            ("psql", [psql, "-X", "-h", pair.b_ip, "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres",
                      "-c", "SELECT 42"]),
            ("redis-cli", [redis_cli, "-h", pair.b_ip, "-p", str(REDIS_PORT), "SET", "procs", "yes"]),
            ("dig", [dig, f"@{pair.b_ip}", "+tries=1", "host.example.test"]),
        ):
            proc = _start(pair.a, args)
            clients[name] = proc.pid
            _finish(proc)
        time.sleep(0.3)
        assert agent.stop() == 0, agent.log()[-3000:]
    events = agent.events()
    by_type = {t: [e for e in events if e.get("type") == t] for t in ("http", "pgsql", "redis", "dns")}
    assert all(by_type.values()), {t: len(v) for t, v in by_type.items()}

    nginx_pid, nginx = servers["nginx"]
    for event in by_type["http"]:
        _assert_process(event["source"], clients["curl"], "curl", curl)
        _assert_process(event["destination"], nginx_pid, "nginx", nginx)
        assert event["process"] == event["destination"]["process"]
        assert "process" not in event["client"]  # Packetbeat's names only: source/destination and process
    postmaster, postgres = servers["postgres"]
    for event in by_type["pgsql"]:
        _assert_process(event["source"], clients["psql"], "psql", str(PG_BIN / "psql"))
        # The backend serving the connection is the postmaster's child.
        _assert_process(event["destination"], None, "postgres", postgres, ppid=postmaster)
        assert event["destination"]["process"]["user"]["name"] == "postgres"
    redis_pid, redis = servers["redis"]
    for event in by_type["redis"]:
        _assert_process(event["source"], clients["redis-cli"], "redis-cli", _binary("redis-cli"))
        _assert_process(event["destination"], redis_pid, "redis-server", redis)
        assert event["source"]["process"]["args"][:3] == [redis_cli, "-h", pair.b_ip]
    dnsmasq_pid, dnsmasq = servers["dnsmasq"]
    for event in by_type["dns"]:  # UDP: the server's socket is bound to its address, not connected
        _assert_process(event["source"], clients["dig"], "dig", dig)
        _assert_process(event["destination"], dnsmasq_pid, "dnsmasq", dnsmasq)

    # Flows (reported by the parent from the kernel's socket owners) carry the same processes.
    web = [e for e in events if e.get("type") == "flow" and e["destination"].get("port") == NGINX_PORT]
    assert web and all(e["source"]["process"]["pid"] == clients["curl"] for e in web), web
    assert all(e["destination"]["process"]["pid"] == nginx_pid for e in web)
    db = [e for e in events if e.get("type") == "flow" and e["destination"].get("port") == PG_PORT]
    assert db and all(e["destination"]["process"]["ppid"] == postmaster for e in db)


SHORT_LIVED_COUNT = 5000


def short_lived_client(directory: Path) -> str:
    """tests/procs/short_lived.c, compiled into `directory`."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    binary = directory / "short_lived"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(binary), str(Path(__file__).with_name("short_lived.c"))],
                   check=True, capture_output=True, timeout=60)
    return str(binary)


def test_short_lived_clients_are_attributed(servers: dict[str, Any]) -> None:
    """5000 connections, each from a child that exits as soon as it has its response: >= 99.9% attributed."""
    pair: VethPair = servers["pair"]
    nginx_pid, _ = servers["nginx"]
    client = short_lived_client(servers["root"])
    # Two workers: each socket's owner must reach the worker its packets go to (the same flow hash).
    settings = {"packetbeat.interfaces.buffer_size_mb": 16, "packetbeat.interfaces.workers": 2}
    with live_agent(pair.a, [pair.a_if], PROTOCOLS[:1], settings) as agent:
        started = time.monotonic()
        run = pair.a.run([client, pair.b_ip, str(NGINX_PORT), str(SHORT_LIVED_COUNT), "4"], timeout=180)
        elapsed = time.monotonic() - started
        # On a loaded machine the workers may still be behind: the rate counts connections, so wait for them.
        deadline = time.monotonic() + 60
        while len(agent.events("http")) < SHORT_LIVED_COUNT and time.monotonic() < deadline:
            time.sleep(0.5)
        assert agent.stop() == 0, agent.log()[-3000:]
    children = {int(p) for p in run.stdout.split()}
    assert len(children) == SHORT_LIVED_COUNT
    events = agent.events("http")
    attributed = [e for e in events if e["source"].get("process", {}).get("pid") in children
                  and e["destination"].get("process", {}).get("pid") == nginx_pid]
    rate = len(attributed) / SHORT_LIVED_COUNT
    print(f"{SHORT_LIVED_COUNT} short-lived clients in {elapsed:.1f}s: {len(events)} events, "
          f"{len(attributed)} attributed ({rate:.2%})")
    assert rate >= 0.999, agent.log()[-3000:]
    # The children never exec'd: their program is the parent's, from the kernel's record of its execve.
    sample = attributed[0]["source"]["process"]
    assert sample["executable"] == client and sample["args"] == [client, pair.b_ip, str(NGINX_PORT),
                                                                  str(SHORT_LIVED_COUNT), "4"], sample


def test_without_btf_capture_goes_on_and_one_line_says_why(servers: dict[str, Any]) -> None:
    pair: VethPair = servers["pair"]
    settings = {"packetbeat.procs.btf_file": "/nonexistent/vmlinux"}
    with live_agent(pair.a, [pair.a_if], PROTOCOLS[:1], settings) as agent:
        pair.a.run([_binary("curl"), "-sS", "-o", "/dev/null", f"http://{pair.b_ip}:{NGINX_PORT}/index.html"])
        time.sleep(0.3)
        assert agent.stop() == 0, agent.log()[-3000:]
    lines = [line for line in agent.log().splitlines() if "packetbeat.procs" in line]
    assert len(lines) == 1 and "is off: no usable BTF (/nonexistent/vmlinux: No such file or directory)" in lines[0]
    events = agent.events("http")
    assert events and not any("process" in e or "process" in e["source"] for e in events)
