"""SMTP's event fields (with their index mapping) and the transactions that carry them.

Two kinds of event:

- one per command and its reply (`event.action: smtp.<verb>`): `method`,
  `query`, `smtp.command`, `smtp.arguments`, `smtp.reply.*`, and what the
  command says (`smtp.helo`, `smtp.extensions`, `smtp.mail_from`,
  `smtp.rcpt_to`, `smtp.auth.mechanism`, `smtp.bdat.*`);
- one per message (`event.action: smtp.message`), sent with DATA or BDAT:
  ECS `email.*` from its headers and MIME structure, the envelope
  (`smtp.mail_from`, `smtp.rcpt_to`) and the reply that accepted or refused it.

AUTH credentials are redacted by default, as Packetbeat's
`redact_authorization` does for HTTP: the values become "*" and the raw
request text keeps their length in stars; only with redaction off does the
user name (PLAIN, LOGIN, CRAM-MD5, XOAUTH2) go to `user.name`.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC
from email.message import EmailMessage
from typing import Any

from agent.protocols.base import Transaction
from agent.protocols.smtp.mime import MessageSummary
from agent.protocols.smtp.parser import Command, Reply, SaslResponse
from agent.transport.types import ConnectionInfo

# Besides these: method, query, request, response, event.action/outcome, user.name and related.user.
FIELDS = """
smtp.command keyword
smtp.arguments keyword
smtp.reply.code long
smtp.reply.enhanced_status_code keyword
smtp.reply.text keyword +text
smtp.reply.intermediate_codes long
smtp.helo keyword
smtp.extensions keyword
smtp.mail_from keyword
smtp.rcpt_to keyword
smtp.rcpt_rejected keyword
smtp.parameters keyword
smtp.auth.mechanism keyword
smtp.bdat.size long
smtp.bdat.last boolean
smtp.message.bytes long
smtp.message.chunks long
smtp.message.headers_only boolean
email.attachments.file.extension keyword
email.attachments.file.mime_type keyword
email.attachments.file.name keyword
email.attachments.file.size long
email.bcc.address keyword
email.cc.address keyword
email.content_type keyword
email.direction keyword
email.from.address keyword
email.local_id keyword
email.message_id wildcard
email.origination_timestamp date
email.reply_to.address keyword
email.sender.address keyword
email.subject keyword +text
email.to.address keyword
email.x_mailer keyword
"""

NOTE_STARTTLS = "STARTTLS accepted: the rest of the connection is TLS, not decoded as SMTP"
NOTE_UNMATCHED_REQUEST = "Unmatched request"
NOTE_UNMATCHED_RESPONSE = "Unmatched response"
NOTE_NO_END_OF_DATA = "The server answered before the end of the message data was seen"
NOTE_MESSAGE_LOSS = "Packet loss while capturing the message"
NOTE_MESSAGE_INCOMPLETE = "The connection ended before the message did"

_LOCAL_ID = re.compile(r"(?:queued as|id=)\s*([A-Za-z0-9._-]+)", re.IGNORECASE)
_ADDRESS_HEADERS = (("from", "from"), ("sender", "sender"), ("to", "to"), ("cc", "cc"), ("reply-to", "reply_to"))


@dataclass
class Exchange:
    """A command, what the client sent for it after (SASL responses) and the replies before the final one."""

    command: Command
    sasl: list[SaslResponse] = field(default_factory=list)
    intermediate: list[Reply] = field(default_factory=list)

    @property
    def client_bytes(self) -> int:
        return self.command.size + sum(r.size for r in self.sasl)


@dataclass
class Envelope:
    """The mail transaction: MAIL FROM and the recipients the server accepted (or refused)."""

    mail_from: str | None = None
    parameters: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    send_request: bool
    send_response: bool
    redact_authorization: bool
    local_domains: frozenset[str]


def reply_fields(reply: Reply, intermediate: list[Reply] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": reply.code, "text": reply.text}
    if reply.enhanced:
        out["enhanced_status_code"] = reply.enhanced
    if intermediate:
        out["intermediate_codes"] = [r.code for r in intermediate]
    return out


def path_of(args: str, keyword: str) -> tuple[str, list[str]]:
    """(the path of `FROM:<a@b>` / `TO:<a@b>` without brackets, the ESMTP parameters after it)."""
    rest = args[len(keyword):].lstrip() if args[:len(keyword)].upper() == keyword else args
    if rest.startswith("<"):
        close = rest.find(">")
        if close >= 0:
            return rest[1:close], rest[close + 1:].split()
    parts = rest.split()
    return (parts[0] if parts else ""), parts[1:]


def _b64(text: str) -> bytes | None:
    try:
        return binascii.a2b_base64(text.encode("ascii", "replace"))
    except binascii.Error:
        return None


def auth_user(mechanism: str, initial: str, responses: list[str]) -> str | None:
    """The user name an AUTH exchange carries (PLAIN, LOGIN, CRAM-MD5, XOAUTH2), when it can be read."""
    first = initial if initial and initial != "=" else (responses[0] if responses else "")
    decoded = _b64(first) if first else None
    if decoded is None:
        return None
    if mechanism == "PLAIN":
        parts = decoded.split(b"\0")
        name = parts[1] if len(parts) == 3 else b""
    elif mechanism == "LOGIN":
        name = decoded
    elif mechanism == "CRAM-MD5":
        name = decoded.rsplit(b" ", 1)[0] if b" " in decoded else b""
    elif mechanism == "XOAUTH2":
        name = decoded.split(b"\x01", 1)[0].removeprefix(b"user=")
    else:
        return None
    text = name.decode("utf-8", "replace")
    return text or None


def _request_text(exchange: Exchange, settings: Settings) -> str:
    command = exchange.command
    line = f"{command.verb} {command.args}".rstrip()
    lines = [line]
    if command.verb == "AUTH" and settings.redact_authorization:
        mechanism, _, initial = command.args.partition(" ")
        lines = [f"AUTH {mechanism} {'*' * len(initial)}".rstrip()]
        lines += ["*" * len(r.text) for r in exchange.sasl]
    else:
        lines += [r.text for r in exchange.sasl]
    return "\r\n".join(lines) + "\r\n"


def _command_details(exchange: Exchange, reply: Reply, settings: Settings, smtp: dict[str, Any],
                     fields: dict[str, Any]) -> None:
    """What a command says, in smtp.* (and user.* for AUTH)."""
    command = exchange.command
    verb, args = command.verb, command.args
    if verb in ("EHLO", "HELO", "LHLO"):
        smtp["helo"] = args
        if len(reply.lines) > 1 and not reply.is_error:
            smtp["extensions"] = list(reply.lines[1:])
    elif verb == "MAIL":
        smtp["mail_from"], parameters = path_of(args, "FROM:")
        if parameters:
            smtp["parameters"] = parameters
    elif verb == "RCPT":
        smtp["rcpt_to"], parameters = path_of(args, "TO:")
        if parameters:
            smtp["parameters"] = parameters
    elif verb == "BDAT":
        size, _, last = args.partition(" ")
        if size.isdigit():
            smtp["bdat"] = {"size": int(size), "last": last.strip().upper() == "LAST"}
    elif verb == "AUTH":
        mechanism, _, initial = args.partition(" ")
        smtp["auth"] = {"mechanism": mechanism.upper()}
        if settings.redact_authorization:
            smtp["arguments"] = f"{mechanism} *" if initial else mechanism
        else:
            user = auth_user(mechanism.upper(), initial.strip(), [r.text for r in exchange.sasl])
            if user:
                fields["user"] = {"name": user}
                fields["related"] = {"user": [user]}


def command_transaction(conn: ConnectionInfo, exchange: Exchange, reply: Reply | None, settings: Settings,
                        notes: list[str] | None = None) -> Transaction:
    """A command and its (final) reply; `reply` None: it was never answered."""
    command = exchange.command
    smtp: dict[str, Any] = {"command": command.verb}
    if command.args:
        smtp["arguments"] = command.args
    fields: dict[str, Any] = {"smtp": smtp}
    if command.verb:
        fields["method"] = command.verb
    all_notes = list(notes or ())
    if reply is not None:
        smtp["reply"] = reply_fields(reply, exchange.intermediate)
        _command_details(exchange, reply, settings, smtp, fields)
    else:
        all_notes.append(NOTE_UNMATCHED_REQUEST)
        if command.verb == "AUTH":
            _command_details(exchange, Reply(0, "", (), 0, 0), settings, smtp, fields)
    fields["query"] = f"{command.verb} {smtp.get('arguments', '')}".rstrip()
    fields["event"] = _event(f"smtp.{command.verb.lower() or 'empty_line'}", reply)
    if settings.send_request:
        fields["request"] = _request_text(exchange, settings)
    if settings.send_response and reply is not None:
        fields["response"] = _response_text(exchange.intermediate, reply)
    return Transaction(
        type="smtp", conn=conn, ts_ns=command.ts_ns, end_ns=reply.ts_ns if reply is not None else None,
        status="Error" if reply is None or reply.is_error else "OK", client_bytes=exchange.client_bytes,
        server_bytes=(reply.size + sum(r.size for r in exchange.intermediate)) if reply is not None else None,
        notes=all_notes, fields=fields)


def reply_transaction(conn: ConnectionInfo, reply: Reply, greeting: bool, settings: Settings) -> Transaction:
    """The server's greeting, or a reply no command asked for (421 before closing, say)."""
    fields: dict[str, Any] = {"smtp": {"reply": reply_fields(reply)},
                              "event": _event("smtp.greeting" if greeting else "smtp.reply", reply)}
    if settings.send_response:
        fields["response"] = _response_text([], reply)
    return Transaction(type="smtp", conn=conn, ts_ns=reply.ts_ns, has_request=False,
                       status="Error" if reply.is_error else "OK", server_bytes=reply.size,
                       notes=[] if greeting else [NOTE_UNMATCHED_RESPONSE], fields=fields)


