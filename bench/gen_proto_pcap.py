"""Deterministic single-protocol captures for per-transaction cost measurements.

    .venv/bin/python bench/gen_proto_pcap.py PROTOCOL OUT.pcap [--transactions 1000]

PROTOCOL is one of http, dns, redis, pgsql, mysql.  Each capture holds
`transactions` request/response pairs of the shape a busy server sees, with
TCP handshakes and teardowns, `PER_CONNECTION` exchanges per connection:

  http   keep-alive GET/POST, small responses (the shape of an API or a page's assets)
  dns    UDP A/AAAA/MX/TXT/CNAME queries and answers, some NXDOMAIN
  redis  what redis-benchmark sends: GET and SET of short keys
  pgsql  pgbench -S: a startup, then `SELECT abalance ...` in the simple query protocol
  mysql  a v10 handshake and login, then point SELECTs returning one row, and UPDATEs

The bytes are what the real servers send (the message layouts of their
protocol documentation); only the values are made up.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_traffic_pcap import TcpConn, Writer, dns_pair, http_exchange  # noqa: E402

PER_CONNECTION = 10
PORTS = {"http": 80, "dns": 53, "redis": 6379, "pgsql": 5432, "mysql": 3306}
SERVER = bytes([10, 1, 0, 9])

Exchange = tuple[bytes, bytes]


# -- redis -------------------------------------------------------------------------------------------

def resp_command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def redis_exchange(rng: random.Random) -> Exchange:
    key = b"key:%012d" % rng.randrange(100_000)
    if rng.random() < 0.5:
        return resp_command(b"SET", key, b"xxx"), b"+OK\r\n"
    return resp_command(b"GET", key), b"$3\r\nxxx\r\n"


# -- pgsql -------------------------------------------------------------------------------------------

def pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def pg_startup() -> Exchange:
    params = b"user\0postgres\0database\0pgbench\0application_name\0pgbench\0\0"
    startup = struct.pack("!II", len(params) + 8, 196608) + params
    reply = pg_message(b"R", struct.pack("!I", 0))
    for name, value in ((b"server_version", b"15.6"), (b"client_encoding", b"UTF8"), (b"DateStyle", b"ISO, MDY")):
        reply += pg_message(b"S", name + b"\0" + value + b"\0")
    reply += pg_message(b"K", struct.pack("!II", 4242, 123456789)) + pg_message(b"Z", b"I")
    return startup, reply


def pg_exchange(rng: random.Random) -> Exchange:
    aid = rng.randrange(1, 100_001)
    query = pg_message(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = %d;\0" % aid)
    field = b"abalance\0" + struct.pack("!IhIhih", 16398, 3, 23, 4, -1, 0)
    value = b"%d" % rng.randrange(-5000, 5000)
    reply = (pg_message(b"T", struct.pack("!h", 1) + field)
             + pg_message(b"D", struct.pack("!hI", 1, len(value)) + value)
             + pg_message(b"C", b"SELECT 1\0") + pg_message(b"Z", b"I"))
    return query, reply


# -- mysql -------------------------------------------------------------------------------------------

CLIENT_CAPS = 0x000FA68D  # protocol 41, secure connection, plugin auth, connect with db; no DEPRECATE_EOF


def my_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def lenenc(data: bytes) -> bytes:
    return bytes([len(data)]) + data  # short strings only


def my_login() -> tuple[bytes, bytes, bytes]:
    greeting = (b"\x0a" + b"10.11.6-MariaDB\0" + struct.pack("<I", 42) + b"abcdefgh\0"
                + struct.pack("<HBHHB", 0xF7FF, 0x21, 0x0002, 0x81BF, 21) + bytes(10) + b"ijklmnopqrst\0"
                + b"mysql_native_password\0")
    login = (struct.pack("<IIB", CLIENT_CAPS, 1 << 24, 0x21) + bytes(23) + b"bench\0" + lenenc(bytes(range(20)))
             + b"bench\0" + b"mysql_native_password\0")
    ok = b"\x00\x00\x00\x02\x00\x00\x00"
    return greeting, my_packet(1, login), my_packet(2, ok)


def my_column(name: bytes, col_type: int) -> bytes:
    return (lenenc(b"def") + lenenc(b"bench") + lenenc(b"accounts") + lenenc(b"accounts") + lenenc(name)
            + lenenc(name) + b"\x0c" + struct.pack("<HIBHB", 0x21, 11, col_type, 0x1001, 0) + b"\0\0")


def my_exchange(rng: random.Random) -> Exchange:
    aid = rng.randrange(1, 100_001)
    if rng.random() < 0.2:
        query = my_packet(0, b"\x03UPDATE accounts SET abalance = abalance + %d WHERE aid = %d"
                          % (rng.randrange(-5000, 5000), aid))
        return query, my_packet(1, b"\x00\x01\x00\x22\x00\x00\x00")
    query = my_packet(0, b"\x03SELECT aid, abalance FROM accounts WHERE aid = %d" % aid)
    eof = b"\xfe\x00\x00\x22\x00"
    row = lenenc(b"%d" % aid) + lenenc(b"%d" % rng.randrange(-5000, 5000))
    reply = (my_packet(1, b"\x02") + my_packet(2, my_column(b"aid", 3)) + my_packet(3, my_column(b"abalance", 3))
             + my_packet(4, eof) + my_packet(5, row) + my_packet(6, eof))
    return query, reply


# -- the capture -------------------------------------------------------------------------------------

def _tcp_conversations(w: Writer, rng: random.Random, port: int, transactions: int,
                       exchange: Callable[[random.Random], Exchange],
                       opening: Callable[[TcpConn], None] | None = None) -> None:
    done = 0
    while done < transactions:
        client = bytes([10, 2, rng.randrange(256), rng.randrange(1, 255)])
        conn = TcpConn(w, client, rng.randrange(20000, 60000), SERVER, port, rng)
        conn.open()
        if opening is not None:
            opening(conn)
        for _ in range(min(PER_CONNECTION, transactions - done)):
            request, response = exchange(rng)
            conn.send(True, request)
            conn.send(False, response)
            done += 1
        conn.close()


def _pg_opening(conn: TcpConn) -> None:
    startup, reply = pg_startup()
    conn.send(True, startup)
    conn.send(False, reply)


def _my_opening(conn: TcpConn) -> None:
    greeting, login, ok = my_login()
    conn.send(False, my_packet(0, greeting))
    conn.send(True, login)
    conn.send(False, ok)


def _dns(w: Writer, rng: random.Random, transactions: int) -> None:
    for qid in range(1, transactions + 1):
        client = bytes([10, 2, rng.randrange(256), rng.randrange(1, 255)])
        query, response = dns_pair(rng, qid & 0xFFFF)
        cport = rng.randrange(20000, 60000)
        w.frame(client, SERVER, 17, struct.pack("!HHHH", cport, 53, 8 + len(query), 0) + query)
        w.frame(SERVER, client, 17, struct.pack("!HHHH", 53, cport, 8 + len(response), 0) + response, advance_us=400)


def generate(protocol: str, path: Path, transactions: int, seed: int = 1) -> int:
    """Write the capture; returns its packet count."""
    rng = random.Random(seed)
    w = Writer(path)
    if protocol == "dns":
        _dns(w, rng, transactions)
    elif protocol == "http":
        _tcp_conversations(w, rng, 80, transactions, lambda r: http_exchange(r, body_mu=6.0))
    elif protocol == "redis":
        _tcp_conversations(w, rng, 6379, transactions, redis_exchange)
    elif protocol == "pgsql":
        _tcp_conversations(w, rng, 5432, transactions, pg_exchange, _pg_opening)
    elif protocol == "mysql":
        _tcp_conversations(w, rng, 3306, transactions, my_exchange, _my_opening)
    else:
        raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PORTS)})")
    w.close()
    return w.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=sorted(PORTS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count = generate(args.protocol, args.out, args.transactions, args.seed)
    print(f"{args.out}: {count} packets, {args.out.stat().st_size / 1e3:.0f} kB", file=sys.stderr)


if __name__ == "__main__":
    main()
