"""exim (Debian's exim4-daemon-light) in a namespace, swaks and smtplib in another, captured live by pktbeat.

One run drives four sessions: swaks with AUTH PLAIN, a GB2312 subject, an
attachment, a refused recipient and PIPELINING; swaks with STARTTLS (its
handshake then decoded by the TLS decoder that takes the connection over);
smtplib with a failed login, RSET, a raw UTF-8 (SMTPUTF8) message, NOOP,
VRFY and HELP; and a socket client sending BDAT chunks.  tcpdump records
the same interface, and the replay of its capture must give the same events
as the live agent.

PKTBEAT_REGENERATE_PCAPS=1 copies that capture to tests/protocols/smtp/pcaps/
(the pcaps test_pcaps.py replays through the CLI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import live_agent, live_available, start_tcpdump
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.replay import replay

pytestmark = [pytest.mark.server, pytest.mark.live]

EXIM = shutil.which("exim4") or "/usr/sbin/exim4"
PCAPS = Path(__file__).parent / "pcaps"
PROTOCOLS: list[dict[str, Any]] = [{"type": "smtp", "ports": [25, 587], "send_request": True,
                                    "send_response": True, "local_domains": ["pktbeat.test"]},
                                   {"type": "tls", "ports": [465]}]  # enabled: it takes STARTTLS connections over

EXIM_CONF = """
primary_hostname = mx.pktbeat.test
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {tmp}/spool
log_file_path = {tmp}/log/%slog
pid_file_path = {tmp}/exim.pid
daemon_smtp_ports = 25 : 587
local_interfaces = {ip}
queue_only = true
tls_advertise_hosts = *
tls_certificate = {tmp}/cert.pem
tls_privatekey = {tmp}/key.pem
auth_advertise_hosts = *
host_lookup =
rfc1413_hosts =
keep_environment =
domainlist local_domains = pktbeat.test
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  deny    local_parts = nobody
          message = no such user here
  accept  domains = +local_domains
  deny    message = relay not permitted

begin authenticators
PLAIN:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${{if and {{{{eq{{$auth2}}{{alice}}}}{{eq{{$auth3}}{{s3cret}}}}}}}}
  server_set_id = $auth2
LOGIN:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = ${{if and {{{{eq{{$auth1}}{{alice}}}}{{eq{{$auth2}}{{s3cret}}}}}}}}
  server_set_id = $auth1
"""

SMTPLIB_CLIENT = r"""
import smtplib, sys
from email.message import EmailMessage
s = smtplib.SMTP(sys.argv[1], 587, local_hostname="py.pktbeat.test", timeout=10)
s.ehlo()
try:
    s.login("alice", "wrong")
except smtplib.SMTPAuthenticationError:
    pass
s.mail("carol@example.com")
s.rcpt("dave@pktbeat.test")
s.rset()
msg = EmailMessage()
msg["From"] = "cärol@example.com"  # a UTF-8 address: smtplib sends SMTPUTF8 and raw UTF-8 headers
msg["To"] = "dave@pktbeat.test"
msg["Subject"] = "Grüße 你好"
msg.set_content("Unicode body: grüße\n", cte="8bit")
s.send_message(msg)
s.noop()
print(s.verify("dave@pktbeat.test"))
s.help()
s.quit()
"""

BDAT_CLIENT = r"""
import socket, sys
chunks = [b"From: erin@example.com\r\nTo: frank@pktbeat.test\r\nSubject: in chunks\r\n\r\n", b"first\r\nsecond\r\n"]
s = socket.create_connection((sys.argv[1], 25), timeout=10)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if line[3:4] != b"-":
            return line
