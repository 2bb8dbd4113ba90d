"""A 100 MB DATA streams through: it adds under 4 MiB of memory (tracemalloc's peak, not a timing)."""

from __future__ import annotations

import base64
import tracemalloc

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.smtp.plugin import SmtpSession
from tests.helpers.sessions import C2S, S2C, conn_info, protocol_config

TOTAL = 100 * 1000 * 1000
HEAD = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n")
LINE = base64.b64encode(bytes(range(57))) + b"\r\n"  # 76 characters, as MIME writes them
CHUNK = LINE * (65536 // len(LINE))


def run(max_message_bytes: int) -> tuple[Transaction, int]:
    out: list[Transaction] = []
    config = protocol_config("smtp", max_message_bytes=max_message_bytes)
    session = SmtpSession(SessionContext("smtp", config, conn_info(25), out.append, metrics.register("test.smtp")))
    for direction, data in ((S2C, b"220 hi\r\n"), (C2S, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                                                        b"DATA\r\n"), (S2C, b"250 ok\r\n250 ok\r\n354 go\r\n")):
        session.feed(direction, data, 1)
    tracemalloc.start()
    try:
        session.feed(C2S, HEAD, 2)
        sent = len(HEAD)
        while sent < TOTAL:
            session.feed(C2S, CHUNK, 3)
            sent += len(CHUNK)
        session.feed(C2S, b"\r\n--b1--\r\n.\r\n", 4)
        session.feed(S2C, b"250 2.0.0 Ok: queued as BIG1\r\n", 5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out[-1], peak


def test_100_mb_data_over_the_limit_adds_under_4_mib() -> None:
    message, peak = run(10 * 1024 * 1024)
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert message.fields["smtp"]["message"]["headers_only"] is True
    assert message.fields["email"]["subject"] == "big" and message.fields["email"]["local_id"] == "BIG1"
    assert message.client_bytes > TOTAL


def test_100_mb_data_within_the_limit_is_counted_not_kept() -> None:
    message, peak = run(200 * 1000 * 1000)
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    [attachment] = message.fields["email"]["attachments"]
    lines = (message.fields["smtp"]["message"]["bytes"] - len(HEAD) - len(b"\r\n--b1--\r\n")) // len(LINE)
    assert attachment["file"] == {"name": "big.bin", "mime_type": "application/octet-stream", "size": lines * 57,
                                  "extension": "bin"}
