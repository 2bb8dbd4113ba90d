"""Tunnels between two namespaces over one veth underlay: VXLAN built with `ip link`, the rest in user space.

    with veth_pair() as pair, tunnel(pair, "gre-keyseq") as gre, tunnel(pair, "vxlan") as vx:
        pair.a.run(["curl", f"http://{gre.b_ip}/"])   # inner traffic; a capture on pair.a_if sees it encapsulated

Each tunnel has its own inner addresses (10.2XX.N.1/2 and fd00:2XX:N::1/2, XX
by kind), on a tun device per namespace joined by tests/helpers/tunnel_forwarder.py,
or on a VXLAN device (this kernel has no GRE, IP-in-IP, SIT or GENEVE device
types).  Everything goes with the namespaces; the forwarder is killed on exit.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.netns import VethPair, _unique

INNER_MTU = 1400  # room for any outer header on a 1500-byte underlay
VXLAN_VNI = 42
_SUBNET = {"gre": 221, "gre-keyseq": 222, "ipip": 223, "erspan1": 224, "erspan2": 225, "geneve": 226, "pppoe": 227,
           "vxlan": 228}
_counter = itertools.count()


@dataclass
class Tunnel:
    kind: str
    a_if: str
    b_if: str
    a_ip: str
    b_ip: str
    a_ip6: str
    b_ip6: str


def _mac(pair: VethPair, a_side: bool) -> str:
    ns, ifname = (pair.a, pair.a_if) if a_side else (pair.b, pair.b_if)
    return ns.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


@contextlib.contextmanager
def tunnel(pair: VethPair, kind: str, outer6: bool = False) -> Iterator[Tunnel]:
    """A tunnel of `kind` (tunnel_forwarder.MODES, or "vxlan") between pair.a and pair.b, over IPv6 when `outer6`."""
    n = (_unique() + next(_counter)) % 250 + 1
    subnet = _SUBNET[kind]
    a_if, b_if = f"pb{kind[:4]}a{n}", f"pb{kind[:4]}b{n}"
    t = Tunnel(kind, a_if, b_if, f"10.{subnet}.{n}.1", f"10.{subnet}.{n}.2", f"fd00:{subnet}:{n:x}::1",
               f"fd00:{subnet}:{n:x}::2")
    under_a, under_b = (pair.a_ip6, pair.b_ip6) if outer6 else (pair.a_ip, pair.b_ip)
    proc = None
    try:
        if kind == "vxlan":
            for ns, ifname, local, remote in ((pair.a, a_if, under_a, under_b), (pair.b, b_if, under_b, under_a)):
                dev = pair.a_if if ns is pair.a else pair.b_if
                ns.run(f"ip link add {ifname} type vxlan id {VXLAN_VNI} local {local} remote {remote} "
                       f"dstport 4789 dev {dev}")
        else:
            root = Path(__file__).resolve().parents[2]
            args = [sys.executable, "-m", "tests.helpers.tunnel_forwarder", kind, pair.a.name, a_if, under_a,
                    pair.b.name, b_if, under_b]
            if kind == "pppoe":
                args += [pair.a_if, _mac(pair, True), pair.b_if, _mac(pair, False)]
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(root),
                                    start_new_session=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == b"READY", f"tunnel forwarder ({kind}) failed to start: {line!r}"
        for ns, ifname, ip4, peer4, ip6 in ((pair.a, a_if, t.a_ip, t.b_ip, t.a_ip6),
                                            (pair.b, b_if, t.b_ip, t.a_ip, t.b_ip6)):
            ns.run(f"ip link set {ifname} mtu {INNER_MTU}")
            if kind == "vxlan":
                ns.run(f"ip addr add {ip4}/24 dev {ifname}")
            else:
                ns.run(f"ip addr add {ip4}/32 peer {peer4}/32 dev {ifname}")
            ns.run(f"ip -6 addr add {ip6}/64 dev {ifname} nodad")
            ns.run(f"ip link set {ifname} up")
        yield t
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
