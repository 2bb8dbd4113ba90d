"""Starting the stand-in as a subprocess (its own interpreter and GIL), and talking to its control port.

`target(version=...)` gives either a stand-in or, when `ES_URL` is set, the
real cluster at that URL (fault injection is then unavailable: tests that
need it skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


class StandinProcess:
    def __init__(self, version: str = "8.15.3", *, tls: tuple[str, str] | None = None,
                 users: list[str] | None = None, api_keys: list[str] | None = None, port: int = 0) -> None:
        args = [PYTHON, "-m", "tests.es_standin", "--version", version, "--port", str(port)]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        for user in users or []:
            args += ["--user", user]
        for key in api_keys or []:
            args += ["--api-key", key]
        self.version = version
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            error = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"stand-in did not start: {line!r} {error}")
        _, port_text, control_text = line.split()
        self.port = int(port_text)
        self.control_port = int(control_text)
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.fault_injection = True

    def control(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data,
                                         method="POST" if data is not None else "GET",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def faults(self, *phases: tuple[str, float], delay: float = 0.0, size: int = 0) -> None:
        """Phases back to back from now; `delay` applies to "slow", `size` to "huge"."""
        self.control("/faults", {"phases": [{"kind": k, "seconds": s, "delay": delay, "size": size}
                                            for k, s in phases]})

    def limit_content_length(self, max_bytes: int) -> None:
        """413 with an empty body for any request body longer than `max_bytes` (0: no limit)."""
        self.control("/limits", {"max_content_length": max_bytes})

    def item_faults(self, **settings: Any) -> None:
        self.control("/item_faults", settings)

    def stats(self) -> dict[str, Any]:
        return self.control("/stats")

    def wait_phase(self, kind: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats().get("phase") == kind:
                return
            time.sleep(0.05)
        raise AssertionError(f"stand-in never reached phase {kind}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class RealCluster:
    """The cluster at ES_URL (credentials in the URL or ES_USERNAME/ES_PASSWORD/ES_API_KEY)."""

    fault_injection = False

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.version = ""

    def stop(self) -> None:
        pass


def real_cluster_url() -> str | None:
    return os.environ.get("ES_URL") or None


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def interpreter() -> str:
    return PYTHON if os.path.exists(PYTHON) else sys.executable
