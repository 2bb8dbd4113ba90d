"""Two namespaces joined by tun devices and a user-space forwarder (an L3 link without Ethernet headers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.netns import Namespace, _unique, namespace


@dataclass
class TunPair:
    a: Namespace
    b: Namespace
    a_if: str
    b_if: str
    a_ip: str
    b_ip: str
    a_ip6: str
    b_ip6: str


@contextlib.contextmanager
def tun_pair(prefix: str = "pbu") -> Iterator[TunPair]:
    """Namespaces a and b, tun devices 10.216.N.1 <-> 10.216.N.2 (and fd00:216:N::1/2) joined by a forwarder."""
    n = _unique()
    root = Path(__file__).resolve().parents[2]
    with namespace(prefix + "a") as a, namespace(prefix + "b") as b:
        a_if, b_if = f"pbtuna{n}", f"pbtunb{n}"
        proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.tun_forwarder", a.name, a_if, b.name, b_if],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(root), start_new_session=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == b"READY", f"tun forwarder failed to start: {line!r}"
            a_ip, b_ip = f"10.216.{n}.1", f"10.216.{n}.2"
            a_ip6, b_ip6 = f"fd00:216:{n:x}::1", f"fd00:216:{n:x}::2"
            for ns, ifname, ip4, peer4, ip6 in ((a, a_if, a_ip, b_ip, a_ip6), (b, b_if, b_ip, a_ip, b_ip6)):
                ns.run(f"ip addr add {ip4}/32 peer {peer4}/32 dev {ifname}")
                ns.run(f"ip -6 addr add {ip6}/64 dev {ifname} nodad")
                ns.run(f"ip link set {ifname} up")
            yield TunPair(a, b, a_if, b_if, a_ip, b_ip, a_ip6, b_ip6)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
