"""SMTP sessions on literal bytes, fed whole, byte by byte and split at random."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.smtp.fields import NOTE_STARTTLS
from agent.protocols.smtp.parser import NOTE_BARE_LF_DOT
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config, run_stream
from tests.protocols.smtp import transcripts as t
from tests.protocols.tls import builders as tb

PORT = 25


def smtp(steps: list[Step], **options: Any) -> list[Transaction]:
    return assert_same_three_ways("smtp", steps, server_port=PORT, options=options)


def by_action(txns: list[Transaction]) -> dict[str, list[Transaction]]:
    out: dict[str, list[Transaction]] = {}
    for txn in txns:
        out.setdefault(txn.fields["event"]["action"], []).append(txn)
    return out


def test_pipelined_session_pairs_every_reply_in_order() -> None:
    txns = smtp(t.pipelined_session())
    assert [(x.fields["event"]["action"], x.fields["smtp"]["reply"]["code"]) for x in txns] == [
        ("smtp.greeting", 220), ("smtp.ehlo", 250), ("smtp.auth", 235), ("smtp.mail", 250), ("smtp.rcpt", 250),
        ("smtp.rcpt", 550), ("smtp.rcpt", 250), ("smtp.data", 354), ("smtp.message", 250), ("smtp.quit", 221)]
    greeting, ehlo, auth, mail, rcpt_ok, rcpt_refused, _, data, msg, quit_ = txns
    assert greeting.has_request is False and greeting.fields["smtp"]["reply"]["text"].startswith("mx.example.org")
    assert ehlo.fields["smtp"]["helo"] == "client.example.com"
    assert ehlo.fields["smtp"]["extensions"] == ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "CHUNKING",
                                                 "STARTTLS", "AUTH PLAIN LOGIN"]
    assert ehlo.server_bytes == len(t.EHLO_REPLY) and ehlo.client_bytes == len(t.EHLO)
    assert (ehlo.ts_ns, ehlo.end_ns) == (2_000, 3_000)
    assert mail.fields["smtp"]["mail_from"] == "zhang@example.cn"
    assert mail.fields["smtp"]["parameters"] == ["BODY=8BITMIME", "SIZE=400"]
    assert mail.fields["smtp"]["reply"] == {"code": 250, "enhanced_status_code": "2.1.0", "text": "Ok"}
    assert rcpt_ok.fields["smtp"]["rcpt_to"] == "bob@example.org" and rcpt_ok.status == "OK"
    assert rcpt_refused.status == "Error" and rcpt_refused.fields["event"]["outcome"] == "failure"
    assert rcpt_refused.fields["smtp"]["reply"]["enhanced_status_code"] == "5.1.1"
    assert rcpt_refused.fields["smtp"]["reply"]["text"] == "<nobody@example.org>: Recipient address rejected"
    assert data.fields["method"] == "DATA" and data.end_ns == 7_000
    assert quit_.fields["query"] == "QUIT" and quit_.status == "OK"
    assert auth.fields["query"] == "AUTH PLAIN *" and "user" not in auth.fields
    assert msg.ts_ns == 8_000 and msg.end_ns == 9_000


def test_message_event_fields() -> None:
    msg = by_action(smtp(t.pipelined_session()))["smtp.message"][0]
    email = msg.fields["email"]
    assert email["from"] == {"address": ["zhang@example.cn"]}
    assert email["to"] == {"address": ["bob@example.org"]} and email["cc"] == {"address": ["carol@example.org"]}
    assert email["bcc"] == {"address": ["dave@example.org"]}  # accepted by RCPT, named by no header
    assert email["subject"] == "你好世界"  # GB2312, base64 encoded word
    assert email["message_id"] == "m1@example.cn" and email["x_mailer"] == "test 1.0"
    assert email["content_type"] == "text/plain"
    assert email["origination_timestamp"] == "2024-01-01T19:04:05.000Z"
    assert email["local_id"] == "4F3A2B1C9D"
    smtp_fields = msg.fields["smtp"]
    assert smtp_fields["mail_from"] == "zhang@example.cn"
    assert smtp_fields["rcpt_to"] == ["bob@example.org", "dave@example.org"]
    assert smtp_fields["rcpt_rejected"] == ["nobody@example.org"]
    content = t.message()
    assert smtp_fields["message"] == {"bytes": len(content)}  # dot-stuffing undone
    assert msg.client_bytes == len(t.stuffed(content))
    assert msg.status == "OK" and msg.notes == []


@pytest.mark.parametrize(("subject", "expected"), [
    ("=?GB2312?B?xOO6w8rAvec=?=", "你好世界"),
    ("=?gbk?b?1tDOxNPKvP4=?=", "中文邮件"),
    ("=?GB18030?B?1tDOxA==?= =?GB18030?B?08q8/g==?=", "中文邮件"),  # two words: joined without the space
    ("=?ISO-8859-1?Q?Caf=E9_cr=E8me?=", "Café crème"),
    ("=?iso-8859-2?q?=A9koda?=", "Škoda"),
    ("=?windows-1251?B?0O7x8ej/?=", "Россия"),
    ("=?windows-1252?Q?=80_price?=", "€ price"),
    ("=?UTF-8?B?8J+TpyBtYWls?=", "📧 mail"),
    ("=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin", "Grüße aus Berlin"),
    ("plain ascii", "plain ascii"),
])
def test_subjects_in_any_charset(subject: str, expected: str) -> None:
    msg = by_action(smtp(t.pipelined_session(t.message(subject=subject))))["smtp.message"][0]
    assert msg.fields["email"]["subject"] == expected


def test_smtputf8_raw_utf8_headers() -> None:
    content = ("From: 用户@例子.中国\r\nTo: bob@example.org\r\nSubject: 原始 UTF-8 主题\r\n\r\nbody\r\n").encode()
    msg = by_action(smtp(t.pipelined_session(content)))["smtp.message"][0]
    assert msg.fields["email"]["subject"] == "原始 UTF-8 主题"
    assert msg.fields["email"]["from"] == {"address": ["用户@例子.中国"]}


def test_attachment_name_type_and_decoded_size() -> None:
    content = t.with_attachment()
    msg = by_action(smtp(t.pipelined_session(content)))["smtp.message"][0]
    email = msg.fields["email"]
    assert email["content_type"] == "multipart/mixed"
    assert email["attachments"] == [{"file": {"name": "report.pdf", "mime_type": "application/pdf",
                                              "size": 256 * 40, "extension": "pdf"}}]


def test_auth_login_redacted_by_default_and_user_name_when_not() -> None:
    user, password = base64.b64encode(b"alice").decode(), base64.b64encode(b"pw").decode()
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"AUTH LOGIN\r\n", 2),
             Step(S2C, b"334 VXNlcm5hbWU6\r\n", 3), Step(C2S, f"{user}\r\n".encode(), 4),
             Step(S2C, b"334 UGFzc3dvcmQ6\r\n", 5), Step(C2S, f"{password}\r\n".encode(), 6),
             Step(S2C, b"535 5.7.8 Error: authentication failed\r\n", 7)]
    _, auth = smtp(steps, send_request=True, send_response=True)
    assert auth.status == "Error" and auth.fields["smtp"]["reply"]["code"] == 535
    assert auth.fields["smtp"]["reply"]["intermediate_codes"] == [334, 334]
    assert auth.fields["smtp"]["auth"] == {"mechanism": "LOGIN"}
    assert auth.fields["request"] == "AUTH LOGIN\r\n" + "*" * len(user) + "\r\n" + "*" * len(password) + "\r\n"
    assert user not in repr(auth.fields) and "user" not in auth.fields
    assert auth.client_bytes == len(b"AUTH LOGIN\r\n") + len(user) + len(password) + 4
    _, shown = smtp(steps, send_request=True, redact_authorization=False)
    assert shown.fields["user"] == {"name": "alice"} and user in shown.fields["request"]


def test_auth_plain_user_name_when_not_redacted() -> None:
    _, _, auth, *_ = smtp(t.pipelined_session(), redact_authorization=False)
    assert auth.fields["user"] == {"name": "alice"}
    assert auth.fields["smtp"]["arguments"] == f"PLAIN {t.PLAIN}"


def test_bdat_chunks_make_one_message() -> None:
    content = t.message(body="first part\r\n")
    first, second = content[:70], content[70:]
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, t.EHLO, 2), Step(S2C, t.EHLO_REPLY, 3),
             Step(C2S, b"MAIL FROM:<a@example.cn>\r\nRCPT TO:<bob@example.org>\r\n"
                       + f"BDAT {len(first)}\r\n".encode() + first
                       + f"BDAT {len(second)} LAST\r\n".encode() + second, 4),
             Step(S2C, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 70 bytes\r\n"
                       b"250 2.0.0 Ok: queued as ABC123\r\n", 5)]
    txns = smtp(steps)
    actions = [x.fields["event"]["action"] for x in txns]
    assert actions == ["smtp.greeting", "smtp.ehlo", "smtp.mail", "smtp.rcpt", "smtp.bdat", "smtp.bdat",
                       "smtp.message"]
    bdat1, bdat2, msg = txns[4:]
    assert bdat1.fields["smtp"]["bdat"] == {"size": 70, "last": False}
    assert bdat2.fields["smtp"]["bdat"] == {"size": len(second), "last": True}
    assert msg.fields["smtp"]["message"] == {"bytes": len(content), "chunks": 2}
    assert msg.fields["email"]["subject"] == "你好世界" and msg.fields["email"]["local_id"] == "ABC123"
    assert msg.client_bytes == len(content)


def test_rset_clears_the_envelope() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"MAIL FROM:<a@x.org>\r\n", 2), Step(S2C, b"250 Ok\r\n", 3),
             Step(C2S, b"RCPT TO:<b@x.org>\r\n", 4), Step(S2C, b"250 Ok\r\n", 5),
             Step(C2S, b"RSET\r\n", 6), Step(S2C, b"250 2.0.0 Ok\r\n", 7),
             Step(C2S, b"MAIL FROM:<c@y.org>\r\nRCPT TO:<d@y.org>\r\nDATA\r\n", 8),
             Step(S2C, b"250 Ok\r\n250 Ok\r\n354 go\r\n", 9),
             Step(C2S, b"Subject: second\r\n\r\nx\r\n.\r\n", 10), Step(S2C, b"250 Ok\r\n", 11)]
    txns = smtp(steps)
    rset = by_action(txns)["smtp.rset"][0]
    assert rset.fields["smtp"]["reply"]["code"] == 250 and rset.fields["method"] == "RSET"
    msg = by_action(txns)["smtp.message"][0]
    assert msg.fields["smtp"]["mail_from"] == "c@y.org" and msg.fields["smtp"]["rcpt_to"] == ["d@y.org"]


def test_data_refused_has_no_message() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n", 2),
             Step(S2C, b"250 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 Error: no valid recipients\r\n", 3),
             Step(C2S, b"QUIT\r\n", 4), Step(S2C, b"221 Bye\r\n", 5)]
    txns = smtp(steps)
    assert [x.fields["event"]["action"] for x in txns] == ["smtp.greeting", "smtp.mail", "smtp.rcpt", "smtp.data",
                                                           "smtp.quit"]
    assert txns[3].status == "Error" and txns[3].fields["smtp"]["reply"]["code"] == 554


def test_message_refused_after_data() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"DATA\r\n", 2), Step(S2C, b"354 go\r\n", 3),
             Step(C2S, b"Subject: spam\r\n\r\nbuy\r\n.\r\n", 4),
             Step(S2C, b"554 5.7.1 Message rejected as spam\r\n", 5)]
    msg = by_action(smtp(steps))["smtp.message"][0]
    assert msg.status == "Error" and msg.fields["smtp"]["reply"]["code"] == 554
    assert "local_id" not in msg.fields["email"]


@pytest.mark.parametrize("verb", ["NOOP", "VRFY postmaster", "EXPN staff", "HELP", "HELO old.example"])
def test_other_commands(verb: str) -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, verb.encode() + b"\r\n", 2),
             Step(S2C, b"252-2.0.0 Cannot VRFY user\r\n252 2.0.0 but will accept\r\n", 3)]
    _, txn = smtp(steps)
    assert txn.fields["smtp"]["command"] == verb.split(maxsplit=1)[0] and txn.fields["query"] == verb
    assert txn.fields["smtp"]["reply"] == {"code": 252, "enhanced_status_code": "2.0.0",
                                           "text": "Cannot VRFY user\nbut will accept"}


def test_starttls_hands_the_connection_to_the_tls_decoder() -> None:
    # The client sends its ClientHello without waiting for the 220: it is held, then handed over.
    client_hello = tb.record(tb.HANDSHAKE, tb.client_hello(extensions=[tb.sni("mx.example.org")]))
    server_hello = tb.record(tb.HANDSHAKE, tb.server_hello(cipher=0xC02F))
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, t.EHLO, 2), Step(S2C, t.EHLO_REPLY, 3),
             Step(C2S, b"STARTTLS\r\n" + client_hello, 4),
             Step(S2C, b"220 2.0.0 Ready to start TLS\r\n" + server_hello + tb.CHANGE_CIPHER_SPEC, 5),
             Step(C2S, tb.CHANGE_CIPHER_SPEC + tb.app_data(), 6, fin=True)]
    counters = metrics.register("test.smtp")
    before = counters["parse_errors"]
    txns = smtp(steps)
    assert [x.type for x in txns] == ["smtp", "smtp", "smtp", "tls"]
    assert [x.fields["event"]["action"] for x in txns[:3]] == ["smtp.greeting", "smtp.ehlo", "smtp.starttls"]
    assert txns[2].notes == [NOTE_STARTTLS] and txns[2].fields["smtp"]["reply"]["code"] == 220
    tls = txns[3].fields["tls"]
    assert tls["client"]["server_name"] == "mx.example.org" and tls["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert counters["parse_errors"] == before


def test_starttls_hands_the_connection_to_tls_with_the_bytes_past_it() -> None:
    from agent.protocols.smtp.plugin import SmtpSession

    client_hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"
    out: list[Transaction] = []
    ctx = SessionContext("smtp", protocol_config("smtp"), conn_info(PORT), out.append, metrics.register("test.smtp"))
    session = SmtpSession(ctx)
    session.feed(S2C, t.GREETING, 1)
    session.feed(C2S, b"STARTTLS\r\n" + client_hello, 2)
    assert ctx.handed_over is None  # the client's bytes wait for the answer
    session.feed(S2C, b"220 2.0.0 Ready to start TLS\r\n\x16\x03\x03", 3)
    assert ctx.handed_over is not None
    assert (ctx.handed_over.protocol, ctx.handed_over.pending) == ("tls", (client_hello, b"\x16\x03\x03"))
    assert [x.fields["event"]["action"] for x in out] == ["smtp.greeting", "smtp.starttls"]


def test_starttls_refused_goes_on_in_clear() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"STARTTLS\r\nNOOP\r\n", 2),
             Step(S2C, b"454 4.7.0 TLS not available\r\n250 2.0.0 Ok\r\n", 3)]
    txns = smtp(steps)
    assert [(x.fields["event"]["action"], x.status) for x in txns] == [
        ("smtp.greeting", "OK"), ("smtp.starttls", "Error"), ("smtp.noop", "OK")]


def test_unanswered_command_and_unsolicited_reply() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(S2C, b"421 4.4.2 mx Error: timeout exceeded\r\n", 2),
             Step(C2S, b"QUIT\r\n", 3)]
    _, closing, quit_ = smtp(steps)
    assert closing.has_request is False and closing.notes == ["Unmatched response"] and closing.status == "Error"
    assert quit_.notes == ["Unmatched request"] and quit_.end_ns is None


def test_bare_lf_dot_is_not_the_end_of_data_but_noted() -> None:
    content = b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<evil@x.org>\r\n"
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"DATA\r\n", 2), Step(S2C, b"354 go\r\n", 3),
             Step(C2S, content + b".\r\n", 4), Step(S2C, b"250 Ok\r\n", 5)]
    msg = by_action(smtp(steps))["smtp.message"][0]
    assert msg.notes == [NOTE_BARE_LF_DOT]
    assert msg.fields["smtp"]["message"]["bytes"] == len(content)  # after a bare LF a dot starts no line: kept


def test_server_ending_data_early_resynchronises() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"DATA\r\n", 2), Step(S2C, b"354 go\r\n", 3),
             Step(C2S, b"Subject: x\r\n\r\nbody\r\n", 4), Step(S2C, b"250 Ok\r\n", 5),
             Step(C2S, b"QUIT\r\n", 6), Step(S2C, b"221 Bye\r\n", 7)]
    txns = run_stream("smtp", steps, server_port=PORT)
    msg = by_action(txns)["smtp.message"][0]
    assert msg.notes == ["The server answered before the end of the message data was seen"]


def test_empty_message_and_lf_only_commands() -> None:
    steps = [Step(S2C, b"220 ready\n", 1), Step(C2S, b"EHLO x\nDATA\n", 2),
             Step(S2C, b"250 hi\n354 go\n", 3), Step(C2S, b".\r\n", 4), Step(S2C, b"250 Ok\n", 5)]
    txns = smtp(steps)
    msg = by_action(txns)["smtp.message"][0]
    assert msg.fields["smtp"]["message"] == {"bytes": 0} and "subject" not in msg.fields["email"]


def test_email_direction_from_local_domains() -> None:
    msg = by_action(smtp(t.pipelined_session(), local_domains=["example.org"]))["smtp.message"][0]
    assert msg.fields["email"]["direction"] == "inbound"
    msg = by_action(smtp(t.pipelined_session(), local_domains=["example.cn"]))["smtp.message"][0]
    assert msg.fields["email"]["direction"] == "outbound"
    msg = by_action(smtp(t.pipelined_session()))["smtp.message"][0]
    assert "direction" not in msg.fields["email"]


def test_max_message_bytes_gives_headers_only() -> None:
    content = t.with_attachment()
    counters = metrics.register("test.smtp")
    before = counters["messages_over_limit"]
    msg = by_action(smtp(t.pipelined_session(content), max_message_bytes=1000))["smtp.message"][0]
    assert msg.fields["smtp"]["message"] == {"bytes": len(content), "headers_only": True}
    assert msg.fields["email"]["subject"] == "report" and "attachments" not in msg.fields["email"]
    assert msg.notes == ["Message larger than max_message_bytes (1000): headers only"]
    assert counters["messages_over_limit"] > before


def test_gap_in_message_content_keeps_the_message_with_a_note() -> None:
    steps = [Step(S2C, t.GREETING, 1), Step(C2S, b"DATA\r\n", 2), Step(S2C, b"354 go\r\n", 3),
             Step(C2S, b"Subject: lossy\r\n\r\nstart\r\n", 4), Step(C2S, gap=5000, ts_ns=5),
             Step(C2S, b"tail\r\n.\r\n", 6), Step(S2C, b"250 Ok\r\n", 7)]
    msg = by_action(run_stream("smtp", steps, server_port=PORT))["smtp.message"][0]
    assert msg.fields["email"]["subject"] == "lossy"
    assert msg.notes == ["Packet loss while capturing the message"]


def test_trailing_bytes_stay_unread() -> None:
    """A complete session followed by the start of a command: the same events, the partial line waits."""
    steps = t.pipelined_session()
    steps[-2] = Step(C2S, b"QUIT\r\nNO", 10_000)
    whole = smtp(t.pipelined_session())
    with_trailing = run_stream("smtp", steps, server_port=PORT, expire=False)
    assert [x.fields for x in with_trailing] == [x.fields for x in whole]
