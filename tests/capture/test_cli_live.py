"""`pktbeat run` preflight failures (one line, distinct exit codes) and `pktbeat devices`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.live import live_available
from tests.helpers.netns import namespace
from tests.helpers.replay import PKTBEAT
from tests.helpers.tunpair import tun_pair

pytestmark = pytest.mark.skipif(live_available() is not None, reason=str(live_available()))


@pytest.fixture
def world_readable_config() -> Iterator[Path]:
    """A config an unprivileged user can read (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="pktbeat-cli-"))
    try:
        directory.chmod(0o755)
        config = directory / "packetbeat.yml"
        config.write_text(f"packetbeat.protocols:\n- type: icmp\noutput.file.path: {directory}/out\n"
                          f"path.data: {directory}/data\n")
        config.chmod(0o644)
        yield config
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(args: list[str], env: dict[str, str] | None = None, prefix: list[str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), PKTBEAT, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv missing")
def test_without_privileges_one_line_and_exit_5(world_readable_config: Path) -> None:
    proc = _run(["run", "-e", "-c", str(world_readable_config)],
                prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    assert proc.returncode == 5, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pktbeat:")]
    assert len(lines) == 1 and "needs root" in lines[0] and "Traceback" not in proc.stderr


def test_without_kernel_headers_exit_6(world_readable_config: Path) -> None:
    proc = _run(["run", "-e", "-c", str(world_readable_config)], env={"BCC_KERNEL_SOURCE": "/nonexistent"})
    assert proc.returncode == 6, proc.stderr
    assert "kernel headers" in proc.stderr and "scripts/setup.sh" in proc.stderr


def test_bad_device_number_exit_7(world_readable_config: Path) -> None:
    proc = _run(["run", "-e", "-c", str(world_readable_config), "-i", "999"])
    assert proc.returncode == 7, proc.stderr
    assert "device 999" in proc.stderr


def test_devices_lists_type_state_and_link_layer() -> None:
    with namespace("pbd") as ns, tun_pair() as tun:
        ns.run("ip link add pbdv0 type veth peer name pbdv1")
        ns.run("ip link set pbdv0 up")
        out = ns.run([PKTBEAT, "devices"]).stdout
        rows = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
        assert rows["lo"][2:6] == ["loopback", "up", "L2", "yes"]
        assert rows["pbdv0"][2] == "veth" and rows["pbdv0"][4:6] == ["L2", "yes"]
        assert rows["pbdv1"][3] == "down"
        assert "ingress only" in out
        tun_out = tun.a.run([PKTBEAT, "devices"]).stdout
        tun_row = next(line.split() for line in tun_out.splitlines() if tun.a_if in line)
        assert tun_row[2:6] == ["tun", "up", "L3", "yes"] and f"{tun.a_ip}/32" in " ".join(tun_row)
    # the row numbers are what packetbeat.interfaces.device accepts
    assert out.splitlines()[1].split()[0] == "0"
