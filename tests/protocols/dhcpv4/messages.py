"""DHCPv4 messages built field by field, and payloads read back from a capture."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from agent.capture.decode import FrameDecoder
from agent.capture.pcapfile import CaptureReader

COOKIE = b"\x63\x82\x53\x63"
MAC = bytes.fromhex("000b8201fc42")


def opt(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def bootp(op: int, xid: int, *, options: bytes = b"", htype: int = 1, hlen: int = 6, hops: int = 0,
          secs: int = 0, flags: int = 0, ciaddr: str = "0.0.0.0", yiaddr: str = "0.0.0.0",
          siaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", chaddr: bytes = MAC, sname: bytes = b"",
          file: bytes = b"", cookie: bytes = COOKIE, end: bool = True) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, htype, hlen, hops, xid, secs, flags, ip(ciaddr),
                       ip(yiaddr), ip(siaddr), ip(giaddr), chaddr, sname, file)
    return head + cookie + options + (b"\xff" if end else b"")


# The REQUEST and ACK of Packetbeat's TestParseDHCPRequest / TestParseDHCPACK (from dhcp.pcap).
REQUEST = bootp(1, 0x3D1E, options=opt(53, b"\x03") + opt(61, b"\x01" + MAC) + opt(50, ip("192.168.0.10"))
                + opt(54, ip("192.168.0.1")) + opt(55, bytes([1, 3, 6, 42]))) + b"\x00"
ACK = bootp(2, 0x3D1E, yiaddr="192.168.0.10",
            options=opt(53, b"\x05") + opt(58, struct.pack("!I", 1800)) + opt(59, struct.pack("!I", 3150))
            + opt(51, struct.pack("!I", 3600)) + opt(54, ip("192.168.0.1")) + opt(1, ip("255.255.255.0"))
            ) + bytes(26)


def udp_payloads(pcap: Path) -> list[bytes]:
    """The UDP payloads of a capture, in order."""
    out = []
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts_ns, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts_ns, wire_len)
            if pkt is not None and pkt.l4proto == 17:
                out.append(bytes(pkt.payload))
    return out
