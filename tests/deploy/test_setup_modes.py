"""scripts/setup.sh: the runtime set-up installs only what the agent needs; `plan` changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"
SERVERS = ("mariadb-server", "postgresql", "rabbitmq-server", "redis-server", "memcached", "sip-tester")
SERVER_PREFIXES = ("nginx", "dnsmasq")


def _plan(mode: str) -> list[str]:
    proc = subprocess.run(["bash", str(SETUP), "plan", mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_plan_run_lists_the_runtime_only() -> None:
    packages = _plan("run")
    assert "python3-bpfcc" in packages
    assert any(p.startswith("linux-headers-") for p in packages)
    assert not [p for p in packages if p in SERVERS or p.startswith(SERVER_PREFIXES)], packages
    test_packages = _plan("test")
    assert set(packages) <= set(test_packages)
    assert set(SERVERS) <= set(test_packages) and "tmux" in test_packages and "systemd" in test_packages


def test_plan_changes_nothing_and_rejects_a_bad_mode() -> None:
    proc = subprocess.run(["bash", str(SETUP), "plan", "everything"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "plan run|test" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="set-up runs as root")
def test_runtime_venv_has_no_test_extras() -> None:
    """A fresh venv made by the runtime set-up: pktbeat and BCC work, pytest is absent."""
    venv = Path(tempfile.mkdtemp(prefix="pktbeat-runtime-venv-"))
    shutil.rmtree(venv)
    try:
        proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PKTBEAT_VENV": str(venv)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        python = str(venv / "bin" / "python")
        check = subprocess.run([python, "-c", "import bcc, prometheus_client, rich, agent.cli.main"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        for extra in ("pytest", "hypothesis", "mypy", "psycopg"):
            assert subprocess.run([python, "-c", f"import {extra}"], capture_output=True).returncode != 0, extra
        version = subprocess.run([str(venv / "bin" / "pktbeat"), "version"], capture_output=True, text=True)
        assert version.returncode == 0 and "pktbeat version" in version.stdout
    finally:
        shutil.rmtree(venv, ignore_errors=True)
