"""Running the pktbeat command for fault tests: its exit code, and the one line it must print on failure."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tests.helpers.replay import PKTBEAT

MEMORY_LIMIT = 1536 << 20  # address space of a pktbeat that must fail fast (a config bomb must not get far)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("pktbeat:")]

    def one_line_error(self, code: int, *needles: str) -> str:
        """Assert exit `code` with exactly one `pktbeat:` line holding every needle and no traceback."""
        assert self.code == code, f"exit {self.code}, not {code}:\n{self.stderr[-3000:]}"
        assert "Traceback" not in self.stderr and "Error:" not in self.stderr.replace("error:", ""), self.stderr
        lines = self.error_lines
        assert len(lines) == 1, self.stderr[-3000:]
        for needle in needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        return lines[0]


def pktbeat(args: Sequence[str], *, env: dict[str, str] | None = None, prefix: Sequence[str] = (),
            timeout: float = 60, limit_memory: bool = True, umask: int = 0o022) -> Outcome:
    """`pktbeat ARGS` with a bounded address space and time; the umask an operator's shell would have."""

    def limits() -> None:
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    proc = subprocess.run([*prefix, PKTBEAT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, preexec_fn=limits, umask=umask)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)
