"""Preflight as the unit runs pktbeat, less one capability: exit 5 and one line naming what to grant."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_package import UNIT, unit_setting
from tests.helpers.live import live_available
from tests.helpers.replay import PKTBEAT

pytestmark = [pytest.mark.skipif(live_available() is not None, reason=str(live_available())),
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv missing")]


@pytest.fixture
def config() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pktbeat-caps-"))
    try:
        directory.chmod(0o755)
        file = directory / "packetbeat.yml"
        file.write_text(f"packetbeat.protocols:\n- type: http\n  ports: [80]\npath.data: {directory}/data\n"
                        f"path.logs: {directory}/logs\n")
        file.chmod(0o644)
        yield file
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_unit_grants_exactly_the_three_capabilities() -> None:
    assert unit_setting("AmbientCapabilities").split() == ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
    assert unit_setting("CapabilityBoundingSet") == unit_setting("AmbientCapabilities")
    assert unit_setting("User") == "pktbeat" and unit_setting("NoNewPrivileges") == "yes"
    assert unit_setting("ProtectSystem") == "strict" and unit_setting("ProtectHome") == "yes"
    assert set(unit_setting("ReadWritePaths").split()) == {"/var/lib/pktbeat", "/var/log/pktbeat"}
    assert unit_setting("Restart") == "on-failure"
    assert " -e " in unit_setting("ExecStart") + " "
    assert UNIT.read_text().count("CAP_SYS_ADMIN") == 0


@pytest.mark.parametrize("missing", ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"])
def test_preflight_names_the_missing_capability(config: Path, missing: str) -> None:
    granted = [c for c in unit_setting("AmbientCapabilities").split() if c != missing]
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in granted)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps=-all,{caps}",
                           f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}", "--no-new-privs",
                           PKTBEAT, "run", "-e", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktbeat: ") and "Traceback" not in proc.stderr
    assert f"needs {missing}," in lines[0] and "AmbientCapabilities=" in lines[0]
    assert not any(f"needs {c}" in lines[0] for c in granted)


@pytest.mark.live
def test_live_capture_as_an_unprivileged_user_with_the_units_capabilities(config: Path) -> None:
    """nobody, the unit's capabilities, no new privileges: the program loads, attaches and decodes HTTP."""
    import json
    import os
    import time

    from tests.deploy.test_package import setpriv_args
    from tests.helpers.netns import veth_pair

    directory = config.parent
    os.chown(directory, 65534, 65534)
    log = directory / "agent.log"
    with veth_pair("pbp") as pair:
        pair.b.popen(["python3", "-m", "http.server", "8080", "--bind", pair.b_ip])
        pair.b.wait_port(8080, pair.b_ip)
        agent = pair.a.popen([*setpriv_args("nobody"), PKTBEAT, "run", "-e", "-c", str(config), "-i", pair.a_if,
                              "-E", "packetbeat.protocols=[{type: http, ports: [8080]}]",
                              "-E", "packetbeat.interfaces.workers=1", "-E", f"path.logs={directory}/logs"], log=log)
        deadline = time.monotonic() + 60
        while "capturing on" not in log.read_text() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "capturing on" in log.read_text(), log.read_text()[-3000:]
        pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}:8080/"])
        time.sleep(0.5)
        agent.terminate()
        assert agent.wait(timeout=15) == 0, log.read_text()[-3000:]
    events = [json.loads(line) for file in (directory / "data").glob("packetbeat-*.ndjson")
              for line in file.read_text().splitlines()]
    http = [e for e in events if e.get("type") == "http"]
    assert len(http) == 1 and http[0]["status"] == "OK" and http[0]["http"]["response"]["status_code"] == 200
