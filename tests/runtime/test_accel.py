"""The native (mypyc) builds: used only when they match the sources, and they change no event."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import accel
from tests.helpers.replay import ROOT, corpus, replay

PURE = {accel.DISABLE_ENV: "1"}


def test_setup_built_the_native_modules_and_they_load() -> None:
    """Set-up compiles them; a fresh interpreter (as every pktbeat run) loads each one natively."""
    if os.environ.get(accel.DISABLE_ENV):
        pytest.skip("native modules turned off for this run")
    assert accel.matching_build(accel.build_dir()) is not None, "set-up's mypyc build is missing or stale"
    code = "import importlib; from agent import accel; [importlib.import_module(m) for m in accel.MODULES]; " \
           "print(' '.join(accel.active()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == list(accel.MODULES)
    pure = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**os.environ, **PURE})
    assert pure.stdout.split() == []


def test_a_build_from_other_sources_is_ignored(tmp_path: Path) -> None:
    build = accel.build_dir()
    if accel.matching_build(build) is None:
        pytest.skip("no native build to copy")
    copy = tmp_path / "accel"
    shutil.copytree(build, copy)
    assert accel.matching_build(copy) is not None
    (copy / accel.STAMP_FILE).write_text("0" * 64 + "\n")  # as if a source changed after the build
    assert accel.matching_build(copy) is None
    shutil.copytree(build, tmp_path / "partial")
    missing = next((tmp_path / "partial").rglob("dispatcher*"))
    missing.unlink()
    assert accel.matching_build(tmp_path / "partial") is None


@pytest.mark.parametrize("pcap", ["http_post.pcap", "dns_additional.pcap", "http_x_forwarded_for.pcap",
                                  "mysql_long_result.pcap", "pgsql_request_response.pcap", "http_minitwit.pcap",
                                  "http_url_params.pcap", "http_basicauth.pcap"])
def test_native_and_python_modules_give_the_same_events(pcap: str) -> None:
    if not corpus(pcap).exists():
        pytest.fail(f"corpus capture {pcap} is missing")
    native, _ = replay(corpus(pcap))
    python, _ = replay(corpus(pcap), env=PURE)

    def comparable(events: list[dict]) -> list[str]:
        # agent.* and the event ids hold the run's random agent ids; everything else must match.
        return [json.dumps({k: v for k, v in e.items() if k not in ("agent", "@metadata")}, sort_keys=True)
                for e in events]

    assert native, f"no events from {pcap}"
    assert comparable(native) == comparable(python)


def test_every_compiled_module_says_so_in_its_header() -> None:
    """Editing a compiled module must not silently drop the build to pure Python: its header warns first."""
    missing = [m for m in accel.MODULES
               if "Compiled by mypyc (agent/accel.py MODULES)" not in (accel.source_path(m).read_text()[:3000])]
    assert not missing, f"compiled modules without the mypyc header: {missing}"
