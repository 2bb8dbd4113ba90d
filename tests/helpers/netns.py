"""Network namespaces for tests: veth pairs between two namespaces, processes inside them.

Everything a test creates here is removed when its context exits, also on
failure: processes are killed, namespaces (and the links in them) deleted.
Addresses come from 10.213.0.0/16 and fd00:213::/32, only ever inside these
namespaces.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_counter = itertools.count(1)


def _unique() -> int:
    return (os.getpid() * 7 + next(_counter)) % 250 + 1


def sh(cmd: str | Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Namespace:
    name: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec_args(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, cmd: str | Sequence[str], check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(self.exec_args(args), capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"[{self.name}] {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc

    def popen(self, cmd: str | Sequence[str], log: Path | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a background process in the namespace; it is killed when the namespace goes."""
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(self.exec_args(args), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        # Anything else still running in the namespace (daemons that forked away).
        pids = sh(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 20, udp: bool = False) -> None:
        """Wait until something listens on `port` inside the namespace."""
        deadline = time.monotonic() + timeout
        flag = "-uln" if udp else "-tln"
        while time.monotonic() < deadline:
            out = self.run(["ss", flag], check=False).stdout
            if any(line.split()[3].endswith(f":{port}") for line in out.splitlines()[1:] if len(line.split()) > 3):
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on port {port} in {self.name} after {timeout}s")


@dataclass
class VethPair:
    """Two namespaces, `a` and `b`, joined by one veth pair (`a_if` in a, `b_if` in b)."""

    a: Namespace
    b: Namespace
    a_if: str
    b_if: str
    a_ip: str
    b_ip: str
    a_ip6: str
    b_ip6: str


@contextlib.contextmanager
def namespace(prefix: str = "pbt") -> Iterator[Namespace]:
    name = f"{prefix}{os.getpid() % 100000}x{next(_counter)}"
    sh(["ip", "netns", "add", name])
    ns = Namespace(name)
    try:
        ns.run("ip link set lo up")
        yield ns
    finally:
        ns.stop_processes()
        sh(["ip", "netns", "del", name], check=False)


@contextlib.contextmanager
def veth_pair(prefix: str = "pbt", offload: bool = True) -> Iterator[VethPair]:
    """Namespaces a and b with a veth between them: 10.213.N.1 <-> 10.213.N.2 (and IPv6)."""
    n = _unique()
    with namespace(prefix + "a") as a, namespace(prefix + "b") as b:
        a_if, b_if = f"pbva{n}", f"pbvb{n}"
        sh(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if, "netns", b.name])
        a_ip, b_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        a_ip6, b_ip6 = f"fd00:213:{n:x}::1", f"fd00:213:{n:x}::2"
        for ns, ifname, ip4, ip6 in ((a, a_if, a_ip, a_ip6), (b, b_if, b_ip, b_ip6)):
            ns.run(f"ip addr add {ip4}/24 dev {ifname}")
            ns.run(f"ip -6 addr add {ip6}/64 dev {ifname} nodad")
            ns.run(f"ip link set {ifname} up")
            if not offload:
                ns.run(f"ethtool -K {ifname} gro off gso off tso off", check=False)
        yield VethPair(a, b, a_if, b_if, a_ip, b_ip, a_ip6, b_ip6)


def tcpdump(ns: Namespace, interface: str, pcap: Path, bpf: str = "") -> subprocess.Popen[bytes]:
    """Capture on `interface` in `ns` to `pcap` (stop it with stop_tcpdump)."""
    args = ["tcpdump", "--immediate-mode", "-B", "16384", "-i", interface, "-U", "-s", "0", "-w", str(pcap)]
    if bpf:
        args += shlex.split(bpf)
    proc = ns.popen(args)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not pcap.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def stop_tcpdump(proc: subprocess.Popen[bytes]) -> None:
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
