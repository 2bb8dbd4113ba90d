"""A user-space wire between two tun devices in two network namespaces (a point-to-point "VPN").

    python -m tests.helpers.tun_forwarder NS_A TUN_A NS_B TUN_B

Joins NS_A, creates TUN_A there, joins NS_B, creates TUN_B there (a tun
device belongs to the namespace it was created in), prints READY, then
copies every IP packet read from one device to the other until killed or
stdin closes.  Each packet is one read and one write (IFF_NO_PI: raw IP).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import struct
import sys

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKETS = 10_000_000  # bound on the copy loop


def _join(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main(argv: list[str]) -> int:
    ns_a, tun_a, ns_b, tun_b = argv
    _join(ns_a)
    fd_a = _open_tun(tun_a)
    _join(ns_b)
    fd_b = _open_tun(tun_b)
    print("READY", flush=True)
    peer = {fd_a: fd_b, fd_b: fd_a}
    stdin = sys.stdin.fileno()
    for _ in range(MAX_PACKETS):
        readable, _, _ = select.select([fd_a, fd_b, stdin], [], [], 1.0)
        for fd in readable:
            if fd == stdin:
                if not os.read(stdin, 4096):
                    return 0
                continue
            packet = os.read(fd, 65536)
            try:
                os.write(peer[fd], packet)
            except OSError:
                pass  # the other side is down: the packet is lost, as on a wire
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