def _response_text(intermediate: list[Reply], reply: Reply) -> str:
    return "".join(f"{r.code} {r.text}\n" for r in (*intermediate, reply))


def _event(action: str, reply: Reply | None) -> dict[str, str]:
    return {"action": action, "outcome": "success" if reply is not None and not reply.is_error else "failure"}


@dataclass
class MessageState:
    """A message being received: its content reader's summary comes with the final reply."""

    ts_ns: int
    client_bytes: int = 0
    chunks: int = 0
    notes: list[str] = field(default_factory=list)


def message_transaction(conn: ConnectionInfo, state: MessageState, summary: MessageSummary, envelope: Envelope,
                        reply: Reply | None, settings: Settings) -> Transaction:
    """The message event: email.* from its headers and parts, the envelope, and the reply that took it."""
    smtp: dict[str, Any] = {"message": {"bytes": summary.size}}
    if state.chunks:
        smtp["message"]["chunks"] = state.chunks
    if summary.over_limit:
        smtp["message"]["headers_only"] = True
    if envelope.mail_from is not None:
        smtp["mail_from"] = envelope.mail_from
    if envelope.recipients:
        smtp["rcpt_to"] = list(envelope.recipients)
    if envelope.rejected:
        smtp["rcpt_rejected"] = list(envelope.rejected)
    if envelope.parameters:
        smtp["parameters"] = list(envelope.parameters)
    notes = list(state.notes) + list(summary.notes)
    email = email_fields(summary, envelope, settings.local_domains, notes)
    if reply is not None:
        smtp["reply"] = reply_fields(reply)
        match = _LOCAL_ID.search(reply.text) if not reply.is_error else None
        if match is not None:
            email["local_id"] = match.group(1)
    else:
        notes.append(NOTE_UNMATCHED_REQUEST)
    fields: dict[str, Any] = {"smtp": smtp, "email": email, "event": _event("smtp.message", reply)}
    if settings.send_request:
        fields["request"] = summary.raw_headers.decode("utf-8", "replace")
    if settings.send_response and reply is not None:
        fields["response"] = _response_text([], reply)
    return Transaction(
        type="smtp", conn=conn, ts_ns=state.ts_ns, end_ns=reply.ts_ns if reply is not None else None,
        status="Error" if reply is None or reply.is_error else "OK", client_bytes=state.client_bytes,
        server_bytes=reply.size if reply is not None else None, notes=notes, fields=fields)


