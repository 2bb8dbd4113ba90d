"""SMTP sessions: commands paired with replies in order (PIPELINING), messages read as they stream.

- Replies answer commands first in, first out (RFC 2920).  The first reply
  before any command is the greeting, its own event; a reply no command
  waits for (a 421 before the server hangs up) is published as unmatched.
- DATA, AUTH and STARTTLS decide what the client's next bytes are: the
  client parser holds them until this session pairs the answer (354:
  content; 334: a SASL response; 220 to STARTTLS: TLS).
- The envelope (MAIL FROM, accepted and refused RCPT TO) belongs to the
  message sent after it; RSET, EHLO/HELO and the end of a message clear it.
- A message (DATA content, or the BDAT chunks up to LAST) streams through a
  `MessageReader`; its event is published with the reply that accepted or
  refused it.  Past `max_message_bytes` it is headers only, with a note.
- After STARTTLS is accepted nothing more is read as SMTP: the connection,
  with the bytes each direction already holds past the STARTTLS exchange, is
  handed over to the `tls` protocol (`SessionContext.hand_over`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.config.typed import opt, positive
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.smtp.fields import (
    FIELDS,
    NOTE_MESSAGE_INCOMPLETE,
    NOTE_MESSAGE_LOSS,
    NOTE_NO_END_OF_DATA,
    NOTE_STARTTLS,
    Envelope,
    Exchange,
    MessageState,
    Settings,
    command_transaction,
    message_transaction,
    path_of,
    reply_transaction,
)
from agent.protocols.smtp.mime import MessageReader
from agent.protocols.smtp.parser import (
    ClientMessage,
    ClientMode,
    ClientParser,
    Command,
    Content,
    ContentEnd,
    Reply,
    SaslResponse,
    ServerParser,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_PENDING = 1024  # commands waiting for replies (a pipelined group is far smaller)

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "gaps", "messages",
            "messages_over_limit", "starttls", "pending_overflow")


@dataclass(frozen=True)
class SmtpConfig(ProtocolConfig):
    max_message_bytes: int = opt(DEFAULT_MAX_MESSAGE_BYTES, kind="size", check=positive,
                                 doc="message content read for email.* attachments; past it, headers only")
    redact_authorization: bool = opt(True, doc="AUTH credentials become * (user.name only when false)")
    local_domains: tuple[str, ...] = opt((), doc="your mail domains: email.direction inbound/outbound/internal")


class _MessageReply:
    """Queued after a message's end-of-data line: the next reply is the message's."""

    __slots__ = ()


_MESSAGE_REPLY = _MessageReply()


class SmtpSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, SmtpConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        self.settings = Settings(config.send_request, config.send_response, config.redact_authorization,
                                 frozenset(d.lower().lstrip("@") for d in config.local_domains))
        self.client = ClientParser()
        self.server = ServerParser()
        self.queue: deque[Exchange | _MessageReply] = deque()
        self.greeted = False
        self.envelope = Envelope()
        self.message: MessageState | None = None
        self.reader: MessageReader | None = None
        self.bdat_refusal: Reply | None = None  # the first error reply to a chunk of the message
        self.finished: set[Direction] = set()
        self.tls = False

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        if self.tls:
            self.after_tls(direction, data, ts_ns)
        elif direction is Direction.TO_SERVER:
            self._on_client(self.client.feed(data, ts_ns))
        else:
            self._feed_server(data, ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        if self.tls:
            return
        self.counters["gaps"] += 1
        if direction is Direction.TO_SERVER:
            if self.client.gap(nbytes):
                if self.message is not None and NOTE_MESSAGE_LOSS not in self.message.notes:
                    self.message.notes.append(NOTE_MESSAGE_LOSS)
                return
        else:
            self.server.gap()
        self._drop_pending()

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self.finished.add(direction)
        if len(self.finished) == 2:
            self.expire(ts_ns)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        if direction is Direction.TO_SERVER:
            self.client.reset()
        else:
            self.server.reset()
        self._drop_pending()

    def expire(self, ts_ns: int) -> None:
        """Publish what never got its reply: commands (as unmatched) and a message in progress."""
        while self.queue:
            item = self.queue.popleft()
            if isinstance(item, Exchange):
                self.counters["unmatched_requests"] += 1
                self._emit(command_transaction(self.ctx.conn, item, None, self.settings))
        if self.message is not None:
            self.message.notes.append(NOTE_MESSAGE_INCOMPLETE)
            self._finish_message(None)

    def pending(self) -> int:
        return len(self.queue) + (self.message is not None)

    def buffered(self) -> int:
        held = self.client.buffer.buffered + self.server.buffer.buffered
        return held + self.reader.buffered if self.reader is not None else held

    # -- client ------------------------------------------------------------------

    def _on_client(self, messages: list[ClientMessage]) -> None:
        for msg in messages:
            if isinstance(msg, Command):
                self._on_command(msg)
            elif isinstance(msg, Content):
                self._on_content(msg)
            elif isinstance(msg, ContentEnd):
                if self.message is not None:
                    self.message.client_bytes += msg.wire_size
                    self.message.notes.extend(n for n in msg.notes if n not in self.message.notes)
                self._push(_MESSAGE_REPLY)
            elif isinstance(msg, SaslResponse):
                head = self.queue[0] if self.queue else None
                if isinstance(head, Exchange) and head.command.verb == "AUTH":
                    head.sasl.append(msg)

    def _on_command(self, command: Command) -> None:
        if command.verb == "STARTTLS":
            self.server.stepwise = True
        elif command.verb == "BDAT":
            if self.message is None:
                self._start_message(command.ts_ns)
            assert self.message is not None
            self.message.chunks += 1
        self._push(Exchange(command))

    def _on_content(self, content: Content) -> None:
        message, reader = self.message, self.reader
        if message is None or reader is None:
            return
        if not message.client_bytes and not message.chunks:
            message.ts_ns = content.ts_ns  # DATA: the message starts with its first byte
        message.client_bytes += content.wire_size
        reader.feed(content.data)

    def _push(self, item: Exchange | _MessageReply) -> None:
        if len(self.queue) >= MAX_PENDING:
            old = self.queue.popleft()
            self.counters["pending_overflow"] += 1
            if isinstance(old, Exchange):
                self._emit(command_transaction(self.ctx.conn, old, None, self.settings))
        self.queue.append(item)

    def _drain_client(self, ts_ns: int) -> None:
        """The client's held bytes, now that the deciding reply told what they are."""
        self._on_client(self.client.feed(b"", ts_ns))

    # -- server ------------------------------------------------------------------

    def _feed_server(self, data: bytes, ts_ns: int) -> None:
        replies = self.server.feed(data, ts_ns)
        while replies:
            for reply in replies:
                self._on_reply(reply)
            if self.tls or not self.server.buffer.unread:
                return
            replies = self.server.feed(b"", ts_ns)  # stepwise: the replies after a STARTTLS answer

    def _on_reply(self, reply: Reply) -> None:
        if not self.queue:
            self._unasked(reply)
            return
        self.greeted = True
        head = self.queue[0]
        if isinstance(head, _MessageReply):
            self.queue.popleft()
            self._finish_message(reply)
            return
        verb = head.command.verb
        if verb == "AUTH" and reply.code == 334:
            head.intermediate.append(reply)
            self._resume(ClientMode.SASL, reply.ts_ns)
            return
        self.queue.popleft()
        if verb == "STARTTLS":
            self.server.stepwise = "STARTTLS" in (i.command.verb for i in self.queue if isinstance(i, Exchange))
            if reply.code == 220:
                self._emit(command_transaction(self.ctx.conn, head, reply, self.settings, [NOTE_STARTTLS]))
                self._hand_over_to_tls(reply.ts_ns)
                return
        self._track_envelope(head.command, reply)
        self._emit(command_transaction(self.ctx.conn, head, reply, self.settings))
        if verb == "DATA" and reply.code == 354:
            self._start_message(reply.ts_ns)
            self._resume(ClientMode.DATA, reply.ts_ns)
        elif verb in ("DATA", "AUTH", "STARTTLS"):
            self._resume(ClientMode.COMMAND, reply.ts_ns)
        elif verb == "BDAT":
            self._on_bdat_reply(head.command, reply)

    def _unasked(self, reply: Reply) -> None:
        """A reply with no command waiting: the greeting, the end of data the client never sent, or unmatched."""
        if self.message is not None and self.client.mode is ClientMode.DATA:
            # The server saw the end of the data where this parser did not (lost bytes, or a smuggling pattern).
            self.message.notes.append(NOTE_NO_END_OF_DATA)
            self.client.buffer.clear()
            self.client.resume(ClientMode.COMMAND)
            self._finish_message(reply)
            return
        greeting = not self.greeted
        self.greeted = True
        if not greeting:
            self.counters["unmatched_responses"] += 1
        self._emit(reply_transaction(self.ctx.conn, reply, greeting, self.settings))

    def _resume(self, mode: ClientMode, ts_ns: int) -> None:
        self.client.resume(mode)
        self._drain_client(ts_ns)

    def _track_envelope(self, command: Command, reply: Reply) -> None:
        verb = command.verb
        if reply.is_error:
            if verb == "RCPT":
                self.envelope.rejected.append(path_of(command.args, "TO:")[0])
            return
        if verb == "MAIL":
            mail_from, parameters = path_of(command.args, "FROM:")
            self.envelope = Envelope(mail_from, parameters)
        elif verb == "RCPT":
            self.envelope.recipients.append(path_of(command.args, "TO:")[0])
        elif verb in ("RSET", "EHLO", "HELO", "LHLO"):
            self.envelope = Envelope()
            if self.message is not None and self.message.chunks:
                self._drop_message()

    # -- messages ----------------------------------------------------------------

    def _start_message(self, ts_ns: int) -> None:
        self.message = MessageState(ts_ns)
        self.reader = MessageReader(self.config.max_message_bytes)
        self.bdat_refusal = None

    def _on_bdat_reply(self, command: Command, reply: Reply) -> None:
        if self.message is None:
            return
        if reply.is_error and self.bdat_refusal is None:
            self.bdat_refusal = reply
        if command.args.upper().rstrip().endswith(" LAST"):
            self._finish_message(self.bdat_refusal or reply)

    def _finish_message(self, reply: Reply | None) -> None:
        message, reader = self.message, self.reader
        self.message = self.reader = None
        if message is None or reader is None:
            return
        summary = reader.finish()
        self.counters["messages"] += 1
        if summary.over_limit:
            self.counters["messages_over_limit"] += 1
            message.notes.append(f"Message larger than max_message_bytes ({self.config.max_message_bytes}): "
                                 "headers only")
        self._emit(message_transaction(self.ctx.conn, message, summary, self.envelope, reply, self.settings))
        self.envelope = Envelope()

    def _drop_message(self) -> None:
        self.message = self.reader = None

    def _drop_pending(self) -> None:
        """Lost bytes: replies can no longer be paired with the commands waiting for them."""
        for item in self.queue:
            if isinstance(item, Exchange):
                self.counters["unmatched_requests"] += 1
        self.queue.clear()
        self.server.stepwise = False

    # -- STARTTLS ----------------------------------------------------------------

    def _hand_over_to_tls(self, ts_ns: int) -> None:
        """STARTTLS was accepted: from here on the connection is TLS, handed to the `tls` protocol.

        The bytes each direction already sent past the STARTTLS exchange (the
        ClientHello, usually) go with it.  With `tls` not enabled the transport stops
        decoding the connection (counted as `hand_overs_unclaimed`); `after_tls`
        swallows whatever still reaches this session.
        """
        self.tls = True
        self.counters["starttls"] += 1
        self.queue.clear()
        self._drop_message()
        self.ctx.hand_over("tls", ts_ns, to_server=self.client.take_rest(), to_client=self.server.take_rest())

    def after_tls(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        """A segment after STARTTLS that still reaches this session (no transport took the connection over)."""

    # -- events ------------------------------------------------------------------

    def _emit(self, txn: Transaction) -> None:
        self.ctx.emit(txn)


def _session(ctx: SessionContext) -> SmtpSession:
    return SmtpSession(ctx)


SPEC = ProtocolSpec(
    name="smtp",
    config_class=SmtpConfig,
    tcp=_session,
    description="SMTP/ESMTP: commands and replies (PIPELINING, BDAT, AUTH redacted, STARTTLS), messages as email.*",
    counters=COUNTERS,
)

__all__ = ["FIELDS", "SPEC", "SmtpConfig", "SmtpSession"]
