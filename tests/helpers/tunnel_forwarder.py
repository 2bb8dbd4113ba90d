"""A user-space tunnel between two namespaces: tun devices inside, an encapsulation on the underlay between them.

    python -m tests.helpers.tunnel_forwarder MODE NS_A TUN_A ADDR_A NS_B TUN_B ADDR_B [IF_A MAC_A IF_B MAC_B]

This kernel has no GRE, IP-in-IP, SIT or GENEVE devices, so the tunnel's two
ends live here: joins NS_A, creates TUN_A and the sockets that carry the
encapsulated packets over the underlay (ADDR_A is this end's underlay
address), does the same in NS_B, prints READY, then for every IP packet the
stack writes to one tun device wraps it (MODE: gre, gre-keyseq, ipip,
erspan1, erspan2, geneve, pppoe; tests/helpers/encap.py) and sends it to the
other end's underlay address, where it is unwrapped and written to that
end's tun device.  Raw IP sockets carry GRE, ERSPAN and IP-in-IP (the kernel
adds the outer IPv4 or IPv6 header), a UDP socket GENEVE, and a packet
socket on the underlay device (IF, with the MACs) PPPoE.  Runs until killed
or stdin closes, at most MAX_PACKETS packets.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import sys
from dataclasses import dataclass, field

from tests.helpers import encap

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKETS = 10_000_000
GRE_KEY = 0x1234
SESSION = 0x2A  # ERSPAN and PPPoE session id
VNI = 0x5A5A
MODES = ("gre", "gre-keyseq", "ipip", "erspan1", "erspan2", "geneve", "pppoe")


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


@dataclass
class End:
    """One end of the tunnel: its tun device and the sockets of its underlay."""

    mode: str
    a_side: bool
    tun: int
    addr: str  # this end's underlay address
    peer: str  # the other end's
    sockets: list[socket.socket] = field(default_factory=list)
    iface: str = ""
    mac: bytes = b""
    peer_mac: bytes = b""
    seq: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.addr else socket.AF_INET

    def open(self) -> None:
        mode = self.mode
        if mode == "pppoe":
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(encap.ETH_P_PPP_SES))
            sock.bind((self.iface, encap.ETH_P_PPP_SES))
            self.sockets.append(sock)
        elif mode == "geneve":
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            sock.bind((self.addr, encap.GENEVE_PORT))
            self.sockets.append(sock)
        elif mode == "ipip":
            for proto in (encap.IPPROTO_IPIP, encap.IPPROTO_IPV6):
                self.sockets.append(socket.socket(self.family, socket.SOCK_RAW, proto))
        else:
            self.sockets.append(socket.socket(self.family, socket.SOCK_RAW, encap.IPPROTO_GRE))

    def send(self, packet: bytes) -> None:
        """A packet the stack wrote to this end's tun device, wrapped and sent to the other end."""
        self.seq += 1
        mode, version_socket = self.mode, 0
        if mode == "gre":
            payload = encap.gre(encap.ethertype_of(packet), packet)
        elif mode == "gre-keyseq":
            payload = encap.gre(encap.ethertype_of(packet), packet, key=GRE_KEY, seq=self.seq)
        elif mode == "ipip":
            payload, version_socket = packet, 0 if encap.ip_version(packet) == 4 else 1
        elif mode == "erspan1":
            payload = encap.erspan1(encap.in_ethernet(packet, self.a_side))
        elif mode == "erspan2":
            payload = encap.erspan2(encap.in_ethernet(packet, self.a_side), SESSION, self.seq)
        elif mode == "geneve":
            payload = encap.geneve(encap.in_ethernet(packet, self.a_side), VNI, options=encap.GENEVE_OPTION)
            self.sockets[0].sendto(payload, (self.peer, encap.GENEVE_PORT))
            return
        else:  # pppoe
            frame = encap.ethernet(self.peer_mac, self.mac, encap.ETH_P_PPP_SES, encap.pppoe_session(packet, SESSION))
            self.sockets[0].send(frame)
            return
        self.sockets[version_socket].sendto(payload, (self.peer, 0))

    def receive(self, sock: socket.socket) -> bytes | None:
        """The inner IP packet of what arrived on one of this end's sockets."""
        data = sock.recv(65535)
        if self.mode == "pppoe":
            return data[14 + 8:]
        if self.mode == "geneve":
            return data[8 + len(encap.GENEVE_OPTION) + 14:]
        if self.family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]  # IPv4 raw sockets deliver the IP header too
        if self.mode == "ipip":
            return data
        flags = struct.unpack_from("!H", data)[0]
        gre = encap.gre_header_bytes(bool(flags & 0x2000), bool(flags & 0x1000), bool(flags & 0x8000))
        if self.mode == "erspan1":
            return data[gre + 14:]
        if self.mode == "erspan2":
            return data[gre + 8 + 14:]
        return data[gre:]


def main(argv: list[str]) -> int:
    mode, ns_a, tun_a, addr_a, ns_b, tun_b, addr_b = argv[:7]
    extra = argv[7:]
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    ends = []
    for ns, tun, addr, peer, a_side in ((ns_a, tun_a, addr_a, addr_b, True), (ns_b, tun_b, addr_b, addr_a, False)):
        _join(ns)
        end = End(mode, a_side, _open_tun(tun), addr, peer)
        if mode == "pppoe":
            if_a, mac_a, if_b, mac_b = extra
            end.iface, end.mac, end.peer_mac = ((if_a, bytes.fromhex(mac_a.replace(":", "")),
                                                 bytes.fromhex(mac_b.replace(":", ""))) if a_side else
                                                (if_b, bytes.fromhex(mac_b.replace(":", "")),
                                                 bytes.fromhex(mac_a.replace(":", ""))))
        end.open()
        ends.append(end)
    print("READY", flush=True)
    by_tun = {end.tun: end for end in ends}
    by_socket = {sock.fileno(): (end, sock) for end in ends for sock in end.sockets}
    stdin = sys.stdin.fileno()
    for _ in range(MAX_PACKETS):
        readable, _, _ = select.select([*by_tun, *by_socket, stdin], [], [], 1.0)
        for fd in readable:
            if fd == stdin:
                if not os.read(stdin, 4096):
                    return 0
                continue
            try:
                if fd in by_tun:
                    by_tun[fd].send(os.read(fd, 65536))
                else:
                    end, sock = by_socket[fd]
                    inner = end.receive(sock)
                    if inner:
                        os.write(end.tun, inner)
            except OSError:
                pass  # the other side is not ready, or the packet is not IP: lost, as on a wire
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
