"""ONC-RPC records built field by field (XDR), and TCP payloads read back from the corpus captures."""

from __future__ import annotations

import struct
from pathlib import Path

from agent.capture.decode import FrameDecoder
from agent.capture.pcapfile import CaptureReader

NFS = 100003
MOUNT = 100005


def u32(*values: int) -> bytes:
    return struct.pack(f"!{len(values)}I", *values)


def opaque(data: bytes) -> bytes:
    return u32(len(data)) + data + bytes(-len(data) % 4)


def string(text: str) -> bytes:
    return opaque(text.encode())


def auth_unix(stamp: int = 7, machine: str = "client.example", uid: int = 1000, gid: int = 100,
              gids: tuple[int, ...] = (100, 27)) -> bytes:
    return u32(stamp) + string(machine) + u32(uid, gid, len(gids), *gids)


def call(xid: int, version: int, procedure: int, args: bytes = b"", *, program: int = NFS, flavor: int = 1,
         cred: bytes | None = None) -> bytes:
    body = auth_unix() if cred is None else cred
    return u32(xid, 0, 2, program, version, procedure, flavor) + opaque(body) + u32(0, 0) + args


def reply(xid: int, results: bytes = b"", accept_stat: int = 0) -> bytes:
    return u32(xid, 1, 0, 0, 0, accept_stat) + results


def denied(xid: int, reject_stat: int, detail: bytes) -> bytes:
    return u32(xid, 1, 1, reject_stat) + detail


def record(message: bytes, fragments: int = 1) -> bytes:
    """Record marking: `message` cut into `fragments` pieces, each behind its marker."""
    size = -(-len(message) // fragments) if message else 0
    pieces = [message[i:i + size] for i in range(0, len(message), size)] if message else [b""]
    out = b""
    for index, piece in enumerate(pieces):
        last = 0x80000000 if index == len(pieces) - 1 else 0
        out += u32(last | len(piece)) + piece
    return out


def compound(tag: str, minor: int, *ops: tuple[int, bytes]) -> bytes:
    return string(tag) + u32(minor, len(ops)) + b"".join(u32(op) + args for op, args in ops)


# Arguments of the NFSv4 operations used in the tests.
SEQUENCE = (53, bytes(range(16)) + u32(1, 0, 0, 0))
PUTFH = (22, opaque(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
PUTROOTFH = (24, b"")
GETATTR = (9, u32(2, 0x0010011A, 0x00B0A23A))
GETFH = (10, b"")
LOOKUP = (15, string("export"))
SAVEFH = (32, b"")
RENEW = (30, struct.pack("!Q", 0x1122334455667788))
OPEN = (18, u32(0, 2, 0) + bytes(64))
CLOSE = (4, u32(0) + bytes(16))
READDIR = (26, bytes(8) + bytes(8) + u32(4096, 8192, 2, 0x18091A, 0))


def tcp_payloads(pcap: Path, server_port: int = 2049) -> list[tuple[bool, bytes]]:
    """(towards the server?, payload) of every TCP segment that carries data."""
    out = []
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts_ns, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts_ns, wire_len)
            if pkt is not None and pkt.l4proto == 6 and pkt.payload:
                out.append((pkt.dport == server_port, bytes(pkt.payload)))
    return out