def email_fields(summary: MessageSummary, envelope: Envelope, local_domains: frozenset[str],
                 notes: list[str]) -> dict[str, Any]:
    """ECS email.* of a message (bcc: envelope recipients that no To or Cc header names)."""
    email: dict[str, Any] = {}
    headers = summary.headers
    named: set[str] = set()
    if headers is not None:
        _header_fields(headers, email, notes)
        for key in ("to", "cc"):
            named.update(a.lower() for a in email.get(key, {}).get("address", ()))
    bcc = [r for r in envelope.recipients if r.lower() not in named]
    if bcc and headers is not None:
        email["bcc"] = {"address": bcc}
    if summary.attachments:
        email["attachments"] = [{"file": _file(a.name, a.mime_type, a.size)} for a in summary.attachments]
    direction = _direction(envelope, local_domains)
    if direction:
        email["direction"] = direction
    return email


def _file(name: str | None, mime_type: str, size: int) -> dict[str, Any]:
    out: dict[str, Any] = {"mime_type": mime_type, "size": size}
    if name:
        out["name"] = name
        dot = name.rfind(".")
        if 0 < dot < len(name) - 1:
            out["extension"] = name[dot + 1:].lower()
    return out


def _header_fields(headers: EmailMessage, email: dict[str, Any], notes: list[str]) -> None:
    for header, key in _ADDRESS_HEADERS:
        try:
            value = headers[header]
            addresses = [a.addr_spec for a in value.addresses] if value is not None else []
        except (AttributeError, ValueError, IndexError, TypeError, LookupError):
            notes.append(f"Unreadable {header} header")
            continue
        addresses = [_clean(a) for a in addresses if a and a != "<>"]
        if addresses:
            email[key] = {"address": addresses}
    for header, key in (("subject", "subject"), ("x-mailer", "x_mailer")):
        text = _header_text(headers, header, notes)
        if text:
            email[key] = text
    message_id = _header_text(headers, "message-id", notes)
    if message_id:
        email["message_id"] = message_id.strip().removeprefix("<").removesuffix(">")
    if headers.get("content-type") is not None:
        email["content_type"] = headers.get_content_type()
    try:
        date = headers["date"]
        when = date.datetime if date is not None else None
    except (AttributeError, ValueError, IndexError, TypeError, OverflowError):
        when = None
    if when is not None:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        email["origination_timestamp"] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _header_text(headers: EmailMessage, name: str, notes: list[str]) -> str:
    try:
        value = headers[name]
    except (ValueError, IndexError, TypeError, LookupError):
        notes.append(f"Unreadable {name} header")
        return ""
    return _clean(str(value).strip()) if value is not None else ""


def _clean(text: str) -> str:
    """Raw 8-bit header bytes (SMTPUTF8) reach us as surrogate escapes: read them as UTF-8."""
    if text.isascii() or not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _direction(envelope: Envelope, local_domains: frozenset[str]) -> str | None:
    """inbound, outbound or internal, from the envelope's domains and the configured local ones."""
    if not local_domains or envelope.mail_from is None or not envelope.recipients:
        return None
    sender_local = _domain(envelope.mail_from) in local_domains
    recipients_local = [_domain(r) in local_domains for r in envelope.recipients]
    if sender_local:
        return "internal" if all(recipients_local) else "outbound"
    return "inbound" if any(recipients_local) else None
