"""SMTP exchanges as literal bytes, for the session and parser tests."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from email.policy import SMTP

from tests.helpers.sessions import C2S, S2C, Step

GREETING = b"220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n"
EHLO = b"EHLO client.example.com\r\n"
EHLO_REPLY = (b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
              b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
PLAIN = base64.b64encode(b"\0alice\0s3cret").decode()


def message(subject: str = "=?GB2312?B?xOO6w8rAvec=?=", body: str = "hello\r\n.dot line\r\n") -> bytes:
    """A message as the client sends it after DATA, before dot-stuffing."""
    return (b"From: =?GB2312?B?1cXI/Q==?= <zhang@example.cn>\r\nTo: bob@example.org\r\n"
            b"Cc: Carol <carol@example.org>\r\nSubject: " + subject.encode() + b"\r\n"
            b"Message-ID: <m1@example.cn>\r\nDate: Tue, 02 Jan 2024 03:04:05 +0800\r\nX-Mailer: test 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode())


def stuffed(content: bytes) -> bytes:
    """DATA content on the wire: leading dots doubled, then the end-of-data line."""
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines) + b".\r\n"


def with_attachment() -> bytes:
    mail = EmailMessage()
    mail["From"] = "alice@example.com"
    mail["To"] = "bob@example.org"
    mail["Subject"] = "report"
    mail.set_content("see attached\n")
    mail.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="pdf", filename="report.pdf")
    return mail.as_bytes(policy=SMTP)


def pipelined_session(content: bytes | None = None) -> list[Step]:
    """Greeting, EHLO, AUTH PLAIN, a pipelined MAIL/RCPT/RCPT(refused)/DATA group, the message, QUIT."""
    content = content if content is not None else message()
    return [
        Step(S2C, GREETING, 1_000),
        Step(C2S, EHLO, 2_000),
        Step(S2C, EHLO_REPLY, 3_000),
        Step(C2S, f"AUTH PLAIN {PLAIN}\r\n".encode(), 4_000),
        Step(S2C, b"235 2.7.0 Authentication successful\r\n", 5_000),
        Step(C2S, b"MAIL FROM:<zhang@example.cn> BODY=8BITMIME SIZE=400\r\nRCPT TO:<bob@example.org>\r\n"
                  b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<dave@example.org>\r\nDATA\r\n", 6_000),
        Step(S2C, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@example.org>: Recipient address rejected\r\n"
                  b"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n", 7_000),
        Step(C2S, stuffed(content), 8_000),
        Step(S2C, b"250 2.0.0 Ok: queued as 4F3A2B1C9D\r\n", 9_000),
        Step(C2S, b"QUIT\r\n", 10_000),
        Step(S2C, b"221 2.0.0 Bye\r\n", 11_000, fin=True),
    ]
