"""Bounded fuzzing: only ParseError leaves SMTP's parsers; sessions and the message reader survive anything."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.metrics import Counters
from agent.protocols.base import SessionContext
from agent.protocols.smtp.mime import MessageReader
from agent.protocols.smtp.parser import ClientMode, ClientParser, ServerParser
from agent.protocols.smtp.plugin import SPEC
from agent.transport.session import ParseError
from tests.helpers.sessions import conn_info, play_script, protocol_config, session_script
from tests.protocols.smtp import transcripts as t

FAST = settings(max_examples=int(os.environ.get("SMTP_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

verbs = st.sampled_from(["EHLO x", "HELO x", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA", "BDAT 5", "BDAT 3 LAST",
                         "RSET", "NOOP", "VRFY a", "EXPN b", "HELP", "QUIT", "AUTH PLAIN AGEAYg==", "AUTH LOGIN",
                         "STARTTLS", "XCLIENT ADDR=1.2.3.4"])
commands = st.builds(lambda verb, end: (verb + end).encode(), verbs, st.sampled_from(["\r\n", "\n"]))
replies = st.builds(lambda code, more, enhanced, text: (
    "".join(f"{code}-{enhanced}{text}\r\n" for _ in range(more)) + f"{code} {enhanced}{text}\r\n").encode(),
    st.sampled_from([220, 221, 235, 250, 334, 354, 421, 450, 500, 535, 550, 554]), st.integers(0, 3),
    st.sampled_from(["", "2.1.0 ", "5.7.1 "]), st.text(max_size=20).filter(lambda s: "\n" not in s))
contents = st.one_of(st.binary(max_size=200).map(t.stuffed), st.just(t.stuffed(t.with_attachment())),
                     st.builds(lambda s: t.stuffed(t.message(subject=s)), st.text(max_size=40).filter(
                         lambda s: "\r" not in s and "\n" not in s)))
payloads = st.one_of(commands, replies, contents)


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    for parser in (ClientParser(), ServerParser()):
        for chunk in (data, data[::-1], b"250-" + data):
            try:
                parser.feed(chunk, 0)
            except ParseError:
                parser.reset()


@FAST
@given(st.binary(max_size=600), st.integers(1, 50))
def test_content_mode_takes_any_bytes(data: bytes, step: int) -> None:
    parser = ClientParser()
    parser.feed(b"DATA\r\n", 0)
    parser.resume(ClientMode.DATA)
    for i in range(0, len(data), step):
        try:
            parser.feed(data[i:i + step], i)
        except ParseError:
            parser.reset()


@FAST
@given(st.lists(st.one_of(st.binary(max_size=300), contents), max_size=5), st.integers(1, 64), st.integers(1, 4000))
def test_message_reader_takes_any_bytes(pieces: list[bytes], step: int, limit: int) -> None:
    reader = MessageReader(limit)
    data = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n" + b"\r\n--z\r\n".join(pieces)
    for i in range(0, len(data), step):
        reader.feed(data[i:i + step])
    summary = reader.finish()
    assert summary.size == len(data)


@FAST
@given(session_script(payloads, max_size=30), st.integers(0, 9), st.booleans())
def test_sessions_survive_anything(script: list[Any], cut: int, redact: bool) -> None:
    out: list[Any] = []
    assert SPEC.tcp is not None
    config = protocol_config("smtp", send_request=True, send_response=True, redact_authorization=redact,
                             max_message_bytes=500)
    session = SPEC.tcp(SessionContext("smtp", config, conn_info(25), out.append, Counters("fuzz.smtp")))
    play_script(session, script, cut)
    for txn in out:
        assert txn.type == "smtp" and txn.fields["event"]["action"].startswith("smtp.")
        if redact:
            assert "AGEAYg==" not in repr(txn.fields)
