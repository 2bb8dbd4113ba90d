"""The Debian package: build it, install it, run it as the pktbeat user with the unit's capabilities, remove, purge.

This machine's init is not systemd: `systemd-analyze verify` checks the installed unit, and setpriv with
exactly the unit's User=, AmbientCapabilities= and NoNewPrivileges= stands in for starting it.  The test
holds a lock (other worktrees on the same machine run it too: one dpkg at a time) and purges the package
and its user whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.live import live_available
from tests.helpers.netns import veth_pair

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "pktbeat.service"
LOCK = Path("/tmp/pktbeat-package-test.lock")
INSTALLED_UNIT = Path("/lib/systemd/system/pktbeat.service")

pytestmark = [
    pytest.mark.skipif(live_available() is not None, reason=str(live_available())),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("setpriv") is None,
                       reason="needs dpkg-deb and setpriv"),
    pytest.mark.live,
    pytest.mark.slow,
]


def unit_setting(name: str, unit: Path = UNIT) -> str:
    values = [line.split("=", 1)[1].strip() for line in unit.read_text().splitlines() if line.startswith(f"{name}=")]
    assert values, f"{name}= missing from {unit}"
    return values[-1]


def setpriv_args(user: str, unit: Path = UNIT) -> list[str]:
    """setpriv standing in for systemd: the unit's user, ambient and bounding capabilities, no new privileges."""
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_setting("AmbientCapabilities", unit).split())
    bounding = ",".join("+" + c.removeprefix("CAP_").lower()
                        for c in unit_setting("CapabilityBoundingSet", unit).split())
    uid, gid = (subprocess.run(["id", flag, user], capture_output=True, text=True, check=True).stdout.strip()
                for flag in ("-u", "-g"))
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", f"--inh-caps=-all,{caps}",
            f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{bounding}"]
    if unit_setting("NoNewPrivileges", unit) == "yes":
        args.append("--no-new-privs")
    return args


def _dpkg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"dpkg {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def _installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "pktbeat"], capture_output=True, text=True)
    return proc.returncode == 0 and "installed" in proc.stdout and "not-installed" not in proc.stdout


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    with LOCK.open("w") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another package test held the lock for 10 minutes")
                time.sleep(1)
        yield


@contextlib.contextmanager
def _purged_afterwards() -> Iterator[None]:
    try:
        yield
    finally:
        if _installed() or Path("/var/lib/dpkg/info/pktbeat.list").exists():
            _dpkg("--purge", "pktbeat", check=False)
        for user in ("pktbeat",):
            if subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0:
                subprocess.run(["userdel", user], capture_output=True)
        if subprocess.run(["getent", "group", "pktbeat"], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", "pktbeat"], capture_output=True)


def _capture_http_as_pktbeat() -> list[dict[str, object]]:
    """The installed program, its installed config, the pktbeat user with the unit's capabilities, on a veth."""
    with veth_pair("pbk") as pair:
        pair.b.popen(["python3", "-m", "http.server", "8080", "--bind", pair.b_ip])
        pair.b.wait_port(8080, pair.b_ip)
        log = Path(tempfile.mkdtemp(prefix="pktbeat-deb-")) / "agent.log"
        try:
            agent = pair.a.popen([*setpriv_args("pktbeat"), "/usr/bin/pktbeat", "run", "-e", "-i", pair.a_if,
                                  "-E", "packetbeat.interfaces.workers=1",
                                  "-E", "packetbeat.interfaces.buffer_size_mb=4"], log=log, cwd="/")
            deadline = time.monotonic() + 60
            while "capturing on" not in log.read_text() and agent.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "capturing on" in log.read_text(), log.read_text()[-3000:]
            for _ in range(2):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:8080/"])
            time.sleep(0.5)
            agent.terminate()
            assert agent.wait(timeout=15) == 0, log.read_text()[-3000:]
            text = log.read_text()
        finally:
            shutil.rmtree(log.parent, ignore_errors=True)
    assert "Traceback" not in text
    events = []
    for file in Path("/var/lib/pktbeat").glob("packetbeat-*.ndjson"):
        assert file.stat().st_uid == _uid("pktbeat") and file.stat().st_mode & 0o077 == 0
        events += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("type") == "http"]


def _uid(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)


def test_deb_install_run_as_pktbeat_remove_purge(tmp_path: Path) -> None:
    with _exclusive():
        if _installed():
            pytest.skip("pktbeat is installed on this machine already; not touching it")
        build = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh"), "--out", str(tmp_path)],
                               capture_output=True, text=True, timeout=600)
        assert build.returncode == 0, build.stderr[-3000:]
        debs = list(tmp_path.glob("pktbeat_*_amd64.deb"))
        assert len(debs) == 1
        info = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Depends"], capture_output=True, text=True).stdout
        assert "python3-bpfcc" in info and "linux-headers" in info
        with _purged_afterwards():
            _dpkg("-i", str(debs[0]))
            version = subprocess.run(["pktbeat", "version"], capture_output=True, text=True, cwd="/")
            assert version.returncode == 0 and "pktbeat version" in version.stdout, version.stderr
            assert Path("/etc/pktbeat/packetbeat.yml").exists()
            assert "/etc/pktbeat/packetbeat.yml" in _dpkg("-s", "pktbeat").stdout  # Conffiles:
            for directory in ("/var/lib/pktbeat", "/var/log/pktbeat"):
                st = os.stat(directory)
                assert st.st_uid == _uid("pktbeat") and st.st_mode & 0o007 == 0
            assert subprocess.run(["getent", "passwd", "pktbeat"], capture_output=True, text=True
                                  ).stdout.split(":")[6].strip().endswith("nologin")
            if shutil.which("systemd-analyze"):
                verify = subprocess.run(["systemd-analyze", "verify", str(INSTALLED_UNIT)], capture_output=True,
                                        text=True, timeout=120)
                assert verify.returncode == 0, verify.stderr
            assert INSTALLED_UNIT.read_text() == UNIT.read_text()
            native = subprocess.run(["/opt/pktbeat/bin/python", "-c", "import agent.accel as a; "
                                     "print(bool(a.matching_build(a.build_dir())))"],
                                    capture_output=True, text=True, cwd="/")
            assert native.stdout.strip() == "True", native.stderr  # the mypyc build is in the package

            events = _capture_http_as_pktbeat()
            assert len(events) == 2 and all(e["status"] == "OK" for e in events)

            Path("/etc/pktbeat/packetbeat.yml").write_text(Path("/etc/pktbeat/packetbeat.yml").read_text()
                                                            + "\n# edited by the operator\n")
            _dpkg("-r", "pktbeat")
            assert not Path("/usr/bin/pktbeat").exists() and not Path("/opt/pktbeat").exists()
            assert not INSTALLED_UNIT.exists()
            assert "edited by the operator" in Path("/etc/pktbeat/packetbeat.yml").read_text()
            _dpkg("-P", "pktbeat")
            leftovers = [p for p in ("/etc/pktbeat", "/var/lib/pktbeat", "/var/log/pktbeat", "/opt/pktbeat",
                                     "/usr/share/pktbeat", "/usr/share/doc/pktbeat") if Path(p).exists()]
            assert leftovers == []
            assert subprocess.run(["getent", "passwd", "pktbeat"], capture_output=True).returncode != 0
            assert subprocess.run(["getent", "group", "pktbeat"], capture_output=True).returncode != 0
            assert not _installed()
    assert re.match(r"pktbeat_\d+\.\d+\.\d+_amd64\.deb", debs[0].name)
