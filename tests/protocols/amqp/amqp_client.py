"""A small AMQP 0-9-1 client for the live RabbitMQ test (run as a script inside a namespace).

    python amqp_client.py HOST PORT

It logs in as guest, declares an exchange and a queue, publishes a small and
a large message (the large one spans several body frames), gets one, consumes
and acks the other, provokes a 404 channel error, deletes the queue and
closes the connection cleanly.
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.protocols.amqp import frames as f

LARGE = b"0123456789abcdef" * 20_000  # 320 kB: three body frames of at most 128 kB
FRAME_MAX = 131072


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> tuple[int, int, bytes]:
        while True:
            if len(self.buf) >= 7:
                size = int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= 8 + size:
                    ftype, channel = self.buf[0], int.from_bytes(self.buf[1:3], "big")
                    payload = self.buf[7:7 + size]
                    assert self.buf[7 + size] == 0xCE
                    self.buf = self.buf[8 + size:]
                    return ftype, channel, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk

    def expect(self, class_id: int, method_id: int) -> bytes:
        """Read until the given method arrives (heartbeats aside); its arguments."""
        while True:
            ftype, _, payload = self.frame()
            if ftype == 1:
                got = struct.unpack(">HH", payload[:4])
                assert got == (class_id, method_id), f"expected {class_id}.{method_id}, got {got}"
                return payload[4:]

    def content(self) -> bytes:
        """The header and body frames after a content method: the body."""
        ftype, _, payload = self.frame()
        assert ftype == 2
        size = int.from_bytes(payload[4:12], "big")
        body = b""
        while len(body) < size:
            ftype, _, payload = self.frame()
            assert ftype == 3
            body += payload
        return body


def publish(conn: Connection, exchange: str, data: bytes) -> None:
    props = (f.shortstr("text/plain") + f.table(f.shortstr("origin") + b"S" + f.longstr("live-test"))
             + b"\x02" + f.shortstr("msg-1"))
    conn.send(f.method(1, 60, 40, b"\x00\x00" + f.shortstr(exchange) + f.shortstr("") + b"\x00")
              + f.header(1, len(data), 0x8000 | 0x2000 | 0x1000 | 0x0080, props))
    for at in range(0, len(data), FRAME_MAX - 8):
        conn.send(f.body(1, data[at:at + FRAME_MAX - 8]))


def main(host: str, port: int) -> None:
    conn = Connection(host, port)
    conn.send(f.PROTOCOL_HEADER)
    conn.expect(10, 10)
    conn.send(f.method(0, 10, 11, f.table(f.shortstr("product") + b"S" + f.longstr("pktbeat-test"))
                       + f.shortstr("PLAIN") + f.longstr(b"\x00guest\x00guest") + f.shortstr("en_US")))
    conn.expect(10, 30)
    conn.send(f.method(0, 10, 31, struct.pack(">HIH", 2047, FRAME_MAX, 0)))
    conn.send(f.method(0, 10, 40, f.shortstr("/") + b"\x00\x00"))
    conn.expect(10, 41)
    conn.send(f.method(1, 20, 10, b"\x00"))
    conn.expect(20, 11)
    conn.send(f.method(1, 40, 10, b"\x00\x00" + f.shortstr("logs") + f.shortstr("fanout") + b"\x02"
                       + f.table(b"")))
    conn.expect(40, 11)
    conn.send(f.queue_declare(1, "jobs", 0, f.table(f.shortstr("x-max-length") + b"I" + struct.pack(">I", 100))))
    conn.expect(50, 11)
    conn.send(f.method(1, 50, 20, b"\x00\x00" + f.shortstr("jobs") + f.shortstr("logs") + f.shortstr("")
                       + b"\x00" + f.table(b"")))
    conn.expect(50, 21)
    publish(conn, "logs", b"hello")
    conn.send(f.method(1, 60, 70, b"\x00\x00" + f.shortstr("jobs") + b"\x01"))
    conn.expect(60, 71)
    assert conn.content() == b"hello"
    publish(conn, "logs", LARGE)
    conn.send(f.method(1, 60, 20, b"\x00\x00" + f.shortstr("jobs") + f.shortstr("reader") + b"\x00"
                       + f.table(b"")))
    conn.expect(60, 21)
    deliver = conn.expect(60, 60)
    assert conn.content() == LARGE
    tag_at = 1 + deliver[0]
    conn.send(f.method(1, 60, 80, deliver[tag_at:tag_at + 8] + b"\x00"))
    conn.send(f.queue_declare(1, "missing", 0x01))  # passive: RabbitMQ closes the channel with 404
    conn.expect(20, 40)
    conn.send(f.close_ok(1))
    conn.send(f.method(2, 20, 10, b"\x00"))
    conn.expect(20, 11)
    conn.send(f.method(2, 50, 40, b"\x00\x00" + f.shortstr("jobs") + b"\x00"))
    conn.expect(50, 41)
    conn.send(f.close(0, 200, "Goodbye"))
    conn.expect(10, 51)
    conn.sock.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
