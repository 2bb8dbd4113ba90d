"""SMTP's wire parsers and message reader on literal bytes: whole, byte by byte, and with trailing data."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocols.errors import ParseError
from agent.protocols.smtp.mime import MessageReader
from agent.protocols.smtp.parser import (
    MAX_HELD,
    ClientMode,
    ClientParser,
    Command,
    Content,
    ContentEnd,
    Reply,
    ServerParser,
)
from tests.protocols.smtp import transcripts as t

REPLIES = (b"220 mx ESMTP\r\n" + t.EHLO_REPLY + b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n"
           b"250 Ok\n354 End data with <CR><LF>.<CR><LF>\r\n")
COMMANDS = b"EHLO client\r\nmail from:<a@b.c> SIZE=10\r\nRCPT TO:<d@e.f>\nNOOP\r\n\r\nQUIT\r\n"


def feed_all(parser: ServerParser | ClientParser, data: bytes, step: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i:i + step], i)
    return out


def strip_ts(items: list[object]) -> list[object]:
    """Messages without their times (feeding one byte at a time gives each byte its own)."""
    out: list[object] = []
    for item in items:
        if isinstance(item, Reply):
            out.append((item.code, item.enhanced, item.lines, item.size))
        elif isinstance(item, Command):
            out.append((item.verb, item.args, item.size))
        else:
            out.append(item)
    return out


@pytest.mark.parametrize("step", [len(REPLIES), 1, 7])
def test_replies_whole_bytewise_and_split(step: int) -> None:
    replies = feed_all(ServerParser(), REPLIES, step)
    assert strip_ts(replies) == [
        (220, "", ("mx ESMTP",), 14),
        (250, "", ("mx.example.org", "PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "CHUNKING", "STARTTLS",
                   "AUTH PLAIN LOGIN"), len(t.EHLO_REPLY)),
        (550, "5.1.1", ("first", "second", "third"), 52),
        (250, "", ("Ok",), 7),
        (354, "", ("End data with <CR><LF>.<CR><LF>",), 37),
    ]


def test_replies_with_trailing_data_leave_it_unread() -> None:
    parser = ServerParser()
    replies = parser.feed(REPLIES + b"250-partial\r\n250 par", 1)
    assert len(replies) == 5 and parser.buffer.unread == len(b"250 par")


@pytest.mark.parametrize("line", [b"HTTP/1.1 200 OK\r\n", b"25\r\n", b"2500 x\r\n", b"650 nope\r\n", b"250_x\r\n"])
def test_not_a_reply(line: bytes) -> None:
    with pytest.raises(ParseError):
        ServerParser().feed(line, 1)


@pytest.mark.parametrize("step", [len(COMMANDS), 1, 5])
def test_commands_whole_bytewise_and_split(step: int) -> None:
    commands = feed_all(ClientParser(), COMMANDS, step)
    assert strip_ts(commands) == [("EHLO", "client", 13), ("MAIL", "from:<a@b.c> SIZE=10", 27),
                                  ("RCPT", "TO:<d@e.f>", 16), ("NOOP", "", 6), ("", "", 2), ("QUIT", "", 6)]


def test_commands_with_trailing_data_leave_it_unread() -> None:
    parser = ClientParser()
    assert len(parser.feed(COMMANDS + b"RSE", 1)) == 6 and parser.buffer.unread == 3


@pytest.mark.parametrize("line", [b"GET/ HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01\r\n", b"MAIL_FROM x\r\n"])
def test_not_a_command(line: bytes) -> None:
    with pytest.raises(ParseError):
        ClientParser().feed(line, 1)


def content_of(wire: bytes, step: int) -> tuple[bytes, list[object], bytes]:
    """DATA content of `wire` fed `step` bytes at a time: (unstuffed bytes, end markers, what is left)."""
    parser = ClientParser()
    parser.feed(b"DATA\r\n", 0)
    parser.resume(ClientMode.DATA)
    pieces: list[bytes] = []
    ends: list[object] = []
    rest: list[object] = []
    for i in range(0, len(wire), step):
        for msg in parser.feed(wire[i:i + step], i):
            if isinstance(msg, Content):
                pieces.append(msg.data)
            elif isinstance(msg, ContentEnd):
                ends.append((msg.wire_size, msg.notes))
            else:
                rest.append(msg)
    return b"".join(pieces), ends, b"".join(bytes(r.verb, "ascii") for r in rest if isinstance(r, Command))


@pytest.mark.parametrize("step", [10_000, 1, 2, 3])
def test_dot_stuffing_undone_and_end_of_data_found(step: int) -> None:
    content = b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\tx\r\nend\r\n"
    wire = t.stuffed(content) + b"QUIT\r\n"
    data, ends, rest = content_of(wire, step)
    assert data == content and ends == [(3, ())] and rest == b"QUIT"


def test_content_with_trailing_bytes_leaves_a_possible_end_unread() -> None:
    parser = ClientParser()
    parser.feed(b"DATA\r\n", 0)
    parser.resume(ClientMode.DATA)
    out = parser.feed(b"abc\r\n.", 1)
    assert [m.data for m in out if isinstance(m, Content)] == [b"abc\r\n"] and parser.buffer.unread == 1


def test_held_bytes_are_bounded() -> None:
    parser = ClientParser()
    parser.feed(b"DATA\r\n", 0)
    with pytest.raises(ParseError):
        parser.feed(b"x" * (MAX_HELD + 1), 1)


def test_bdat_chunk_is_read_by_its_size() -> None:
    parser = ClientParser()
    out = parser.feed(b"BDAT 5 LAST\r\nRSET\r\nNOOP\r\n", 1)
    assert [type(m).__name__ for m in out] == ["Command", "Content", "Command", "Command"]
    assert isinstance(out[1], Content) and out[1].data == b"RSET\r"
    assert isinstance(out[2], Command) and out[2].verb == ""  # the LF the chunk left: an empty line
    assert isinstance(out[3], Command) and out[3].verb == "NOOP"


# -- the message reader against the email package's own parse ------------------------------------


def full_parse(raw: bytes) -> list[tuple[str | None, str, int]]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    out = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append((part.get_filename(), part.get_content_type(), len(payload)))
    return out


attachments = st.lists(st.tuples(st.binary(max_size=3000), st.sampled_from(["base64", "quoted-printable", "7bit"]),
                                 st.text("abcxyz.", min_size=1, max_size=12)), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attachments, st.integers(1, 200), st.booleans())
def test_reader_agrees_with_the_email_package(files: list[tuple[bytes, str, str]], step: int, nested: bool) -> None:
    mail = EmailMessage()
    mail["Subject"] = "=?utf-8?b?5rWL6K+V?= test"
    mail.set_content("body text\n-- \nsignature --\n")
    for data, cte, name in files:
        if cte == "7bit":
            data = bytes(b % 0x60 + 0x20 for b in data).replace(b"\r", b" ")  # printable, no bare CR
            mail.add_attachment(data.decode("ascii"), filename=name, cte="7bit")
        else:
            mail.add_attachment(data, maintype="application", subtype="x-test", filename=name, cte=cte)
    if nested:
        outer = EmailMessage()
        outer["Subject"] = "outer"
        outer.set_content("see inner")
        outer.add_attachment(b"x" * 10, maintype="image", subtype="png", filename="pic.png")
        outer.add_attachment(mail)  # a message/rfc822 part
        mail = outer
    raw = mail.as_bytes(policy=policy.SMTP)
    reader = MessageReader(10 << 20)
    for i in range(0, len(raw), step):
        reader.feed(raw[i:i + step])
    summary = reader.finish()
    assert summary.size == len(raw) and not summary.notes
    expected = full_parse(raw)
    if nested:  # a message/rfc822 part is one attachment; the email package walks into it
        inner = [e for e in expected if e[0] != "pic.png"]
        assert [(a.name, a.mime_type) for a in summary.attachments][:1] == [("pic.png", "image/png")]
        assert summary.attachments[1].mime_type == "message/rfc822" and len(summary.attachments) == 2
        assert len(inner) == len(files)
        return
    got = [(a.name, a.mime_type, a.size) for a in summary.attachments]
    # The email package keeps a text part's final line end where the wire had one.
    assert [(n, m) for n, m, _ in got] == [(n, m) for n, m, _ in expected]
    for (_, _, size), (_, _, want), (_, cte, _) in zip(got, expected, files, strict=True):
        assert size == want or (cte != "base64" and abs(size - want) <= 2), (cte, size, want)
