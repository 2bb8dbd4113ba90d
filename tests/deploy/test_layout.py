"""The installed layout: config found as Packetbeat finds it (-c relative to path.config, else
path.config/packetbeat.yml), paths from the wrapper's environment, overridable by -E and --path.*."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.helpers.replay import PKTBEAT


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PKTBEAT, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, **env})


def test_config_and_paths_from_the_installed_layout(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "packetbeat.yml").write_text("packetbeat.protocols:\n- type: http\n  ports: [80]\n")
    (etc / "other.yml").write_text("packetbeat.protocols:\n- type: dns\n  ports: [53]\n")
    for name in ("packetbeat.yml", "other.yml"):
        (etc / name).chmod(0o600)
    env = {"PKTBEAT_PATH_HOME": str(tmp_path / "home"), "PKTBEAT_PATH_CONFIG": str(etc),
           "PKTBEAT_PATH_DATA": str(tmp_path / "lib"), "PKTBEAT_PATH_LOGS": str(tmp_path / "log")}
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    assert _run(["test", "config"], env, elsewhere).returncode == 0
    exported = yaml.safe_load(_run(["export", "config"], env, elsewhere).stdout)
    assert exported["packetbeat"]["protocols"][0]["type"] == "http"
    relative = yaml.safe_load(_run(["export", "config", "-c", "other.yml"], env, elsewhere).stdout)
    assert relative["packetbeat"]["protocols"][0]["type"] == "dns"
    # the layout's paths, and -E over them
    version = _run(["version"], env, Path("/"))
    assert version.returncode == 0 and "pktbeat version" in version.stdout
    _run(["run", "-I", "/dev/null", "-E", f"path.logs={tmp_path}/elsewhere"], env, elsewhere)
    assert (tmp_path / "elsewhere").is_dir() and not (tmp_path / "log").exists()
