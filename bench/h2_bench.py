"""HTTP/2 decoding speed: the http session on HTTP/2 connections written by python-hyper's h2, against HTTP/1.1.

    .venv/bin/python bench/h2_bench.py [--connections 50] [--requests 200] [--body 2000] [--runs 3]

Each connection carries --requests GET requests, answered 200 with a
--body-byte text body; the same requests as HTTP/1.1 (keep-alive) are
decoded for comparison.  Bytes are made once, in memory, then fed to fresh
sessions per run, one segment per h2 `data_to_send` (HTTP/1.1: one per
message); the best run's CPU time gives transactions/s and µs/transaction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import DataReceived  # noqa: E402

from agent import metrics  # noqa: E402
from agent.config.typed import build  # noqa: E402
from agent.protocols.base import SessionContext, Transaction  # noqa: E402
from agent.protocols.http.plugin import HttpConfig, HttpSession  # noqa: E402
from agent.transport.types import ConnectionInfo, Direction, Endpoint  # noqa: E402

C2S, S2C = Direction.TO_SERVER, Direction.TO_CLIENT
Segments = list[tuple[Direction, bytes]]


def h2_connection(requests: int, body: bytes) -> Segments:
    client = H2Connection(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    out: Segments = []

    def move(src: H2Connection, dst: H2Connection, direction: Direction) -> None:
        data = src.data_to_send()
        if data:
            out.append((direction, data))
            for event in dst.receive_data(data):
                if isinstance(event, DataReceived):
                    dst.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    client.initiate_connection()
    move(client, server, C2S)
    server.initiate_connection()
    move(server, client, S2C)
    move(client, server, C2S)
    for i in range(requests):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "bench.example"),
                                  (":path", f"/item/{i}"), ("user-agent", "bench/1.0"), ("accept", "*/*")],
                            end_stream=True)
        move(client, server, C2S)
        server.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"),
                                  ("content-length", str(len(body))), ("server", "bench")])
        server.send_data(sid, body, end_stream=True)
        move(server, client, S2C)
        move(client, server, C2S)  # WINDOW_UPDATEs
    return out


def h1_connection(requests: int, body: bytes) -> Segments:
    out: Segments = []
    for i in range(requests):
        out.append((C2S, b"GET /item/%d HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench/1.0\r\n"
                         b"Accept: */*\r\n\r\n" % i))
        out.append((S2C, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Server: bench\r\n\r\n" % len(body) + body))
    return out


def decode(connections: list[Segments], config: Any) -> tuple[float, int]:
    counters = metrics.register("bench.h2")
    out: list[Transaction] = []
    started = time.process_time()
    for n, segments in enumerate(connections):
        info = ConnectionInfo(Endpoint(b"\x0a\x00\x00\x01", 10000 + n), Endpoint(b"\x0a\x00\x00\x02", 80), 4, "tcp",
                              n + 1)
        session = HttpSession(SessionContext("http", config, info, out.append, counters))
        ts = 0
        for direction, data in segments:
            ts += 1000
            session.feed(direction, data, ts)
        session.expire(ts + 10**12)
    return time.process_time() - started, len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--body", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    body = b"x" * args.body
    config = build(HttpConfig, {"ports": [80]}, "bench")
    for name, make in (("HTTP/2", h2_connection), ("HTTP/1.1", h1_connection)):
        connections = [make(args.requests, body) for _ in range(args.connections)]
        size = sum(len(d) for c in connections for _, d in c)
        best, count = min(decode(connections, config) for _ in range(args.runs))
        print(f"{name:9} {count:7d} transactions  {size / 1e6:6.1f} MB  {best:6.2f} s CPU  "
              f"{count / best:9,.0f} transactions/s  {best / count * 1e6:6.1f} us/transaction")


if __name__ == "__main__":
    main()
