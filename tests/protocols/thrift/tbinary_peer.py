"""A tiny Thrift TBinary server and client for the live tests (standalone: no pktbeat imports).

    python tbinary_peer.py server --host ADDR --port 9090 [--framed]
    python tbinary_peer.py client --host ADDR --port 9090 [--framed]

The server implements a few Calculator methods (ping, add, echo_string,
calculate with its InvalidOperation exception, oneway zip); the client calls
each once, then echoes a 100 kB string, then closes.  Messages are delimited
by walking their TBinary structure, independently of pktbeat's parser.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

STOP, BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST = 0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15
FIXED = {BOOL: 1, BYTE: 1, DOUBLE: 8, I16: 2, I32: 4, I64: 8}
BIG = "0123456789" * 10_000


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def i32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def value(self, kind: int) -> object:
        if kind in FIXED:
            raw = self.take(FIXED[kind])
            return {I32: lambda: struct.unpack(">i", raw)[0], I16: lambda: struct.unpack(">h", raw)[0]}.get(
                kind, lambda: raw)()
        if kind == STRING:
            return self.take(self.i32())
        if kind == STRUCT:
            return self.struct()
        if kind == MAP:
            ktype, vtype = self.take(1)[0], self.take(1)[0]
            return [(self.value(ktype), self.value(vtype)) for _ in range(self.i32())]
        etype = self.take(1)[0]
        return [self.value(etype) for _ in range(self.i32())]

    def struct(self) -> dict[int, object]:
        out: dict[int, object] = {}
        while True:
            kind = self.take(1)[0]
            if kind == STOP:
                return out
            fid = struct.unpack(">h", self.take(2))[0]
            out[fid] = self.value(kind)

    def message(self, framed: bool) -> tuple[str, int, int, dict[int, object]]:
        if framed:
            self.take(4)
        head = self.i32() & 0xFFFFFFFF
        name = self.take(self.i32()).decode()
        seqid = self.i32()
        return name, head & 0xFF, seqid, self.struct()


def encode(name: str, mtype: int, seqid: int, body: bytes, framed: bool) -> bytes:
    raw = name.encode()
    msg = struct.pack(">Ii", 0x80010000 | mtype, len(raw)) + raw + struct.pack(">i", seqid) + body + b"\x00"
    return struct.pack(">i", len(msg)) + msg if framed else msg


def i32_field(fid: int, value: int) -> bytes:
    return struct.pack(">bhi", I32, fid, value)


def string_field(fid: int, value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">bhi", STRING, fid, len(raw)) + raw


def serve(host: str, port: int, framed: bool) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4)
        while True:
            conn, _ = listener.accept()
            with conn:
                reader = Reader(conn)
                try:
                    while True:
                        name, _, seqid, args = reader.message(framed)
                        reply = answer(name, args)
                        if reply is not None:
                            conn.sendall(encode(name, 2, seqid, reply, framed))
                except EOFError:
                    continue


def answer(name: str, args: dict[int, object]) -> bytes | None:
    if name == "ping":
        return b""
    if name == "add":
        return i32_field(0, int(args[1]) + int(args[2]))  # type: ignore[call-overload]
    if name == "echo_string":
        text = args[1]
        assert isinstance(text, bytes)
        return string_field(0, text.decode())
    if name == "calculate":
        work = args[2]
        assert isinstance(work, dict)
        if work[3] == 4 and work[2] == 0:
            problem = i32_field(1, 4) + string_field(2, "Cannot divide by 0") + b"\x00"
            return struct.pack(">bh", STRUCT, 1) + problem
        return i32_field(0, int(work[1]) // max(int(work[2]), 1))
    return None  # zip is oneway


def call(host: str, port: int, framed: bool) -> None:
    work = i32_field(1, 1) + i32_field(2, 0) + i32_field(3, 4) + b"\x00"
    calls = [("ping", 1, b""), ("add", 1, i32_field(1, 2) + i32_field(2, 3)),
             ("echo_string", 1, string_field(1, "hello")),
             ("calculate", 1, i32_field(1, 1) + struct.pack(">bh", STRUCT, 2) + work),
             ("zip", 4, b""), ("echo_string", 1, string_field(1, BIG))]
    with socket.create_connection((host, port), timeout=10) as sock:
        reader = Reader(sock)
        for seqid, (name, mtype, body) in enumerate(calls):
            sock.sendall(encode(name, mtype, seqid, body, framed))
            if mtype != 4:
                got = reader.message(framed)
                assert got[0] == name and got[2] == seqid, got


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--framed", action="store_true")
    args = parser.parse_args()
    if args.role == "server":
        serve(args.host, args.port, args.framed)
    else:
        call(args.host, args.port, args.framed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