reply()
s.sendall(b"EHLO bdat.pktbeat.test\r\n"); reply()
s.sendall(b"MAIL FROM:<erin@example.com>\r\nRCPT TO:<frank@pktbeat.test>\r\n"); reply(); reply()
s.sendall(b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]); reply()
s.sendall(b"BDAT %d LAST\r\n" % len(chunks[1]) + chunks[1]); print(reply().decode().strip())
s.sendall(b"QUIT\r\n"); reply()
s.close()
"""


@pytest.fixture(scope="module")
def exim_pair() -> Iterator[tuple[VethPair, Path]]:
    if not os.path.exists(EXIM) or not shutil.which("swaks"):
        pytest.skip("exim4-daemon-light and swaks are not installed")
    reason = live_available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="pktbeat-exim-") as tmp, veth_pair("pbm") as pair:
        root = Path(tmp)
        for sub in ("spool", "log"):
            (root / sub).mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
                        str(root / "key.pem"), "-out", str(root / "cert.pem"), "-subj", "/CN=mx.pktbeat.test"],
                       check=True, capture_output=True, timeout=60)
        (root / "key.pem").chmod(0o644)  # exim reads it after giving up root
        shutil.chown(root / "spool", "Debian-exim", "Debian-exim")
        shutil.chown(root / "log", "Debian-exim", "Debian-exim")
        root.chmod(0o755)
        (root / "exim.conf").write_text(EXIM_CONF.format(tmp=root, ip=pair.b_ip))
        (root / "report.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
        pair.b.popen([EXIM, "-C", str(root / "exim.conf"), "-bdf", "-q1h"], log=root / "exim.out")
        pair.b.wait_port(25, host=pair.b_ip)
        pair.b.wait_port(587, host=pair.b_ip)
        yield pair, root


def traffic(pair: VethPair, root: Path) -> dict[str, str]:
    a, ip = pair.a, pair.b_ip
    plain = a.run(["swaks", "--server", f"{ip}:25", "--helo", "swaks.pktbeat.test", "--from", "alice@example.com",
                   "--to", "bob@pktbeat.test,nobody@pktbeat.test", "--header", "Subject: =?GB2312?B?xOO6w8rAvec=?=",
                   "--attach-type", "application/pdf", "--attach", f"@{root}/report.pdf", "--auth", "PLAIN",
                   "--auth-user", "alice", "--auth-password", "s3cret", "--pipeline"], timeout=30).stdout
    a.run(["swaks", "--server", f"{ip}:587", "--tls", "--from", "alice@example.com", "--to", "bob@pktbeat.test"],
          timeout=30)
    a.run([sys.executable, "-c", SMTPLIB_CLIENT, ip], timeout=30)
    bdat = a.run([sys.executable, "-c", BDAT_CLIENT, ip], timeout=30).stdout
    exim_id = re.search(r"250 OK id=(\S+)", plain)
    bdat_id = re.search(r"id=(\S+)", bdat)
    assert exim_id and bdat_id, (plain, bdat)
    return {"plain": exim_id.group(1), "bdat": bdat_id.group(1)}


def sessions(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """smtp events per connection (by client port), in the order they were published.

    Not by @timestamp: a BDAT message starts with its first chunk, before the chunks' own events end.
    """
    out: dict[int, list[dict[str, Any]]] = {}
    for event in (e for e in events if e.get("type") == "smtp"):
        out.setdefault(event["client"]["port"], []).append(event)
    return out


def actions(session: list[dict[str, Any]]) -> list[str]:
    return [e["event"]["action"] for e in session]


def test_exim_sessions_live_and_replayed(exim_pair: tuple[VethPair, Path], tmp_path: Path) -> None:
    pair, root = exim_pair
    pcap, dump = tmp_path / "tcpdump.pcap", tmp_path / "agent.pcap"
    dumper = start_tcpdump(pair.a, pair.a_if, pcap, "tcp port 25 or tcp port 587")
    with live_agent(pair.a, [pair.a_if], PROTOCOLS, extra_args=["--dump", str(dump)]) as agent:
        ids = traffic(pair, root)
        time.sleep(0.5)
        assert agent.stop() == 0, agent.log()[-3000:]
    dumper.stop()
    live = agent.events()
    if os.environ.get("PKTBEAT_REGENERATE_PCAPS"):
        PCAPS.mkdir(exist_ok=True)
        shutil.copy(pcap, PCAPS / "exim_sessions.pcap")

    by_session = list(sessions(live).values())
    assert len(by_session) == 4, [actions(s) for s in by_session]
    plain, tls, python, bdat = by_session
    check_swaks_plain(plain, ids["plain"], pair)
    assert actions(tls) == ["smtp.greeting", "smtp.ehlo", "smtp.starttls"]
    assert tls[-1]["error"]["message"] == "STARTTLS accepted: the rest of the connection is TLS, not decoded as SMTP"
    assert tls[-1]["server"]["port"] == 587
    [handshake] = [e for e in live if e["type"] == "tls"]  # the same connection, handed over to the TLS decoder
    assert handshake["client"]["port"] == tls[-1]["client"]["port"] and handshake["server"]["port"] == 587
    assert handshake["tls"]["established"] is True and handshake["tls"]["version"] in ("1.2", "1.3")
    check_smtplib(python)
    check_bdat(bdat, ids["bdat"])

    # The agent's own record of the packets replays into the very same events, times included;
    # tcpdump's independent capture into the same events but for when each packet was stamped.
    assert_same(replay(dump, PROTOCOLS)[0], live, timing=True)
    assert_same(replay(pcap, PROTOCOLS)[0], live, timing=False)


TIMING = ("@timestamp", "start", "end", "duration")


def assert_same(replayed: list[dict[str, Any]], live: list[dict[str, Any]], timing: bool) -> None:
    """What live capture and replay must agree on (ids, agent and host fields aside)."""
    keep = ("@timestamp", "event", "smtp", "email", "status", "query", "request", "response", "source",
            "destination", "error")

    def view(event: dict[str, Any]) -> dict[str, Any]:
        out = {k: event.get(k) for k in (*keep, "tls") if timing or k not in TIMING}
        for side in ("source", "destination"):  # only the live agent knows the processes
            if isinstance(out.get(side), dict):
                out[side] = {k: v for k, v in out[side].items() if k != "process"}
        out["event"] = {k: v for k, v in event["event"].items()
                        if k not in ("ingested", "created") and (timing or k not in TIMING)}
        return out

    ours = [[view(e) for e in session] for session in sessions(replayed).values()]
    theirs = [[view(e) for e in session] for session in sessions(live).values()]
    assert [view(e) for e in replayed if e["type"] == "tls"] == [view(e) for e in live if e["type"] == "tls"]
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert [e["event"]["action"] for e in mine] == [e["event"]["action"] for e in other]
        for a, b in zip(mine, other, strict=True):
            assert a == b


def check_swaks_plain(session: list[dict[str, Any]], exim_id: str, pair: VethPair) -> None:
    assert actions(session) == ["smtp.greeting", "smtp.ehlo", "smtp.auth", "smtp.mail", "smtp.rcpt", "smtp.rcpt",
                                "smtp.data", "smtp.message", "smtp.quit"]
    greeting, ehlo, auth, mail, bob, nobody, data, message, _ = session
    assert greeting["smtp"]["reply"]["code"] == 220 and "Exim 4.96" in greeting["smtp"]["reply"]["text"]
    assert ehlo["smtp"]["helo"] == "swaks.pktbeat.test"
    assert {"PIPELINING", "CHUNKING", "STARTTLS", "AUTH PLAIN LOGIN", "8BITMIME", "SMTPUTF8"} <= set(
        ehlo["smtp"]["extensions"])
    assert auth["smtp"]["auth"]["mechanism"] == "PLAIN" and auth["smtp"]["reply"]["code"] == 235
    assert auth["query"] == "AUTH PLAIN *" and "AGFsaWNl" not in repr(auth) and "user" not in auth
    assert mail["smtp"]["mail_from"] == "alice@example.com"
    assert (bob["status"], nobody["status"]) == ("OK", "Error")
    assert nobody["smtp"]["reply"] == {"code": 550, "text": "no such user here"}
    assert data["smtp"]["reply"]["code"] == 354
    # PIPELINING: MAIL, both RCPTs and DATA went in one segment, answered in order
    assert mail["event"]["start"] == bob["event"]["start"] == nobody["event"]["start"] == data["event"]["start"]
    email = message["email"]
    assert email["subject"] == "你好世界"
    assert email["from"]["address"] == ["alice@example.com"]
    assert email["to"]["address"] == ["bob@pktbeat.test", "nobody@pktbeat.test"]
    assert email["x_mailer"].startswith("swaks")
    assert email["attachments"] == [{"file": {"name": "report.pdf", "mime_type": "application/pdf",
                                              "size": 9 + 256 * 8, "extension": "pdf"}}]
    assert email["local_id"] == exim_id and email["direction"] == "inbound"
    assert message["smtp"]["rcpt_to"] == ["bob@pktbeat.test"]
    assert message["smtp"]["rcpt_rejected"] == ["nobody@pktbeat.test"]
    assert message["status"] == "OK" and message["source"]["ip"] == pair.a_ip
    assert message["destination"]["bytes"] == len(f"250 OK id={exim_id}\r\n")


def check_smtplib(session: list[dict[str, Any]]) -> None:
    assert actions(session) == ["smtp.greeting", "smtp.ehlo", "smtp.auth", "smtp.auth", "smtp.mail", "smtp.rcpt",
                                "smtp.rset", "smtp.mail", "smtp.rcpt", "smtp.data", "smtp.message", "smtp.noop",
                                "smtp.vrfy", "smtp.help", "smtp.quit"]
    plain, login = session[2:4]  # smtplib tries PLAIN, then LOGIN (user name inline, one challenge)
    assert plain["status"] == login["status"] == "Error"
    assert plain["smtp"]["reply"]["code"] == login["smtp"]["reply"]["code"] == 535
    assert (plain["smtp"]["auth"]["mechanism"], login["smtp"]["auth"]["mechanism"]) == ("PLAIN", "LOGIN")
    assert login["smtp"]["reply"]["intermediate_codes"] == [334]
    assert login["request"].startswith("AUTH LOGIN") and "YWxpY2U" not in login["request"]  # "alice"
    assert session[6]["smtp"]["reply"]["code"] == 250 and session[6]["method"] == "RSET"
    mail = session[7]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(mail["smtp"]["parameters"])
    assert mail["smtp"]["mail_from"] == "cärol@example.com"
    message = session[10]
    assert message["email"]["subject"] == "Grüße 你好"
    assert message["smtp"]["mail_from"] == "cärol@example.com"
    assert message["email"]["from"]["address"] == ["cärol@example.com"]
    assert message["smtp"]["rcpt_to"] == ["dave@pktbeat.test"]
    assert message["email"]["to"]["address"] == ["dave@pktbeat.test"]
    assert session[12]["query"] == "VRFY dave@pktbeat.test" and session[12]["smtp"]["reply"]["code"] == 252


def check_bdat(session: list[dict[str, Any]], exim_id: str) -> None:
    assert actions(session) == ["smtp.greeting", "smtp.ehlo", "smtp.mail", "smtp.rcpt", "smtp.bdat", "smtp.bdat",
                                "smtp.message", "smtp.quit"]
    first, last, message = session[4:7]
    assert first["smtp"]["bdat"] == {"size": 70, "last": False}
    assert last["smtp"]["bdat"] == {"size": 15, "last": True}
    assert message["smtp"]["message"] == {"bytes": 85, "chunks": 2}
    assert message["email"]["subject"] == "in chunks" and message["email"]["local_id"] == exim_id
