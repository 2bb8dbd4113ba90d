"""SMTP message streaming: memory added by one large DATA, and content throughput.

Feeds an SMTP session (in-process, no capture) one message of `--megabytes`
MB of base64 attachment in 64 KiB segments, and reports:

  peak added     tracemalloc's peak over the DATA (the acceptance bound: a 100 MB
                 DATA adds under 4 MiB), past and within `max_message_bytes`
  MB/s           content throughput without tracemalloc (CPU time of this process)

    .venv/bin/python bench/smtp_bench.py [--megabytes 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import metrics
from agent.config.typed import build
from agent.protocols.base import SessionContext
from agent.protocols.smtp.plugin import SmtpConfig, SmtpSession
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes

HEAD = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n")
LINE = base64.b64encode(bytes(range(57))) + b"\r\n"
CHUNK = LINE * (65536 // len(LINE))


def run(total: int, limit: int, trace: bool) -> tuple[float, int]:
    """(CPU seconds, peak bytes added) for one message of `total` bytes."""
    config = build(SmtpConfig, {"max_message_bytes": limit}, "bench")
    conn = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 40000), Endpoint(ip_bytes("10.0.0.2"), 25), 4, "tcp", 1)
    session = SmtpSession(SessionContext("smtp", config, conn, lambda _txn: None, metrics.register("bench.smtp")))
    session.feed(Direction.TO_CLIENT, b"220 hi\r\n", 1)
    session.feed(Direction.TO_SERVER, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n", 2)
    session.feed(Direction.TO_CLIENT, b"250 ok\r\n250 ok\r\n354 go\r\n", 3)
    if trace:
        tracemalloc.start()
    start = time.process_time()
    session.feed(Direction.TO_SERVER, HEAD, 4)
    sent = len(HEAD)
    while sent < total:
        session.feed(Direction.TO_SERVER, CHUNK, 5)
        sent += len(CHUNK)
    session.feed(Direction.TO_SERVER, b"\r\n--b1--\r\n.\r\n", 6)
    session.feed(Direction.TO_CLIENT, b"250 queued as X\r\n", 7)
    elapsed = time.process_time() - start
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = args.megabytes * 1000 * 1000
    for label, limit in (("past max_message_bytes (10 MiB)", 10 * 1024 * 1024), ("within the limit", total * 2)):
        _, peak = run(total, limit, trace=True)
        best = min(run(total, limit, trace=False)[0] for _ in range(args.runs))
        print(f"{args.megabytes} MB DATA {label}: peak added {peak / 2**20:.2f} MiB, "
              f"{total / best / 1e6:.0f} MB/s ({best:.2f} CPU s)")


if __name__ == "__main__":
    main()
