"""Write a large, deterministic HTTP + DNS capture for replay benchmarks.

Real-looking traffic: TCP handshakes, keep-alive connections carrying several
HTTP/1.1 exchanges (GET/POST, Content-Length and chunked bodies, 200/304/404),
segments cut at a 1448-byte MSS, FIN teardown; DNS queries and answers over
UDP (A, AAAA, CNAME, MX, TXT, NXDOMAIN).  Usage:

    .venv/bin/python bench/gen_traffic_pcap.py OUT.pcap [--packets 133000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from pathlib import Path

MSS = 1448
ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Writer:
    def __init__(self, path: Path) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115
        self.handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.count = 0
        self.ts_us = 1_700_000_000_000_000

    def frame(self, src: bytes, dst: bytes, proto: int, l4: bytes, advance_us: int = 50) -> None:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), self.count & 0xFFFF, 0x4000, 64, proto, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        eth = ETH_SRC + ETH_DST if src[3] % 2 else ETH_DST + ETH_SRC
        frame = eth + b"\x08\x00" + ip + l4
        self.ts_us += advance_us
        self.handle.write(struct.pack("<IIII", self.ts_us // 1_000_000, self.ts_us % 1_000_000, len(frame),
                                      len(frame)) + frame)
        self.count += 1

    def close(self) -> None:
        self.handle.close()


class TcpConn:
    def __init__(self, w: Writer, client: bytes, cport: int, server: bytes, sport: int, rng: random.Random) -> None:
        self.w, self.c, self.cp, self.s, self.sp = w, client, cport, server, sport
        self.cseq = rng.randrange(2**32)
        self.sseq = rng.randrange(2**32)

    def _seg(self, from_client: bool, flags: int, payload: bytes = b"", advance: int = 30) -> None:
        if from_client:
            src, dst, sp, dp, seq, ack = self.c, self.s, self.cp, self.sp, self.cseq, self.sseq
        else:
            src, dst, sp, dp, seq, ack = self.s, self.c, self.sp, self.cp, self.sseq, self.cseq
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        self.w.frame(src, dst, 6, tcp + payload, advance)
        step = len(payload) + (1 if flags & 0x03 else 0)
        if from_client:
            self.cseq += step
        else:
            self.sseq += step

    def open(self) -> None:
        self._seg(True, 0x02)
        self._seg(False, 0x12)
        self._seg(True, 0x10)

    def send(self, from_client: bool, data: bytes) -> None:
        for off in range(0, len(data), MSS):
            self._seg(from_client, 0x18, data[off:off + MSS], advance=20)
        self._seg(not from_client, 0x10)  # the peer's ACK

    def close(self) -> None:
        self._seg(True, 0x11)
        self._seg(False, 0x11)
        self._seg(True, 0x10)


PATHS = ["/", "/index.html", "/api/v1/users", "/static/app.js", "/img/logo.png", "/search", "/login",
         "/api/v1/orders/1234", "/health", "/favicon.ico"]
AGENTS = ["curl/7.88.1", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", "python-requests/2.31"]


def http_exchange(rng: random.Random, body_mu: float = 8.0) -> tuple[bytes, bytes]:
    path = rng.choice(PATHS)
    if rng.random() < 0.2:
        body = b"user=alice&password=secret&remember=1"
        request = (f"POST {path} HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: {rng.choice(AGENTS)}\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode() + body
    else:
        query = f"?q={rng.randrange(10000)}&page={rng.randrange(10)}" if rng.random() < 0.3 else ""
        request = (f"GET {path}{query} HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: {rng.choice(AGENTS)}\r\n"
                   f"Accept: */*\r\nCookie: session={rng.randrange(10**9)}\r\n\r\n").encode()
    roll = rng.random()
    if roll < 0.1:
        response = b"HTTP/1.1 304 Not Modified\r\nServer: nginx\r\nETag: \"abc\"\r\n\r\n"
    elif roll < 0.17:
        body = b"<html><body>not found</body></html>"
        response = (f"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    elif roll < 0.35:
        chunks = [bytes(rng.randrange(97, 123) for _ in range(rng.randint(50, 3000))) for _ in range(rng.randint(1, 4))]
        body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
        response = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n" \
                   b"Transfer-Encoding: chunked\r\n\r\n" + body
    else:
        size = int(rng.lognormvariate(body_mu, 1.0)) % 200_000 + 100
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        response = (f"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                    f"Content-Length: {size}\r\n\r\n").encode() + body
    return request, response


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_pair(rng: random.Random, qid: int) -> tuple[bytes, bytes]:
    name = f"host{rng.randrange(500)}.example.test"
    qtype = rng.choice([1, 1, 1, 28, 15, 16, 5])
    question = dns_name(name) + struct.pack("!HH", qtype, 1)
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    if rng.random() < 0.08:
        return query, struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
    answers = b""
    count = rng.randint(1, 3)
    for i in range(count):
        if qtype == 1:
            rdata = bytes([10, 20, rng.randrange(256), i + 1])
        elif qtype == 28:
            rdata = bytes(15) + bytes([i + 1])
        elif qtype == 15:
            rdata = struct.pack("!H", 10) + dns_name("mail.example.test")
        elif qtype == 16:
            text = b"v=spf1 include:example.test ~all"
            rdata = bytes([len(text)]) + text
        else:
            rdata = dns_name("alias.example.test")
        answers += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 300, len(rdata)) + rdata
    response = struct.pack("!HHHHHH", qid, 0x8180, 1, count, 0, 0) + question + answers
    return query, response


def generate(path: Path, packets: int, seed: int, body_mu: float = 8.0) -> int:
    rng = random.Random(seed)
    w = Writer(path)
    server = bytes([10, 1, 0, 80])
    resolver = bytes([10, 1, 0, 53])
    qid = 0
    while w.count < packets:
        client = bytes([10, 2, rng.randrange(256), rng.randrange(1, 255) | 1])
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 4)):
                qid = (qid + 1) & 0xFFFF
                query, response = dns_pair(rng, qid)
                cport = rng.randrange(20000, 60000)
                w.frame(client, resolver, 17, struct.pack("!HHHH", cport, 53, 8 + len(query), 0) + query)
                w.frame(resolver, client, 17, struct.pack("!HHHH", 53, cport, 8 + len(response), 0) + response,
                        advance_us=400)
            continue
        conn = TcpConn(w, client, rng.randrange(20000, 60000), server, 80, rng)
        conn.open()
        for _ in range(rng.randint(1, 8)):
            request, response = http_exchange(rng, body_mu)
            conn.send(True, request)
            conn.send(False, response)
        conn.close()
    w.close()
    return w.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--packets", type=int, default=133_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count = generate(args.out, args.packets, args.seed)
    print(f"{args.out}: {count} packets, {args.out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
